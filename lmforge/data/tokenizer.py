"""Byte-level BPE tokenizer on Hugging Face ``tokenizers``: train, load, save, measure.

Byte-level BPE as in GPT-2 (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", Sec. 2.2): every byte is a base symbol, so any text round-trips and no
token is unknown; merges are learned with the Rust ``tokenizers`` trainer (multi-threaded).
Special tokens (ids assigned by the trainer; always look them up, never assume them):
``<|endoftext|>`` (eos, and bos when there is no separate bos), ``<|bos|>``, ``<|pad|>``,
``<|mask|>`` and sentinels ``<|sentinel_0|>`` ... ``<|sentinel_{n-1}|>``.

Text that happens to contain a special token's spelling (a document quoting
``<|endoftext|>``) is encoded as ordinary bytes, never as the special id: corpora are data,
not control sequences. Use ``eos_id`` & co. to insert special tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.data.pieces import MAX_PIECE_CHARS, split_long
from lmforge.errors import UserError, check_whole
from lmforge.fileio import write_atomic

EOS = "<|endoftext|>"
BOS = "<|bos|>"
PAD = "<|pad|>"
MASK = "<|mask|>"
N_BYTES = 256
PARALLEL_PIECE_CHARS = 1 << 16  # byte-level texts longer than this are encoded in pieces, on all cores

# Names other tokenizers give the same roles, tried in order after ours (GPT-2 has only
# <|endoftext|>; Llama 2 </s> <s>; Llama 3 <|end_of_text|> <|begin_of_text|>; BERT [SEP]...).
_EOS_NAMES = (EOS, "<|end_of_text|>", "</s>", "<eos>", "[SEP]")
_BOS_NAMES = (BOS, "<|begin_of_text|>", "<s>", "<bos>", "[CLS]")
_PAD_NAMES = (PAD, "<pad>", "[PAD]", "<|padding|>")
_MASK_NAMES = (MASK, "<mask>", "[MASK]")
_SENTINEL_FORMATS = ("<|sentinel_{}|>", "<extra_id_{}>")  # ours, then T5's


def sentinel_token(i: int) -> str:
    """The text of sentinel ``i`` (span-corruption objectives, Raffel et al. 2020, T5 Sec. 3.1.4)."""
    return f"<|sentinel_{i}|>"


def special_tokens(n_sentinels: int = 100) -> list[str]:
    """The special tokens a trained tokenizer gets, in the order the trainer numbers them."""
    return [EOS, BOS, PAD, MASK] + [sentinel_token(i) for i in range(n_sentinels)]


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable stand-in character of each byte back to the byte.

    Radford et al. 2019, GPT-2 ``encoder.py`` ``bytes_to_unicode``: printable Latin-1
    bytes stand for themselves; the other 68 bytes map to chr(256 + n) in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {chr(b): b for b in printable}
    n = 0
    for b in range(N_BYTES):
        if b not in printable:
            chars[chr(N_BYTES + n)] = b
            n += 1
    return chars


def _first_id(inner: HFTokenizer, names: Iterable[str]) -> int | None:
    for name in names:
        tid = inner.token_to_id(name)
        if tid is not None:
            return tid
    return None


def _uses_byte_level(config: dict) -> bool:
    """True when the tokenizer.json pre-tokenizes or decodes with ByteLevel (GPT-2 style)."""

    def has(node: object) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has(child) for key in ("pretokenizers", "decoders") for child in node.get(key) or [])

    return has(config.get("pre_tokenizer")) or has(config.get("decoder"))


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with lmforge's special tokens looked up by name.

    ``eos_id`` is required; ``bos_id`` falls back to ``eos_id``; ``pad_id`` and
    ``mask_id`` are None when the tokenizer has none; ``sentinel_ids`` may be empty.
    ``vocab_size`` is one more than the largest id (the embedding rows a model needs).
    """

    def __init__(self, inner: HFTokenizer, *, origin: str = "<memory>"):
        self._inner = inner
        # Special-token spellings inside documents are ordinary text (module docstring).
        inner.encode_special_tokens = True
        self._canonical = inner.to_str()
        self.sha256: str = hashlib.sha256(self._canonical.encode("utf-8")).hexdigest()
        vocab = inner.get_vocab(with_added_tokens=True)
        self.vocab_size: int = max(vocab.values()) + 1 if vocab else 0
        eos = _first_id(inner, _EOS_NAMES)
        if eos is None:
            raise UserError(
                "tokenizer has no end-of-text token",
                origin,
                f"add {EOS} (or </s>) as a special token, or train one with `lmforge tokenizer train`",
            )
        self.eos_id: int = eos
        bos = _first_id(inner, _BOS_NAMES)
        self.bos_id: int = eos if bos is None else bos
        self.pad_id: int | None = _first_id(inner, _PAD_NAMES)
        self.mask_id: int | None = _first_id(inner, _MASK_NAMES)
        self.sentinel_ids: list[int] = []
        for fmt in _SENTINEL_FORMATS:
            while (tid := inner.token_to_id(fmt.format(len(self.sentinel_ids)))) is not None:
                self.sentinel_ids.append(tid)
            if self.sentinel_ids:
                break
        self._token_bytes: list[int] | None = None
        self._byte_level: bool | None = None

    @property
    def inner(self) -> HFTokenizer:
        """The wrapped Hugging Face tokenizer."""
        return self._inner

    @property
    def is_byte_level(self) -> bool:
        """True for GPT-2-style byte-level tokenizers, where ``token_bytes`` is exact."""
        if self._byte_level is None:
            self._byte_level = _uses_byte_level(json.loads(self._canonical))
        return self._byte_level

    def token_to_id(self, token: str) -> int | None:
        return self._inner.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._inner.id_to_token(token_id)

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each token id stands for (0 for special tokens and unused ids).

        Exact for byte-level vocabularies: each character of a token is one byte's
        stand-in (``byte_level_alphabet``), so ``sum(token_bytes()[t] for t in
        encode(text)) == len(text.encode())``. For other vocabularies it is the UTF-8
        length of the token's text with ``Ġ``/``▁`` as one space, ``##`` dropped and
        ``<0xNN>`` byte-fallback tokens as one byte, which is approximate (bits per byte
        computed from it is then approximate too).
        """
        if self._token_bytes is None:
            self._token_bytes = self._compute_token_bytes()
        return list(self._token_bytes)

    def _compute_token_bytes(self) -> list[int]:
        config = json.loads(self._canonical)
        byte_level = self.is_byte_level
        alphabet = byte_level_alphabet()
        added = {t["id"]: t for t in config.get("added_tokens") or []}
        sizes = [0] * self.vocab_size
        for token, tid in self._inner.get_vocab(with_added_tokens=True).items():
            if tid in added:
                sizes[tid] = 0 if added[tid].get("special") else len(token.encode("utf-8"))
            elif byte_level:
                sizes[tid] = sum(1 if ch in alphabet else len(ch.encode("utf-8")) for ch in token)
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                sizes[tid] = 1
            else:
                text = token.removeprefix("##").replace("▁", " ").replace("Ġ", " ")
                sizes[tid] = len(text.encode("utf-8", "surrogatepass"))
        return sizes

    def word_starts(self):  # -> np.ndarray (vocab_size,) bool
        """(vocab_size,) bool: True where a token begins a word (whole-word masking, BERT 2019).

        A word is a whitespace-delimited run of text. Byte-level vocabularies: a token begins
        a word when its first byte is ASCII whitespace (``Ġ`` space, ``Ċ`` newline, ``ĉ`` tab,
        ``č`` CR, vertical tab, form feed); every other token continues the word before it,
        so punctuation stays with its word and a word right after a newline joins the newline
        token (merging two words, never splitting one). WordPiece: every token but the
        ``##`` continuations. SentencePiece-style: tokens starting with ``▁`` or whitespace.
        Added tokens (special ones included) and unused ids are words of their own.
        """
        import numpy as np  # numpy only here: the module stays light

        cached = getattr(self, "_word_starts", None)
        if cached is None:
            config = json.loads(self._canonical)
            added = {t["id"] for t in config.get("added_tokens") or []}
            prefix = (config.get("model") or {}).get("continuing_subword_prefix")
            alphabet = byte_level_alphabet()
            space_bytes = {9, 10, 11, 12, 13, 32}
            spaces = ("<0x09>", "<0x0A>", "<0x0B>", "<0x0C>", "<0x0D>", "<0x20>")  # byte-fallback whitespace
            cached = np.ones(self.vocab_size, dtype=bool)
            for token, tid in self._inner.get_vocab(with_added_tokens=True).items():
                if tid in added or not token:
                    continue
                if self.is_byte_level:
                    cached[tid] = alphabet.get(token[0], -1) in space_bytes
                elif prefix:
                    cached[tid] = not token.startswith(prefix)
                else:
                    cached[tid] = token.startswith("▁") or token[0].isspace() or token in spaces
            cached.flags.writeable = False
            self._word_starts = cached
        return cached.copy()

    def _piece_chars(self) -> int:
        """Longest text encoded in one call: short pieces let a long document use every core, but
        only a byte-level pre-tokenizer guarantees that cutting at whitespace changes no id."""
        return min(PARALLEL_PIECE_CHARS, MAX_PIECE_CHARS) if self.is_byte_level else MAX_PIECE_CHARS

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens added. Long texts go in pieces (``pieces``)."""
        if len(text) > self._piece_chars():
            return self.encode_batch([text])[0]
        return self._inner.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, encoded on all cores by ``tokenizers``; no special tokens added."""
        limit = self._piece_chars()
        if any(len(t) > limit for t in texts):  # split long texts, encode all pieces together, rejoin
            pieces, owner = [], []
            for i, text in enumerate(texts):
                for piece in split_long(text, limit):
                    pieces.append(piece)
                    owner.append(i)
            joined: list[list[int]] = [[] for _ in texts]
            for i, ids in zip(owner, self._encode_pieces(pieces), strict=True):
                joined[i].extend(ids)
            return joined
        return self._encode_pieces(list(texts))

    def _encode_pieces(self, texts: list[str]) -> list[list[int]]:
        fast = getattr(self._inner, "encode_batch_fast", self._inner.encode_batch)  # no offsets: faster
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (special tokens written out unless ``skip_special_tokens``)."""
        return self._inner.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json atomically (temporary name in the same folder, then rename)."""
        path = Path(path)
        if path.is_dir():
            raise UserError("the tokenizer path is a directory", str(path), "name a file, e.g. tokenizer.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, self._inner.to_str(pretty=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load any tokenizer.json (a folder holding one works too), GPT-2's included."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            fix = "pass a tokenizer.json or train one with `lmforge tokenizer train`"
            raise UserError("no tokenizer file", str(path), fix)
        try:
            inner = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust parser's message, first line only
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError("not a valid tokenizer.json", str(path), f"check the file ({reason})") from None
        return cls(inner, origin=str(path))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id}, sha256={self.sha256[:12]})"


def _batches(texts: Iterable[str], counter: list[int], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise UserError("tokenizer training text must be strings", type(text).__name__, "pass an iterable of str")
        counter[0] += 1
        batch.extend(split_long(text, MAX_PIECE_CHARS))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def min_vocab_size(n_sentinels: int = 100) -> int:
    """The smallest vocabulary a byte-level BPE with our special tokens can have."""
    return N_BYTES + len(special_tokens(n_sentinels))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    n_sentinels: int = 100,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style, module docstring) on ``texts``.

    The vocabulary is the special tokens, then the 256 bytes, then merges until
    ``vocab_size`` or until no pair occurs ``min_frequency`` times (a small corpus can
    give fewer tokens than asked: check ``vocab_size`` of the result).
    """
    check_whole("n_sentinels", n_sentinels, upper=100_000, allow_zero=True)
    minimum = min_vocab_size(n_sentinels)
    check_whole("vocab_size", vocab_size, upper=2**31 - 1)
    if vocab_size < minimum:
        raise UserError(
            "vocab size too small",
            vocab_size,
            f"use at least {minimum} (256 bytes + {minimum - N_BYTES} special tokens)",
        )
    check_whole("min_frequency", min_frequency, allow_zero=True)
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens(n_sentinels),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    counter = [0]
    inner.train_from_iterator(_batches(texts, counter), trainer=trainer)
    if counter[0] == 0:
        raise UserError("no text to train the tokenizer on", None, "pass at least one non-empty source")
    return Tokenizer(inner)


def bytes_per_token(tokenizer: Tokenizer, texts: Iterable[str], *, batch_size: int = 256) -> float:
    """UTF-8 bytes per token over ``texts`` (higher is a more compressive tokenizer)."""
    n_bytes = n_tokens = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal n_bytes, n_tokens
        n_tokens += sum(len(ids) for ids in tokenizer.encode_batch(batch))
        n_bytes += sum(len(t.encode("utf-8")) for t in batch)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if n_tokens == 0:
        raise UserError("no text to measure bytes per token on", None, "pass at least one non-empty text")
    return n_bytes / n_tokens
