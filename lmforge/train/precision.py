"""Which precision to compute in here, chosen by measurement (``train.precision: auto``).

A CPU has fast bf16 only where it has the instructions for it (AMX ``amx_bf16``,
AVX-512 ``avx512_bf16``; Apple and recent ARM cores): elsewhere PyTorch emulates bf16
and a bf16 matmul runs about 100x slower than fp32 (seen: 0.9 vs 136 GFLOP/s on an
AVX2-only AMD EPYC). So on a CPU lmforge times one bf16 and one fp32 product of 256^3
(well under a second even where bf16 is slow) and computes in bf16 only when it is at
least ``FAST_RATIO`` times as fast as fp32. The outcome is remembered per machine
(`lmforge.train.machine`) and can be forced with ``LMFORGE_CPU_BF16=0`` (no fast bf16)
or ``=1`` (fast bf16), which is how the tests run both outcomes on one machine.

On a GPU: bf16 where ``torch.cuda.is_bf16_supported()``, else fp16 with a GradScaler.

Every place that picks a compute dtype asks here: training (`choose_precision`), and
evaluation, sampling and quantized inference (`inference_dtype`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from functools import cache

import torch

from lmforge.errors import UserError
from lmforge.train.machine import cpu_flags, remembered
from lmforge.train.peak import matmul_rate

ENV_VAR = "LMFORGE_CPU_BF16"
FAST_RATIO = 1.2  # bf16 must beat fp32 by this much to be worth its rounding
PROBE_SIZE = 256
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuBf16:
    """Whether bf16 is fast on this CPU, and the evidence."""

    fast: bool
    source: str  # "probe" or "LMFORGE_CPU_BF16=0|1"
    bf16_flops: float | None  # measured rate of the probe's product (None when forced)
    fp32_flops: float | None
    flags: tuple[str, ...]  # the CPU's bf16 flags

    @property
    def slowdown(self) -> float | None:
        """How many times slower a bf16 product is than an fp32 one (None if not measured)."""
        if not self.bf16_flops or not self.fp32_flops:
            return None
        return self.fp32_flops / self.bf16_flops

    def rates(self) -> str:
        """``bf16 matmul 0.9 GFLOP/s vs fp32 136``, or why there are none."""
        if self.bf16_flops is None or self.fp32_flops is None:
            return f"forced by {self.source}"
        return f"bf16 matmul {_gflops(self.bf16_flops)} GFLOP/s vs fp32 {_gflops(self.fp32_flops)}"

    def to_dict(self) -> dict:
        return asdict(self)


def _gflops(flops: float) -> str:
    value = flops / 1e9
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _probe_rate(dtype: torch.dtype) -> float:
    """FLOP/s of ``PROBE_SIZE``^3 products (`lmforge.train.peak.matmul_rate` at that one
    size, its minimum rounds only: a fraction of a second even where bf16 is slow; > 0)."""
    return matmul_rate("cpu", dtype, budget_seconds=0.0, sizes=(PROBE_SIZE,))


def forced() -> bool | None:
    """``LMFORGE_CPU_BF16`` as True/False, None when unset; UserError for another value."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise UserError(f"{ENV_VAR} must be 0 or 1", value, f"unset {ENV_VAR} to let lmforge measure")


@cache
def _cpu_bf16(force: bool | None, fresh: bool) -> CpuBf16:
    flags = tuple(f for f in BF16_FLAGS if f in cpu_flags())
    if force is not None:
        return CpuBf16(force, f"{ENV_VAR}={int(force)}", None, None, flags)
    bf16 = remembered("probe/cpu/bfloat16", lambda: _probe_rate(torch.bfloat16), fresh=fresh)
    fp32 = remembered("probe/cpu/float32", lambda: _probe_rate(torch.float32), fresh=fresh)
    return CpuBf16(bf16 >= FAST_RATIO * fp32, "probe", bf16, fp32, flags)


def cpu_bf16(fresh: bool = False) -> CpuBf16:
    """Is bf16 fast on this CPU? Forced by ``LMFORGE_CPU_BF16``, else measured (once per machine)."""
    return _cpu_bf16(forced(), fresh)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run computes in, and why (the run header and plan.json say it)."""

    precision: str  # fp32 | bf16 | fp16
    requested: str  # auto | fp32 | bf16 | fp16
    reason: str
    warning: str | None = None
    cpu: CpuBf16 | None = None

    def header(self) -> str:
        """``precision: fp32 (bf16 matmul 0.9 GFLOP/s vs fp32 136 on this CPU)``."""
        return f"precision: {self.precision} ({self.reason})"

    def to_dict(self) -> dict:
        out = {"precision": self.precision, "requested": self.requested, "reason": self.reason,
               "warning": self.warning}
        if self.cpu is not None:
            out["cpu_bf16"] = self.cpu.to_dict()
        return out


def choose_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """``train.precision`` resolved for ``device``: ``auto`` by measurement; an explicit
    choice kept, with a warning where it is slow here; fp16 refused on a CPU."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        if requested == "auto":
            if bf16:
                return PrecisionChoice("bf16", requested, f"{name} supports bf16")
            return PrecisionChoice("fp16", requested, f"{name} has no bf16: fp16 with loss scaling")
        if requested == "bf16" and not bf16:
            raise UserError("this GPU has no bf16", name, "use --train.precision fp16 (or auto)")
        return PrecisionChoice(requested, requested, "asked for")
    if requested == "fp16":
        raise UserError("fp16 training needs a GPU (loss scaling)", "train.precision=fp16", "use auto or fp32 on a CPU")
    cpu = cpu_bf16()
    where = "on this CPU" if cpu.source == "probe" else ""
    evidence = f"{cpu.rates()} {where}".strip()
    if requested == "auto":
        return PrecisionChoice("bf16" if cpu.fast else "fp32", requested, evidence, cpu=cpu)
    warning = None
    if requested == "bf16" and not cpu.fast:
        slower = f"{cpu.slowdown:.0f}x slower than fp32" if cpu.slowdown else "slow"
        warning = (f"warning: bf16 matmuls are {slower} on this CPU ({evidence}); "
                   "--train.precision auto would pick fp32")
    return PrecisionChoice(requested, requested, f"asked for; {evidence}", warning, cpu)


def inference_dtype(device: torch.device | str = "cpu", stored: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype to compute in for evaluation and sampling of weights stored in ``stored``:
    the stored dtype, except 16-bit weights on a CPU without fast bf16/fp16 arithmetic,
    which compute in fp32 (exact: every bf16/fp16 value is an fp32 value)."""
    device = torch.device(device)
    if device.type != "cpu" or stored == torch.float32:
        return stored
    if stored == torch.bfloat16 and cpu_bf16().fast:
        return stored
    return torch.float32


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a run in ``precision`` (None for fp32: no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """The precision context of a forward pass in ``precision`` (none for fp32)."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
