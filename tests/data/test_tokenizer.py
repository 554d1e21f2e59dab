"""Byte-level BPE: training, special tokens, round trips, exact token bytes, loading, saving."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

import lmforge.data.tokenizer as tokmod
from lmforge.data.tokenizer import (
    BOS,
    EOS,
    MASK,
    PAD,
    Tokenizer,
    byte_level_alphabet,
    bytes_per_token,
    min_vocab_size,
    sentinel_token,
    train_tokenizer,
)
from lmforge.errors import UserError

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Byte-level BPE starts from the 256 bytes and merges the most frequent pairs.",
    "Naïve café déjà vu — über straße; 日本語のテキスト; emoji 😀🎉 and flags 🇫🇷.",
    "def f(x):\n    return x * 2  # code\n\n\tTabs\tand  double  spaces\r\n",
] * 20

MIXED = (
    "Hello, wörld! 😀👩‍👩‍👧 日本語 ñ Ω ≈ ∑ — tabs\t\tand\n\nnewlines  \x00 NUL, \x7f DEL, "
    "a literal <|endoftext|> and <|pad|> inside a document, \u200b zero-width, trailing spaces   "
)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(CORPUS, 400, n_sentinels=5)


def gpt2_like(tmp_path) -> str:
    """A tiny tokenizer.json shaped like GPT-2's: byte-level BPE, only <|endoftext|> special."""
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    inner.train_from_iterator(CORPUS, trainer=trainer)
    inner.add_special_tokens([EOS])  # GPT-2's eos is the last id (50256), after the merges
    path = tmp_path / "gpt2" / "tokenizer.json"
    path.parent.mkdir()
    inner.save(str(path))
    return str(path)


def test_special_tokens_are_looked_up_and_distinct(tok):
    ids = [tok.eos_id, tok.bos_id, tok.pad_id, tok.mask_id, *tok.sentinel_ids]
    assert len(set(ids)) == len(ids) == 4 + 5
    assert tok.id_to_token(tok.eos_id) == EOS and tok.id_to_token(tok.bos_id) == BOS
    assert tok.id_to_token(tok.pad_id) == PAD and tok.id_to_token(tok.mask_id) == MASK
    assert [tok.id_to_token(i) for i in tok.sentinel_ids] == [sentinel_token(i) for i in range(5)]
    assert 256 + 9 < tok.vocab_size <= 400
    assert tok.is_byte_level


def test_round_trip_any_text(tok):
    for text in [MIXED, "", " ", "\n\n\n", "\ufffd", "".join(chr(c) for c in range(1, 600)), "x" * 5000]:
        assert tok.decode(tok.encode(text)) == text


def test_special_token_spelling_in_text_is_plain_bytes(tok):
    ids = tok.encode("before <|endoftext|> after <|mask|>")
    assert tok.eos_id not in ids and tok.mask_id not in ids
    assert tok.decode(ids) == "before <|endoftext|> after <|mask|>"


def test_token_bytes_exact_for_byte_level(tok):
    sizes = tok.token_bytes()
    assert len(sizes) == tok.vocab_size
    assert sizes[tok.eos_id] == sizes[tok.pad_id] == sizes[tok.sentinel_ids[0]] == 0
    for text in [MIXED, CORPUS[2], "🇫🇷" * 7, "\x00\x01\x02 ÿ þ"]:
        ids = tok.encode(text)
        assert sum(sizes[t] for t in ids) == len(text.encode("utf-8"))


def test_byte_level_alphabet_is_a_bijection_on_bytes():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ") and alphabet["A"] == ord("A")
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())


def test_vocab_size_too_small_names_the_minimum():
    minimum = min_vocab_size(5)
    assert minimum == 256 + 4 + 5
    with pytest.raises(UserError, match=f"at least {minimum}"):
        train_tokenizer(CORPUS, minimum - 1, n_sentinels=5)
    with pytest.raises(UserError, match="at least 360"):
        train_tokenizer(CORPUS, 300)
    exact = train_tokenizer(CORPUS, minimum, n_sentinels=5)  # bytes and specials only, no merges
    assert exact.vocab_size == minimum
    assert len(exact.encode("hello")) == 5
    for bad in [0, -5, 1.5, True]:
        with pytest.raises(UserError):
            train_tokenizer(CORPUS, bad)


def test_no_text_is_a_user_error():
    with pytest.raises(UserError, match="no text"):
        train_tokenizer([], 400, n_sentinels=5)
    with pytest.raises(UserError, match="strings"):
        train_tokenizer([b"bytes"], 400, n_sentinels=5)


def test_training_is_deterministic(tok):
    again = train_tokenizer(iter(CORPUS), 400, n_sentinels=5)
    assert again.sha256 == tok.sha256
    assert again.encode(MIXED) == tok.encode(MIXED)


def test_save_is_atomic_and_load_round_trips(tok, tmp_path):
    path = tmp_path / "run" / "tokenizer.json"
    tok.save(path)
    tok.save(path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temp files left
    loaded = Tokenizer.load(path)
    assert loaded.sha256 == tok.sha256
    assert Tokenizer.load(path.parent).sha256 == tok.sha256  # a run folder works too
    specials = ("eos_id", "bos_id", "pad_id", "mask_id", "sentinel_ids", "vocab_size")
    assert [getattr(loaded, s) for s in specials] == [getattr(tok, s) for s in specials]
    assert loaded.encode(MIXED) == tok.encode(MIXED)
    assert loaded.token_bytes() == tok.token_bytes()


def test_failed_save_leaves_old_file(tok, tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    path.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tokmod.os, "fsync", boom)
    with pytest.raises(OSError):
        tok.save(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_load_bad_files(tmp_path):
    with pytest.raises(UserError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        Tokenizer.load(bad)
    no_eos = HFTokenizer(models.BPE())
    no_eos.pre_tokenizer = pre_tokenizers.ByteLevel()
    no_eos.save(str(tmp_path / "noeos.json"))
    with pytest.raises(UserError, match="no end-of-text token"):
        Tokenizer.load(tmp_path / "noeos.json")


def test_loads_a_gpt2_like_tokenizer(tmp_path):
    path = gpt2_like(tmp_path)
    tok = Tokenizer.load(path)
    eos = tok.token_to_id(EOS)
    assert tok.eos_id == tok.bos_id == eos == tok.vocab_size - 1
    assert tok.pad_id is None and tok.mask_id is None and tok.sentinel_ids == []
    assert tok.is_byte_level
    sizes = tok.token_bytes()
    ids = tok.encode(MIXED)
    assert sum(sizes[t] for t in ids) == len(MIXED.encode("utf-8"))
    assert tok.decode(ids) == MIXED
    assert json.loads(open(path).read())["added_tokens"][0]["content"] == EOS


def test_token_bytes_approximate_for_wordpiece(tmp_path):
    """A non-byte-level vocabulary: ## and ▁ markers dropped or counted as one space."""
    vocab = {"[SEP]": 0, "[CLS]": 1, "[PAD]": 2, "[MASK]": 3, "[UNK]": 4, "hello": 5, "##ing": 6, "é": 7}
    inner = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    inner.add_special_tokens(["[SEP]", "[CLS]", "[PAD]", "[MASK]", "[UNK]"])
    tok = Tokenizer(inner)
    assert (tok.eos_id, tok.bos_id, tok.pad_id, tok.mask_id) == (0, 1, 2, 3)
    assert not tok.is_byte_level
    assert tok.token_bytes()[5:8] == [5, 3, 2]


def test_long_text_is_encoded_in_pieces_exactly(tok, monkeypatch):
    text = ("Words,  spaces\t\ttabs\n\nnew paragraphs — ünïcode 😀 and numbers 12345. " * 300) + "x" * 3000
    whole = tok.inner.encode(text, add_special_tokens=False).ids
    for name in ("MAX_PIECE_CHARS", "PARALLEL_PIECE_CHARS"):
        monkeypatch.setattr(tokmod, name, 997)
        assert tok._piece_chars() == 997
        assert tok.encode(text) == whole  # cut at whitespace: the same ids as one piece
        assert tok.encode_batch(["short", text, ""]) == [tok.encode("short"), whole, []]


def test_encode_batch_matches_encode(tok):
    texts = CORPUS[:4] + [MIXED, ""]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_bytes_per_token(tok):
    texts = CORPUS[:4]
    expected = sum(len(t.encode()) for t in texts) / sum(len(tok.encode(t)) for t in texts)
    assert bytes_per_token(tok, iter(texts), batch_size=3) == pytest.approx(expected)
    assert bytes_per_token(tok, texts) > 1.5  # merges compress the training text
    with pytest.raises(UserError, match="no text"):
        bytes_per_token(tok, [""])


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_50mb_line_tokenizes_with_exact_bytes(tok, tmp_path):
    """End to end: one 50 MB line read in pieces, encoded on all cores, token bytes summing to the text's.

    About 7 s on 2 cores (50 MB in pieces of 64 Ki characters).
    """
    from lmforge.data.sources import iter_documents, parse_source

    line = " ".join(["alpha", "beta", "naïve", "😀", "the", "of", "1234"] * 10_000) + " "
    path = tmp_path / "line.txt"
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < 50_000_000:
            f.write(line)
    sizes = tok.token_bytes()
    n_bytes = n_docs = 0
    for doc in iter_documents(parse_source(str(path))):
        n_docs += 1
        n_bytes += sum(sizes[t] for t in tok.encode(doc))
    assert n_bytes + (n_docs - 1) == path.stat().st_size - 1  # the single spaces at the cuts and the end
