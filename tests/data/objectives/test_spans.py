"""T5 span corruption (Raffel et al. 2020, Sec. 3.1.4 and Fig. 2): density, span length, sentinels, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.objectives import (
    IGNORE,
    random_spans_noise_mask,
    reconstruct_span_corruption,
    span_corruption,
    span_corruption_lengths,
    span_counts,
)
from lmforge.data.objectives.spans import _spans_to_sentinels
from lmforge.errors import UserError

EOS, PAD, START = 0, 1, 2
SENTINELS = list(range(10, 110))
KW = dict(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, decoder_start_id=START)


def _distinct_rows(rng: np.random.Generator, lengths) -> list[np.ndarray]:
    return [rng.permutation(50_000)[:n] + 1000 for n in lengths]


def test_noise_density_and_mean_span_length_over_2000_sequences():
    """Measured from the batches themselves: noise tokens / L and noise tokens / sentinels, rows of 100-600 tokens."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(100, 601, size=2000)
    rows = _distinct_rows(rng, lengths)
    batch = span_corruption(rows, rng, **KW)
    n_spans = np.isin(batch.input_ids, SENTINELS).sum(1)  # (B,)
    n_target = (batch.labels != IGNORE).sum(1)
    noise = n_target - n_spans - 1  # target = sentinel + span per span, then eos
    assert (np.isin(batch.labels, SENTINELS).sum(1) == n_spans).all()
    assert (batch.attention_mask.sum(1) == lengths - noise + n_spans + 1).all()
    density, mean_span = noise.sum() / lengths.sum(), noise.sum() / n_spans.sum()
    assert abs(density - 0.15) < 0.01, density
    assert abs(mean_span - 3.0) < 0.1, mean_span
    for row, (s, t) in zip(rows, zip(batch.attention_mask.sum(1), n_target, strict=True), strict=True):
        assert (s, t) == span_corruption_lengths(row.size)


def test_noise_mask_follows_t5():
    """random_spans_noise_mask: round(L d) noise tokens in max(1, round(noise / mean)) runs, clean start, noisy end."""
    rng = np.random.default_rng(1)
    for length in (2, 3, 7, 20, 128, 512, 568):
        for _ in range(20):
            mask = random_spans_noise_mask(length, rng)
            num_noise, num_spans = span_counts(length)
            runs = int((mask & ~np.concatenate([[False], mask[:-1]])).sum())
            assert mask.sum() == num_noise and runs == num_spans
            assert not mask[0] and mask[-1]
    assert span_counts(512) == (77, 26) and span_counts(10) == (2, 1) and span_counts(2) == (1, 1)
    first_noise = [np.argmax(random_spans_noise_mask(100, rng)) for _ in range(300)]
    assert len(set(first_noise)) > 20  # span positions vary


def test_sentinels_follow_figure_2_of_the_t5_paper():
    """Fig. 2: "Thank you <X> me to your party <Y> week." / target "<X> for inviting <Y> last <Z>"."""
    words = "Thank you for inviting me to your party last week .".split()
    row = np.arange(len(words))
    noise = np.isin(np.array(words), ["for", "inviting", "last"])
    x, y, z = 100, 101, 102
    sentinels = np.array([x, y, z])
    assert _spans_to_sentinels(row, noise, sentinels).tolist() == [0, 1, x, 4, 5, 6, 7, y, 9, 10]
    assert _spans_to_sentinels(row, ~noise, sentinels).tolist() == [x, 2, 3, y, 8, z]


def test_round_trip_structure_padding_and_determinism():
    rng = np.random.default_rng(2)
    rows = _distinct_rows(rng, [2, 9, 64, 300, 31])
    batch = span_corruption(rows, np.random.default_rng(5), **KW)
    again = span_corruption(rows, np.random.default_rng(5), **KW)
    assert (batch.input_ids == again.input_ids).all() and (batch.labels == again.labels).all()
    for got, want in zip(reconstruct_span_corruption(batch, SENTINELS, EOS), rows, strict=True):
        assert (got == want).all()
    for inp, mask, lab in zip(batch.input_ids, batch.attention_mask, batch.labels, strict=True):
        real, target = inp[mask], lab[lab != IGNORE]
        k = int(np.isin(real, SENTINELS).sum())
        assert real[-1] == EOS and target[-1] == EOS
        assert real[np.isin(real, SENTINELS)].tolist() == SENTINELS[:k]  # sentinel i for span i, in order
        assert target[np.isin(target, SENTINELS)].tolist() == SENTINELS[:k] and target[0] == SENTINELS[0]
        assert (inp[~mask] == PAD).all()
    assert (batch.decoder_input_ids[:, 0] == START).all()
    real = batch.labels != IGNORE
    assert (batch.decoder_input_ids[:, 1:][real[:, :-1]] == batch.labels[:, :-1][real[:, :-1]]).all()
    assert (batch.decoder_input_ids[:, 1:][~real[:, :-1]] == PAD).all()
    assert (batch.labels[~real] == IGNORE).all() and batch.labels.dtype == np.int64
    assert batch.input_ids.shape[1] == max(span_corruption_lengths(r.size)[0] for r in rows)
    other = span_corruption(rows, np.random.default_rng(6), **KW)
    assert other.input_ids.shape != batch.input_ids.shape or (other.input_ids != batch.input_ids).any()


def test_a_2d_batch_has_equal_row_lengths():
    rng = np.random.default_rng(3)
    tokens = rng.integers(1000, 2000, size=(8, 128))
    batch = span_corruption(tokens, rng, **KW)
    assert batch.attention_mask.all() and (batch.labels != IGNORE).all()
    assert (batch.input_ids.shape[1], batch.labels.shape[1]) == span_corruption_lengths(128)
    for got, want in zip(reconstruct_span_corruption(batch, SENTINELS, EOS), tokens, strict=True):
        assert (got == want).all()


def test_reconstruction_rejects_a_mismatched_target():
    rng = np.random.default_rng(4)
    batch = span_corruption(_distinct_rows(rng, [50]), rng, **KW)
    batch.labels[0, 0] = SENTINELS[1]  # the first sentinel out of order
    with pytest.raises(ValueError):
        reconstruct_span_corruption(batch, SENTINELS, EOS)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sentinel_ids=SENTINELS[:3]),  # 512 tokens need 26 spans
        dict(sentinel_ids=[]),
        dict(noise_density=0.0),
        dict(noise_density=1.0),
        dict(noise_density=15),
        dict(mean_span_length=0.5),
        dict(mean_span_length=float("inf")),
        dict(eos_id=None),
        dict(pad_id=-1),
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(UserError):
        span_corruption(np.arange(1000, 2024).reshape(2, 512), np.random.default_rng(0), **{**KW, **kwargs})


@pytest.mark.parametrize("tokens", [np.array([[1000]]), np.array([[1000, 10, 1001]]), [np.arange(1000, 1010), [5]]])
def test_bad_tokens_are_refused(tokens):
    """Rows shorter than 2 tokens, and rows that already hold a sentinel (the target would be ambiguous)."""
    with pytest.raises(UserError):
        span_corruption(tokens, np.random.default_rng(0), **KW)
