"""Weighted mixtures of token sources: every batch a pure function of (seed, step, batch size, rank, world).

Which source the g-th sequence of the run (g = step * n_sequences + row) comes from is a
Kronecker (golden-ratio) low-discrepancy sequence: u_g = frac(g * alpha + beta), with
alpha = (sqrt(5) - 1) / 2 and beta from the seed, and source s owns the interval
[W_{s-1}, W_s) of the cumulative normalized weights. Its counts stay within a few
sequences of w_s * g for every g (Weyl 1916; Kuipers & Niederreiter, *Uniform
Distribution of Sequences*, 1974, ch. 1 sec. 3 and ch. 2 sec. 3: discrepancy
O(log N / N) for badly approximable alpha). How many of the first N sequences each source
contributed is a sum of floors, computed exactly in O(log N) with the floor-sum
recursion (AtCoder Library, ``floor_sum``), so any step's batch is computed without
replaying the steps before it: a resumed run sees exactly the batches an uninterrupted
one would, and the global batch is the same whatever the number of ranks.

The k-th sequence drawn from source s is window perm_e(k mod n_windows) of that source,
where epoch e = k // n_windows, windows are seq_len + 1 tokens long at stride seq_len
(every token is a target once per epoch, as in nanoGPT's ``get_batch``), and perm_e is a
keyed Feistel permutation with cycle walking (Black & Rogaway, "Ciphers with Arbitrary
Finite Domains", CT-RSA 2002), reseeded per (seed, source name, epoch) together with a
random start offset, so that each epoch visits every window exactly once in a new order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmforge.errors import UserError, check_whole, unknown_name

_M = 2**64
_ALPHA = 0x9E3779B97F4A7C15  # round(2^64 * (sqrt(5) - 1) / 2), odd
_FEISTEL_ROUNDS = 6
DEFAULT_MAX_EPOCHS = 4.0


def floor_sum(n: int, m: int, a: int, b: int) -> int:
    """sum_{i=0}^{n-1} floor((a*i + b) / m) for n >= 0, m >= 1, a >= 0, b >= 0, exact in O(log m).

    The Euclid-like recursion of the AtCoder Library (``floor_sum_unsigned``, atcoder/math.hpp).
    """
    ans = 0
    while True:
        if a >= m:
            ans += n * (n - 1) // 2 * (a // m)
            a %= m
        if b >= m:
            ans += n * (b // m)
            b %= m
        y_max = a * n + b
        if y_max < m:
            return ans
        n, b = divmod(y_max, m)
        m, a = a, m


def _hash64(*parts: object) -> int:
    """A 64-bit key from the parts, stable across runs and Python versions (BLAKE2b)."""
    data = "\x00".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _mix64(z: np.ndarray) -> np.ndarray:  # (n,) uint64 -> (n,) uint64
    """SplitMix64's finalizer (Steele, Lea & Flood, OOPSLA 2014): a bijective 64-bit mixer."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def permute(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random permutation of [0, n), applied elementwise to ``index`` (values in [0, n)).

    A balanced Feistel network on the smallest even bit width covering n, with cycle
    walking for the values that land in [n, 2^bits) (Black & Rogaway 2002). O(1) memory
    whatever n is.
    """
    x = np.asarray(index, dtype=np.uint64).reshape(-1).copy()  # (k,)
    if n <= 1:
        return np.zeros_like(x)
    half = max(1, math.ceil(math.log2(n) / 2))
    mask = np.uint64((1 << half) - 1)
    keys = [np.uint64(_hash64(key, r)) for r in range(_FEISTEL_ROUNDS)]

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> np.uint64(half), v & mask
        for k in keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << np.uint64(half)) | right

    todo = np.ones(x.shape, dtype=bool)
    while todo.any():
        x[todo] = once(x[todo])
        todo = x >= np.uint64(n)
    return x


class Mixture:
    """Batches of windows drawn from the sources of a TokenStore by weight.

    ``weights`` maps source names to non-negative weights (normalized here; a weight of 0
    leaves a source out). ``batch(step, n_sequences, rank, world)`` returns this rank's
    contiguous slice of the global batch of ``n_sequences`` rows for ``step``.
    """

    def __init__(
        self,
        store: Any,
        weights: Mapping[str, float],
        seq_len: int,
        seed: int,
        split: str = "train",
        *,
        max_epochs: float = DEFAULT_MAX_EPOCHS,
    ):
        check_whole("seq_len", seq_len, 2**24)
        check_whole("seed", seed, 2**63 - 1, allow_zero=True)
        if split not in ("train", "val"):
            raise UserError("unknown split", split, "choose train or val")
        if not isinstance(weights, Mapping) or not weights:
            raise UserError("a mixture needs at least one source weight", weights, "pass e.g. --data NAME=PATH:1.0")
        for name, w in weights.items():
            if name not in store.sources:
                raise unknown_name("source", name, store.sources)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise UserError(
                    f"the weight of source {name!r} must be a finite number >= 0", w, "pass e.g. NAME=PATH:0.5"
                )
        total = float(sum(weights.values()))
        if total <= 0:
            raise UserError("the mixture weights sum to zero", dict(weights), "give at least one source a weight > 0")
        self.store, self.seq_len, self.seed, self.split = store, seq_len, seed, split
        self.max_epochs = float(max_epochs)
        self.sources: list[str] = [n for n, w in weights.items() if w > 0]
        self.weights: dict[str, float] = {n: float(weights[n]) / total for n in self.sources}
        self._tokens = [store.tokens(n, split) for n in self.sources]
        for name, tokens in zip(self.sources, self._tokens, strict=True):
            if len(tokens) < seq_len + 1:
                raise UserError(
                    f"source {name!r} has only {len(tokens):,} {split} tokens, fewer than seq_len + 1 = {seq_len + 1}",
                    name,
                    "use a shorter --seq-len, more data for that source, or drop it from the mixture",
                )
        # windows of seq_len + 1 tokens at stride seq_len; `spare` tokens left for a random offset
        self.n_windows = [(len(t) - 1) // seq_len for t in self._tokens]
        self._spare = [len(t) - 1 - nw * seq_len for t, nw in zip(self._tokens, self.n_windows, strict=True)]
        cumulative = np.cumsum([self.weights[n] for n in self.sources])
        self._bounds = [0] + [min(_M, round(c * _M)) for c in cumulative[:-1]] + [_M]  # S+1 ints
        self._beta = _hash64("mixture-phase", seed)

    # -- which source each global sequence comes from ---------------------------------------

    def _below(self, n: int, x: int) -> int:
        """#{g < n : (alpha g + beta) mod 2^64 < x}."""
        if x <= 0 or n <= 0:
            return 0
        if x >= _M:
            return n
        return floor_sum(n, _M, _ALPHA, self._beta) - floor_sum(n, _M, _ALPHA, self._beta - x + _M) + n

    def _counts(self, n: int) -> list[int]:
        """How many of the global sequences 0..n-1 each source contributed."""
        below = [self._below(n, x) for x in self._bounds]
        return [below[i + 1] - below[i] for i in range(len(self.sources))]

    def _source_of(self, g: np.ndarray) -> np.ndarray:  # (k,) uint64 -> (k,) int64
        u = np.uint64(_ALPHA) * g + np.uint64(self._beta)  # wraps mod 2^64
        inner = np.array(self._bounds[1:-1], dtype=np.uint64)
        return np.searchsorted(inner, u, side="right").astype(np.int64)

    # -- public --------------------------------------------------------------------------------

    def batch(self, step: int, n_sequences: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (n_sequences / world, seq_len + 1) int64, source_index (n_sequences / world,) int64).

        ``n_sequences`` is the global batch; rank ``rank`` of ``world`` gets rows
        [rank * n / world, (rank + 1) * n / world) of it. ``source_index`` indexes
        ``self.sources``. Inputs are ``tokens[:, :-1]``, targets ``tokens[:, 1:]``.
        """
        check_whole("step", step, 2**40, allow_zero=True)
        check_whole("n_sequences", n_sequences, 2**24)
        check_whole("world", world, 2**20)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
            raise UserError("rank must be in [0, world)", rank, f"pass a rank from 0 to {world - 1}")
        if n_sequences % world:
            raise UserError(
                f"the global batch of {n_sequences} sequences does not split evenly over {world} ranks",
                n_sequences,
                f"use a multiple of {world}",
            )
        local = n_sequences // world
        first = step * n_sequences + rank * local
        g = np.arange(first, first + local, dtype=np.uint64)  # (local,)
        src = self._source_of(g)  # (local,)
        before = self._counts(first)  # sequences each source gave to global rows < first
        tokens = np.empty((local, self.seq_len + 1), dtype=np.int64)  # (local, T+1)
        for s in range(len(self.sources)):
            rows = np.nonzero(src == s)[0]
            if rows.size:
                k = before[s] + np.arange(rows.size, dtype=np.int64)  # per-source draw numbers
                for row, start in zip(rows, self._starts(s, k), strict=True):
                    tokens[row] = self._tokens[s][start : start + self.seq_len + 1]
        return tokens, src

    def _starts(self, s: int, k: np.ndarray) -> np.ndarray:  # (m,) draw numbers -> (m,) token offsets
        nw, name = self.n_windows[s], self.sources[s]
        epoch, j = np.divmod(k, nw)
        starts = np.empty(k.shape, dtype=np.int64)
        for e in np.unique(epoch):
            sel = epoch == e
            key = _hash64("mixture-epoch", self.seed, self.split, name, int(e))
            offset = key % (self._spare[s] + 1)
            starts[sel] = offset + permute(j[sel], nw, key).astype(np.int64) * self.seq_len
        return starts

    def window_starts(self, source: str, epoch: int) -> np.ndarray:
        """The token offsets of all windows of ``source`` in the order epoch ``epoch`` draws them."""
        s = self.sources.index(source)
        nw = self.n_windows[s]
        return self._starts(s, epoch * nw + np.arange(nw, dtype=np.int64))

    def sequences_drawn(self, step: int, n: int) -> dict[str, int]:
        """Sequences each source contributed to the global batches of steps 0 .. step-1 (n rows each)."""
        check_whole("step", step, 2**40, allow_zero=True)
        check_whole("n", n, 2**24)
        return dict(zip(self.sources, self._counts(step * n), strict=True))

    def tokens_drawn(self, step: int, n: int) -> dict[str, int]:
        """Target tokens (seq_len per sequence) each source contributed in steps 0 .. step-1."""
        return {k: v * self.seq_len for k, v in self.sequences_drawn(step, n).items()}

    def epochs(self, step: int, n: int) -> dict[str, float]:
        """Passes over each source's windows made in steps 0 .. step-1."""
        drawn = self.sequences_drawn(step, n)
        return {name: drawn[name] / nw for name, nw in zip(self.sources, self.n_windows, strict=True)}

    def warnings(self, step: int, n: int, max_epochs: float | None = None) -> list[str]:
        """One message per source that has repeated more than ``max_epochs`` epochs by ``step``."""
        limit = self.max_epochs if max_epochs is None else float(max_epochs)
        return [
            f"source {name!r} has been repeated {e:.1f} epochs (more than {limit:g}); "
            "add data, lower its weight, or train on fewer tokens"
            for name, e in self.epochs(step, n).items()
            if e > limit
        ]

    def summary(self, step: int, n: int) -> list[dict[str, Any]]:
        """Per source: weight, sequences, tokens, epochs after ``step`` steps of ``n`` sequences."""
        seqs, eps = self.sequences_drawn(step, n), self.epochs(step, n)
        return [
            {
                "source": name,
                "weight": self.weights[name],
                "sequences": seqs[name],
                "tokens": seqs[name] * self.seq_len,
                "epochs": eps[name],
                "share": seqs[name] / max(1, step * n),
            }
            for name in self.sources
        ]
