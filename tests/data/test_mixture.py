"""Weighted mixtures: shares, determinism, resume, world-size invariance, epochs, bad weights."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lmforge.data.mixture import Mixture, floor_sum, permute
from lmforge.errors import UserError


class Store:
    """A TokenStore stand-in whose token at position i of source s is s * 10**6 + i (so windows are traceable)."""

    def __init__(self, sizes: dict[str, int]):
        self.sources = list(sizes)
        self._arrays = {n: (k * 10**6 + np.arange(size)).astype(np.uint32) for k, (n, size) in enumerate(sizes.items())}

    def tokens(self, source: str, split: str = "train") -> np.ndarray:
        return self._arrays[source]


SIZES = {"a": 20_000, "b": 9_000, "c": 3_001}


def _draws(mix: Mixture, steps: range, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [mix.batch(t, n) for t in steps]


def test_floor_sum_matches_brute_force():
    rng = random.Random(0)
    for _ in range(500):
        n, m, a, b = rng.randint(0, 60), rng.randint(1, 50), rng.randint(0, 200), rng.randint(0, 200)
        assert floor_sum(n, m, a, b) == sum((a * i + b) // m for i in range(n))
    assert floor_sum(10**12, 2**64, 3**40, 2**63) == floor_sum(10**12, 2**64, 3**40, 2**63)  # big ints, no error


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permute_is_a_bijection(n):
    out = permute(np.arange(n), n, key=12345)
    assert sorted(out.tolist()) == list(range(n))
    if n >= 64:
        assert not np.array_equal(out, np.arange(n)) and not np.array_equal(out, permute(np.arange(n), n, key=1))


@pytest.mark.parametrize("weights", [{"a": 0.51, "b": 0.49}, {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 3, "b": 1}])
def test_token_shares_hold_the_weights(weights):
    """Over 1,500 steps of 16 sequences the share of each source is within 1% of its weight.

    Stronger: at every step the cumulative count stays within 5 sequences of w * sequences.
    """
    mix = Mixture(Store(SIZES), weights, seq_len=32, seed=7)
    total = sum(weights.values())
    counts = np.zeros(len(mix.sources), dtype=np.int64)
    for step in range(1500):
        _, src = mix.batch(step, 16)
        counts += np.bincount(src, minlength=len(mix.sources))
        drawn = (step + 1) * 16
        for i, name in enumerate(mix.sources):
            assert abs(counts[i] - weights[name] / total * drawn) <= 5
    shares = counts / counts.sum()
    for i, name in enumerate(mix.sources):
        assert abs(shares[i] - weights[name] / total) < 0.01
        assert mix.sequences_drawn(1500, 16)[name] == counts[i]
        assert mix.tokens_drawn(1500, 16)[name] == counts[i] * 32


def test_rows_are_contiguous_windows_of_their_source():
    mix = Mixture(Store(SIZES), {"a": 0.5, "b": 0.3, "c": 0.2}, seq_len=50, seed=1)
    x, src = mix.batch(11, 40)
    assert x.shape == (40, 51) and x.dtype == np.int64 and src.dtype == np.int64
    for row, s in zip(x, src, strict=True):
        assert row[0] // 10**6 == s  # from the source it claims
        assert np.array_equal(np.diff(row), np.ones(50))  # contiguous tokens
        assert (row[0] % 10**6) + 51 <= SIZES[mix.sources[s]]


def test_same_step_same_batch_other_step_or_seed_differs():
    store = Store(SIZES)
    m1 = Mixture(store, {"a": 0.6, "b": 0.4}, seq_len=16, seed=3)
    m2 = Mixture(store, {"a": 0.6, "b": 0.4}, seq_len=16, seed=3)
    for step in (0, 1, 17, 10**6):
        assert all(np.array_equal(p, q) for p, q in zip(m1.batch(step, 8), m2.batch(step, 8), strict=True))
        assert all(np.array_equal(p, q) for p, q in zip(m1.batch(step, 8), m1.batch(step, 8), strict=True))
    assert not np.array_equal(m1.batch(5, 8)[0], m1.batch(6, 8)[0])
    other = Mixture(store, {"a": 0.6, "b": 0.4}, seq_len=16, seed=4)
    assert not np.array_equal(m1.batch(5, 8)[0], other.batch(5, 8)[0])


def test_resume_sees_the_batches_of_an_uninterrupted_run():
    store = Store(SIZES)
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    straight = _draws(Mixture(store, weights, seq_len=64, seed=9), range(0, 200), 12)
    first = _draws(Mixture(store, weights, seq_len=64, seed=9), range(0, 83), 12)
    resumed = _draws(Mixture(store, weights, seq_len=64, seed=9), range(83, 200), 12)  # fresh object, like a restart
    for (x, s), (y, r) in zip(straight, first + resumed, strict=True):
        assert np.array_equal(x, y) and np.array_equal(s, r)


@pytest.mark.parametrize("world", [2, 3, 4, 12])
def test_ranks_slice_the_same_global_batch(world):
    mix = Mixture(Store(SIZES), {"a": 0.7, "b": 0.2, "c": 0.1}, seq_len=20, seed=2)
    for step in (0, 5, 333):
        x, s = mix.batch(step, 12)
        parts = [mix.batch(step, 12, rank=r, world=world) for r in range(world)]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), x)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), s)


def test_every_window_once_per_epoch_in_a_new_order():
    """Source c (3,001 tokens, seq_len 97): 30 windows at stride 97 and 90 spare tokens for a random offset."""
    seq_len = 97
    mix = Mixture(Store(SIZES), {"a": 0.5, "c": 0.5}, seq_len=seq_len, seed=5)
    c = mix.sources.index("c")
    nw = mix.n_windows[c]
    assert nw == (SIZES["c"] - 1) // seq_len == 30
    offsets = []
    starts = []
    step = 0
    while len(starts) < 3 * nw:
        x, src = mix.batch(step, 8)
        starts += [int(r[0] % 10**6) for r in x[src == c]]
        step += 1
    epochs = [starts[e * nw : (e + 1) * nw] for e in range(3)]
    for e, got in enumerate(epochs):
        assert len(set(got)) == nw  # no window twice within an epoch
        offset = min(got)
        offsets.append(offset)
        assert offset <= SIZES["c"] - 1 - nw * seq_len  # random offset within the spare tokens
        assert sorted(got) == [offset + j * seq_len for j in range(nw)]  # every window, stride seq_len
        assert got == mix.window_starts("c", e).tolist()
    assert epochs[0] != epochs[1] != epochs[2]
    assert len(set(offsets)) > 1  # the offset moves between epochs
    assert mix.epochs(step, 8)["c"] == pytest.approx(mix.sequences_drawn(step, 8)["c"] / nw)


def test_epochs_and_repeat_warning():
    mix = Mixture(Store(SIZES), {"a": 0.5, "c": 0.5}, seq_len=100, seed=0, max_epochs=2)
    assert mix.warnings(1, 8) == []
    ep = mix.epochs(20, 8)  # c: ~80 sequences over 30 windows
    assert ep["c"] == pytest.approx(80 / 30, abs=0.2) and ep["a"] == pytest.approx(80 / 199, abs=0.02)
    (msg,) = mix.warnings(20, 8)
    assert "'c'" in msg and "epochs" in msg
    assert mix.warnings(20, 8, max_epochs=3) == []
    rows = mix.summary(20, 8)
    assert [r["source"] for r in rows] == ["a", "c"] and sum(r["sequences"] for r in rows) == 160


def test_weights_are_normalized_and_zero_weight_sources_left_out():
    mix = Mixture(Store(SIZES), {"a": 2.0, "b": 0.0, "c": 6.0}, seq_len=8, seed=0)
    assert mix.sources == ["a", "c"] and mix.weights == {"a": 0.25, "c": 0.75}
    _, src = mix.batch(0, 400)
    assert abs((src == 1).mean() - 0.75) < 0.02


@pytest.mark.parametrize(
    "weights, needle",
    [
        ({"a": -0.1, "b": 1.0}, "finite number >= 0"),
        ({"a": math.nan}, "finite number >= 0"),
        ({"a": math.inf}, "finite number >= 0"),
        ({"a": True}, "finite number >= 0"),
        ({"a": 0.0, "b": 0}, "sum to zero"),
        ({}, "at least one source"),
        ({"alpha": 1.0}, "unknown source"),
    ],
)
def test_bad_weights(weights, needle):
    with pytest.raises(UserError, match=needle):
        Mixture(Store(SIZES), weights, seq_len=8, seed=0)


def test_other_bad_input():
    store = Store({"tiny": 10, "a": 1000})
    with pytest.raises(UserError, match="fewer than seq_len"):
        Mixture(store, {"tiny": 1.0, "a": 1.0}, seq_len=10, seed=0)
    Mixture(store, {"tiny": 1.0}, seq_len=9, seed=0).batch(0, 2)  # exactly seq_len + 1 tokens is enough
    mix = Mixture(store, {"a": 1.0}, seq_len=8, seed=0)
    with pytest.raises(UserError, match="does not split evenly"):
        mix.batch(0, 10, rank=0, world=4)
    with pytest.raises(UserError, match="rank"):
        mix.batch(0, 8, rank=2, world=2)
    with pytest.raises(UserError, match="seq_len"):
        Mixture(store, {"a": 1.0}, seq_len=0, seed=0)
    with pytest.raises(UserError, match="split"):
        Mixture(store, {"a": 1.0}, seq_len=8, seed=0, split="test")
    with pytest.raises(UserError, match="step"):
        mix.batch(-1, 8)
