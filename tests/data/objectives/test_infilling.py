"""BART text infilling (Lewis et al. 2020, Sec. 2.2): masked share, Poisson span lengths, one mask per span."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge.data.objectives import (
    IGNORE,
    infilling_alignment,
    infilling_spans,
    reconstruct_infilling,
    text_infilling,
)
from lmforge.errors import UserError

EOS, PAD, START, MASK = 0, 1, 2, 3
KW = dict(mask_id=MASK, eos_id=EOS, pad_id=PAD, decoder_start_id=START)


def test_masked_share_and_poisson_span_lengths_over_2000_sequences():
    """Rows of distinct tokens, so each mask's span is read off the batch unambiguously (``infilling_alignment``).

    Masked share: ceil(0.3 * 512) / 512 = 0.3008. Span lengths, zero-length insertions
    included, are Poisson(3): mean 3, variance 3, P(0) = e^-3 = 0.0498, except that the
    last span of each row is cut to the budget (about 1 span in 50: mean a little under 3).
    """
    rng = np.random.default_rng(0)
    tokens = np.stack([rng.permutation(50_000)[:512] + 100 for _ in range(2000)])
    batch = text_infilling(tokens, rng, **KW)
    spans, masked, adjacent = [], 0, 0
    for inp, mask, row in zip(batch.input_ids, batch.attention_mask, tokens, strict=True):
        real = inp[mask][:-1]
        lengths = [n for _, n in infilling_alignment(real, row, MASK)]
        assert len(lengths) == int((real == MASK).sum())
        spans += lengths
        masked += sum(lengths)
        adjacent += int(((real[1:] == MASK) & (real[:-1] == MASK)).sum())
    spans = np.array(spans)
    assert adjacent == 0  # one mask per span: spans never touch
    assert masked == 2000 * math.ceil(0.3 * 512)
    assert abs(masked / tokens.size - 0.3) < 0.005
    assert abs(spans.mean() - 3.0) < 0.1, spans.mean()
    assert abs(spans.var() - 3.0) < 0.25, spans.var()
    assert abs((spans == 0).mean() - math.exp(-3)) < 0.01
    pmf = np.bincount(spans, minlength=9)[:9] / spans.size
    poisson = np.array([math.exp(-3) * 3**k / math.factorial(k) for k in range(9)])
    assert np.abs(pmf - poisson).max() < 0.015


def test_round_trip_structure_padding_and_determinism():
    rng = np.random.default_rng(1)
    rows = [rng.integers(100, 200, size=n) for n in (2, 3, 10, 77, 40)]  # repeated ids: alignment still round-trips
    batch = text_infilling(rows, np.random.default_rng(5), **KW)
    again = text_infilling(rows, np.random.default_rng(5), **KW)
    assert (batch.input_ids == again.input_ids).all() and (batch.labels == again.labels).all()
    for got, want in zip(reconstruct_infilling(batch, MASK, EOS), rows, strict=True):
        assert (got == want).all()
    for inp, mask, lab, row in zip(batch.input_ids, batch.attention_mask, batch.labels, rows, strict=True):
        assert lab[lab != IGNORE].tolist() == [*row.tolist(), EOS]  # the target is the original + eos
        real = inp[mask]
        assert real[-1] == EOS and (real == MASK).any() and real.size <= row.size + 1
        assert (inp[~mask] == PAD).all()
    assert batch.labels.shape == (5, 78) and batch.input_ids.shape[1] <= 78
    real = batch.labels != IGNORE
    assert (batch.decoder_input_ids[:, 0] == START).all()
    assert (batch.decoder_input_ids[:, 1:][real[:, :-1]] == batch.labels[:, :-1][real[:, :-1]]).all()
    assert (batch.decoder_input_ids[:, 1:][~real[:, :-1]] == PAD).all()


@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.5, 0.9, 0.99])
def test_spans_are_apart_and_fill_the_budget_for_any_length(ratio):
    """For every length and ratio: ceil(L r) tokens in spans that never touch, no more spans than masked tokens."""
    rng = np.random.default_rng(2)
    for length in [2, 3, 4, 5, 7, 10, 33, 128] * 10:
        starts, lengths = infilling_spans(length, rng, ratio)
        budget = min(math.ceil(length * ratio - 1e-9), length)
        assert lengths.sum() == budget and (lengths >= 0).all() and lengths.size <= budget
        assert (starts >= 0).all() and (starts + lengths <= length).all()
        assert (starts[1:] > starts[:-1] + lengths[:-1]).all()  # at least one kept token between spans


def test_alignment_finds_the_spans_and_refuses_a_wrong_pair():
    original = np.array([5, 6, 7, 8, 9])
    assert infilling_alignment(np.array([5, MASK, 8, 9]), original, MASK) == [(1, 2)]
    assert infilling_alignment(np.array([MASK, 5, 6, 7, 8, 9, MASK]), original, MASK) == [(0, 0), (5, 0)]
    assert infilling_alignment(np.array([5, MASK, 6, MASK]), original, MASK) == [(1, 0), (2, 3)]
    with pytest.raises(ValueError):
        infilling_alignment(np.array([5, MASK, 6]), original, MASK)  # 6 cannot end the original
    with pytest.raises(ValueError):
        infilling_alignment(np.array([5, 7, MASK]), original, MASK)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mask_id=None),
        dict(mask_ratio=0.0),
        dict(mask_ratio=1.0),
        dict(mask_ratio=30),
        dict(poisson_lambda=0.0),
        dict(poisson_lambda=-3.0),
        dict(decoder_start_id=None),
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(UserError):
        text_infilling(np.arange(100, 164).reshape(2, 32), np.random.default_rng(0), **{**KW, **kwargs})


@pytest.mark.parametrize("tokens", [np.array([[100]]), np.array([[100, MASK, 101]]), np.ones((2, 3, 4), dtype=int)])
def test_bad_tokens_are_refused(tokens):
    with pytest.raises(UserError):
        text_infilling(tokens, np.random.default_rng(0), **KW)
