"""An lmforge tokenizer as llama.cpp's ``gpt2`` (byte-level BPE) vocabulary.

llama.cpp tokenizes a ``tokenizer.ggml.model = "gpt2"`` vocabulary the way Hugging Face's
byte-level BPE does: split the text with a pre-tokenizer regex, map every byte to GPT-2's
printable stand-in (`lmforge.data.tokenizer.byte_level_alphabet`), then apply the merges by
rank. Which regex is chosen by ``tokenizer.ggml.pre``: ``"gpt-2"`` selects
``LLAMA_VOCAB_PRE_TYPE_GPT2``, whose splitter (``unicode_regex_split_custom_gpt2`` in
llama.cpp's ``src/unicode.cpp``) implements GPT-2's own regex
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``, the one
``tokenizers``' ``ByteLevel(use_regex=True)`` pre-tokenizer applies (Radford et al. 2019,
GPT-2 ``encoder.py``). Without the key llama.cpp falls back to its "default" splitter,
which also cuts punctuation runs and digits into threes: different ids.

So the export is exact only for a tokenizer.json with a BPE model (no dropout, no byte
fallback, no subword prefix/suffix, merges not ignored), no normalizer and a lone
``ByteLevel`` pre-tokenizer without a prefix space; anything else is refused
(`check_tokenizer`). Token types: special added tokens are ``CONTROL`` (llama.cpp, like
lmforge, reads their spelling in text as plain bytes unless asked to parse specials),
other added tokens ``USER_DEFINED``, ids the vocabulary does not use ``UNUSED`` (named
``[PAD<id>]``, as llama.cpp's converter does), the rest ``NORMAL``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lmforge.data.tokenizer import Tokenizer, byte_level_alphabet
from lmforge.errors import UserError

PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's regex (LLAMA_VOCAB_PRE_TYPE_GPT2)
TOKENIZER_MODEL = "gpt2"  # llama.cpp's byte-level BPE vocabulary type (LLAMA_VOCAB_TYPE_BPE)
_FIX = "llama.cpp's gpt2 tokenizer with the gpt-2 pre-tokenizer expresses byte-level BPE only; export with --to hf"


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]  # id order, vocab_size of them
    types: list[int]  # gguf.TokenType per id
    merges: list[str]  # "left right", by rank
    bos_id: int
    eos_id: int
    pad_id: int | None
    unused: int  # ids padded with [PAD<id>]


def _refuse(what: str, value: object) -> UserError:
    return UserError(f"llama.cpp cannot tokenize exactly like this tokenizer: {what}", value, _FIX)


def _byte_level(node: object) -> bool:
    return (isinstance(node, dict) and node.get("type") == "ByteLevel" and node.get("use_regex", True)
            and not node.get("add_prefix_space", False))


def check_tokenizer(config: dict) -> None:
    """A UserError unless the tokenizer.json ``config`` is byte-level BPE with GPT-2's regex (module docstring)."""
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        raise _refuse("its model is not BPE", model.get("type"))
    for key, ok in (("dropout", None), ("continuing_subword_prefix", None), ("end_of_word_suffix", None)):
        if model.get(key) not in (ok, ""):
            raise _refuse(f"its BPE model sets {key}", model.get(key))
    for key in ("byte_fallback", "ignore_merges"):
        if model.get(key):
            raise _refuse(f"its BPE model sets {key}", True)
    if config.get("normalizer") is not None:
        raise _refuse("it has a normalizer", (config["normalizer"] or {}).get("type"))
    pre = config.get("pre_tokenizer")
    if isinstance(pre, dict) and pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 1:
        pre = pre["pretokenizers"][0]
    if not _byte_level(pre):
        kind = pre.get("type") if isinstance(pre, dict) else pre
        raise _refuse("its pre-tokenizer is not GPT-2's ByteLevel regex without a prefix space", kind)
    for added in config.get("added_tokens") or []:
        flags = [f for f in ("lstrip", "rstrip", "single_word") if added.get(f)]
        if flags and not added.get("special"):
            raise _refuse(f"added token {added.get('content')!r} sets {', '.join(flags)}", added.get("content"))


def gguf_vocab(tokenizer: Tokenizer, vocab_size: int) -> GGUFVocab:
    """The vocabulary of ``tokenizer`` for a model with ``vocab_size`` embedding rows."""
    from gguf import TokenType

    config = json.loads(tokenizer.inner.to_str())
    check_tokenizer(config)
    vocab = tokenizer.inner.get_vocab(with_added_tokens=True)  # token -> id
    missing = [ch for ch in byte_level_alphabet() if ch not in vocab]
    if missing:
        raise _refuse(f"{len(missing)} of the 256 byte tokens are missing", "".join(missing[:8]))
    if max(vocab.values()) >= vocab_size:
        raise _refuse("it has ids beyond the model's vocabulary", f"{max(vocab.values()) + 1} > {vocab_size}")
    added = {t["id"]: t for t in config.get("added_tokens") or []}
    tokens: list[str | None] = [None] * vocab_size
    types = [int(TokenType.UNUSED)] * vocab_size
    for token, tid in vocab.items():
        tokens[tid] = token
        if tid in added:
            types[tid] = int(TokenType.CONTROL if added[tid].get("special") else TokenType.USER_DEFINED)
        else:
            types[tid] = int(TokenType.NORMAL)
    unused = 0
    for tid, token in enumerate(tokens):
        if token is None:
            name = f"[PAD{tid}]"
            if name in vocab:
                raise _refuse("an unused id's placeholder name is a token", name)
            tokens[tid] = name
            unused += 1
    merges = []
    for merge in config["model"].get("merges") or []:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if " " in left or " " in right:
            raise _refuse("a merge holds a space", f"{left} {right}")
        merges.append(f"{left} {right}")
    return GGUFVocab(tokens, types, merges, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, unused)


def add_vocab(writer, vocab: GGUFVocab) -> None:
    """Write ``vocab`` as ``tokenizer.ggml.*`` metadata; no BOS or EOS is added to a prompt
    (lmforge encodes prompts without either)."""
    from gguf import GGUFValueType, Keys

    writer.add_tokenizer_model(TOKENIZER_MODEL)
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    # llama.cpp refuses a gpt2 vocabulary without the merges key, even a byte-only one with
    # no merges; gguf-py skips empty arrays, so an empty one is written explicitly.
    writer.add_key_value(Keys.Tokenizer.MERGES, vocab.merges, GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
