"""Masked LM (BERT, Devlin et al. 2019, Sec. 3.1 and App. A.1): budget, 80/10/10, whole words, round trip, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.objectives import IGNORE, mask_tokens, reconstruct_masked
from lmforge.errors import UserError

from .conftest import TEXT

V, MASK, PAD = 1000, 3, 2
SPECIAL = {0, 1, 2, 3}


def _rows(rng: np.random.Generator, n: int = 2000, length: int = 128) -> np.ndarray:
    """(n, length) ids in [4, V) with about 5% eos (id 0) sprinkled in, as packed windows have."""
    tokens = rng.integers(4, V, size=(n, length))
    tokens[rng.random(tokens.shape) < 0.05] = 0
    return tokens


def test_budget_and_80_10_10_split_over_2000_sequences():
    """BERT: exactly max(1, round(0.15 n)) of the n eligible tokens per row; of them 80% mask, 10% random, 10% kept."""
    rng = np.random.default_rng(0)
    tokens = _rows(rng)
    batch = mask_tokens(tokens, rng, vocab_size=V, mask_id=MASK, special_ids=SPECIAL)
    chosen = batch.labels != IGNORE
    eligible = tokens != 0
    assert not (chosen & ~eligible).any()  # special tokens are never chosen
    assert (chosen.sum(1) == np.maximum(1, np.rint(0.15 * eligible.sum(1)))).all()
    rate = chosen.sum() / eligible.sum()
    assert abs(rate - 0.15) < 0.005
    inp, orig = batch.input_ids[chosen], tokens[chosen]
    masked = (inp == MASK).mean()
    random = ((inp != MASK) & (inp != orig)).mean()
    kept = (inp == orig).mean()
    assert abs(masked - 0.8) < 0.01 and abs(random - 0.1) < 0.01 and abs(kept - 0.1) < 0.01
    assert not np.isin(inp[(inp != MASK) & (inp != orig)], list(SPECIAL)).any()  # random ids are never special
    assert (batch.input_ids[~chosen] == tokens[~chosen]).all()
    assert (batch.labels[chosen] == orig).all()
    assert batch.decoder_input_ids is None and batch.attention_mask.all()
    assert batch.input_ids.dtype == batch.labels.dtype == np.int64 and batch.input_ids.shape == tokens.shape


def test_rates_are_configurable():
    rng = np.random.default_rng(1)
    tokens = _rows(rng, 200)
    batch = mask_tokens(
        tokens, rng, vocab_size=V, mask_id=MASK, special_ids=SPECIAL, rate=0.4, mask_frac=1.0, random_frac=0.0
    )
    chosen = batch.labels != IGNORE
    assert abs(chosen.sum() / (tokens != 0).sum() - 0.4) < 0.005
    assert (batch.input_ids[chosen] == MASK).all()
    batch = mask_tokens(tokens, rng, vocab_size=V, mask_id=MASK, special_ids=SPECIAL, mask_frac=0.0, random_frac=0.0)
    assert (batch.input_ids == tokens).all() and (batch.labels != IGNORE).any()  # chosen but all kept


def test_round_trip_deterministic_and_ragged_rows_padded():
    rng = np.random.default_rng(2)
    rows = [rng.integers(4, V, size=n) for n in (5, 40, 2, 17)]
    a = mask_tokens(rows, np.random.default_rng(7), vocab_size=V, mask_id=MASK, special_ids=SPECIAL, pad_id=PAD)
    b = mask_tokens(rows, np.random.default_rng(7), vocab_size=V, mask_id=MASK, special_ids=SPECIAL, pad_id=PAD)
    c = mask_tokens(rows, np.random.default_rng(8), vocab_size=V, mask_id=MASK, special_ids=SPECIAL, pad_id=PAD)
    assert (a.input_ids == b.input_ids).all() and (a.labels == b.labels).all()
    assert (a.labels != c.labels).any()
    assert a.input_ids.shape == (4, 40) and (a.attention_mask.sum(1) == [5, 40, 2, 17]).all()
    assert (a.input_ids[~a.attention_mask] == PAD).all() and (a.labels[~a.attention_mask] == IGNORE).all()
    assert ((a.labels != IGNORE).sum(1) == [1, 6, 1, 3]).all()  # max(1, round(0.15 n)): 0.75, 6, 0.3, 2.55
    for got, want in zip(reconstruct_masked(a), rows, strict=True):
        assert (got == want).all()


def _word_rows(tok, rng: np.random.Generator, n: int, n_words: int):
    """Rows built word by word (" word" encoded alone) with an eos now and then, and each token's word index.

    Byte-level pre-tokenization never merges across " word" pieces, so the word of every
    token is known from the construction, independently of ``word_starts``.
    """
    words = sorted({w for line in TEXT for w in line.split()})
    pieces = {w: tok.encode(" " + w) for w in words}
    rows, owners = [], []
    for _ in range(n):
        ids, owner = [], []
        for k, w in enumerate(rng.choice(words, size=n_words)):
            piece = [tok.eos_id] if rng.random() < 0.03 else pieces[w]
            ids += piece
            owner += [k] * len(piece)
        rows.append(np.array(ids))
        owners.append(np.array(owner))
    return rows, owners


def _split_words(labels: np.ndarray, owner: np.ndarray) -> int:
    """How many words of a row have some but not all of their tokens chosen."""
    chosen = labels[: owner.size] != IGNORE
    per_word = np.bincount(owner, weights=chosen)
    return int(((per_word > 0) & (per_word < np.bincount(owner))).sum())


def test_whole_word_masking_never_splits_a_word(tok):
    rng = np.random.default_rng(3)
    rows, owners = _word_rows(tok, rng, 600, 40)
    special = {tok.eos_id, tok.bos_id, tok.pad_id, tok.mask_id, *tok.sentinel_ids}
    assert np.mean([np.bincount(o).max() for o in owners]) > 3  # many words are several tokens long
    kwargs = dict(vocab_size=tok.vocab_size, mask_id=tok.mask_id, special_ids=special, pad_id=tok.pad_id)
    whole = mask_tokens(rows, rng, word_starts=tok.word_starts(), **kwargs)
    assert sum(_split_words(lab, own) for lab, own in zip(whole.labels, owners, strict=True)) == 0
    eligible = sum(int((~np.isin(r, list(special))).sum()) for r in rows)
    rate = (whole.labels != IGNORE).sum() / eligible
    assert 0.14 < rate <= 0.1505  # the budget, a little under it when only long words were left
    plain = mask_tokens(rows, rng, **kwargs)  # the control: token-level masking does split words
    assert sum(_split_words(lab, own) for lab, own in zip(plain.labels, owners, strict=True)) > 100
    for got, want in zip(reconstruct_masked(whole), rows, strict=True):
        assert (got == want).all()


def test_whole_word_masking_keeps_special_tokens_apart():
    """A continuation token right after a special token starts its own word; specials are never chosen."""
    starts = np.zeros(V, dtype=bool)  # every ordinary token is a continuation: one word per run between specials
    tokens = np.array([[10, 11, 0, 12, 13, 14, 0, 15, 16, 17, 18, 19]])
    seen = set()
    for seed in range(50):
        batch = mask_tokens(
            tokens,
            np.random.default_rng(seed),
            vocab_size=V,
            mask_id=MASK,
            special_ids=SPECIAL,
            rate=0.2,
            word_starts=starts,
        )
        seen.add(tuple(np.flatnonzero(batch.labels[0] != IGNORE)))
    assert seen == {(0, 1)}  # budget round(0.2 * 10) = 2: only the two-token word fits


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mask_id=None),
        dict(rate=0.0),
        dict(rate=1.0),
        dict(rate=1.5),
        dict(rate=-0.1),
        dict(mask_frac=1.2),
        dict(mask_frac=0.8, random_frac=0.3),
        dict(vocab_size=50),
        dict(mask_id=V),
        dict(word_starts=np.ones(10, dtype=bool)),
    ],
)
def test_bad_settings_are_refused(kwargs):
    base = dict(vocab_size=V, mask_id=MASK, special_ids=SPECIAL)
    with pytest.raises(UserError):
        mask_tokens(np.arange(4, 104).reshape(2, 50), np.random.default_rng(0), **{**base, **kwargs})


@pytest.mark.parametrize(
    "tokens",
    [np.array([[5]]), np.zeros((2, 0), dtype=np.int64), np.array([[4.0, 5.0]]), np.array([[-1, 5]]), np.arange(8), []],
)
def test_bad_tokens_are_refused(tokens):
    with pytest.raises(UserError):
        mask_tokens(tokens, np.random.default_rng(0), vocab_size=V, mask_id=MASK, special_ids=SPECIAL)
