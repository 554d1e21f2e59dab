"""The weights' memory layout while decoding: PyTorch's row-major, or column-major where a
probe measures it faster on this machine.

Decoding at small batch multiplies a few rows by every weight matrix once per token, so
it is bound by how fast the weights stream from memory (Pope et al. 2022, Sec. 3.1).
``F.linear(x, W)`` with ``W`` (out, in) row-major and few rows of ``x`` runs as a
matrix-vector product whose speed depends on the BLAS and the CPU: on a 2-core AMD EPYC
(torch 2.13) the 8,192 x 384 output head streamed at 9.5 GB/s row-major and at 54 GB/s
stored column-major (the same values, ``W.t()`` contiguous), and a whole 6-layer model
decoded 25% faster (BENCHMARKS.md, issue 17). Elsewhere it may be the other way round,
so it is decided by measurement (DESIGN.md): `probe` times the largest weight both ways
at the batch's row count, and the copy that moves it, once per process and shape.

Moving the weights costs a copy of each there and back (on this EPYC about ten tokens'
worth of decoding for the 6-layer model), so columns are used only when the tokens to
decode repay it: ``steps x (row-major - column-major seconds) > 2 x copy seconds`` on the
probed weight, besides the `GAIN` per token.

`decode_layout(model, rows)` stores every ``nn.Linear`` weight column-major for the
duration of a generation when the probe (or ``LMFORGE_DECODE_LAYOUT=columns``) says so,
and puts each back row-major, bit for bit, afterwards; shared (tied) weights are moved
once and stay shared. Only CPU floating-point weights move; quantized modules keep theirs.
``LMFORGE_DECODE_LAYOUT=rows`` (or ``columns``) forces the choice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from lmforge.errors import UserError

ENV = "LMFORGE_DECODE_LAYOUT"
GAIN = 1.10  # column-major must be at least 10% faster to be used
CHOICES = ("rows", "columns")
PROBE_ROWS = 16384  # output features of the probed weight at most


def linear_weights(model: nn.Module) -> list[nn.Parameter]:
    """The distinct CPU floating-point 2-D weights of the model's ``nn.Linear`` modules."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and isinstance(weight, torch.Tensor) and weight.dim() == 2 \
                and weight.device.type == "cpu" and weight.is_floating_point():
            seen.setdefault(id(weight), weight)
    return list(seen.values())


def _seconds(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class LayoutTiming:
    """Seconds of one ``F.linear`` with the weight row-major and column-major, and of the
    copy that changes its layout."""

    row_major: float
    column_major: float
    move: float

    def columns_pay(self, steps: int) -> bool:
        """Column-major is `GAIN` times faster and ``steps`` products repay moving there and back."""
        return self.row_major >= GAIN * self.column_major \
            and steps * (self.row_major - self.column_major) > 2 * self.move


@cache
def probe(out_features: int, in_features: int, rows: int, dtype: torch.dtype, threads: int) -> LayoutTiming:
    """`LayoutTiming` of ``rows`` rows by an (out, in) weight, here (a few milliseconds)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)  # (out, in) row-major
    columns = weight.t().contiguous().t()  # same values, (in, out) in memory
    x = torch.randn(rows, in_features, generator=generator).to(dtype)  # (rows, in)
    with torch.inference_mode():
        return LayoutTiming(_seconds(lambda: nn.functional.linear(x, weight)),
                            _seconds(lambda: nn.functional.linear(x, columns)),
                            _seconds(lambda: weight.t().contiguous()))


def choose(model: nn.Module, rows: int, steps: int) -> str:
    """"columns" or "rows" for ``steps`` decoding steps of ``rows`` rows with ``model``:
    ``LMFORGE_DECODE_LAYOUT`` when set, else the probe on the model's largest linear weight."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in CHOICES:
            raise UserError(f"{ENV} must be rows or columns", forced, f"unset it, or set {ENV}=rows")
        return forced
    weights = linear_weights(model)
    if not weights:
        return "rows"
    largest = max(weights, key=lambda w: w.numel())
    out_features, in_features = largest.shape
    # a GPT-2 head (50,257 rows) is probed on its first 16,384: as telling, a third of the time
    timing = probe(min(out_features, PROBE_ROWS), in_features, rows, largest.dtype, torch.get_num_threads())
    return "columns" if timing.columns_pay(steps) else "rows"


@contextmanager
def decode_layout(model: nn.Module, rows: int, steps: int) -> Iterator[str]:
    """Within the block (``steps`` decoding steps of ``rows`` rows), the model's linear
    weights are stored as `choose` says; yields the choice. Afterwards every weight is
    row-major again with the same values."""
    if choose(model, rows, steps) == "rows":
        yield "rows"
        return
    weights = linear_weights(model)
    with torch.no_grad():
        for weight in weights:
            weight.data = weight.data.t().contiguous().t()  # (out, in) view of (in, out) memory
    try:
        yield "columns"
    finally:
        with torch.no_grad():
            for weight in weights:
                weight.data = weight.data.contiguous()
