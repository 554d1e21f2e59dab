"""The device's peak FLOP/s, the denominator of MFU (Chowdhery et al. 2022, App. B).

On a GPU in the planner's catalog: its dense bf16 data-sheet peak. On a CPU (or an
unknown GPU): measured, in the training precision, by `matmul_rate`, and remembered per
machine (`lmforge.train.machine`) so that every run on it uses the same peak.

`matmul_rate` is built so that it holds on a noisy or slow machine:

- sizes grow from 256 while one product stays short (so a CPU whose bf16 runs at
  1 GFLOP/s is measured at 256, a fast one up to 2048, a GPU up to 8192);
- at every size at least ``MIN_ROUNDS`` rounds are timed, each of back-to-back products
  lasting about ``ROUND_SECONDS``, even past the time budget: the result is never zero;
- the rate of a size is the median of its rounds (one disturbed round does not move it),
  the peak the best size.

MFU against such a peak can still pass 1 where a run's matmuls beat the square ones;
`Peak.observe` then raises the peak to what the run did, so no MFU ever shows above 100%.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from lmforge.plan.hardware import gpu_for_device_name
from lmforge.train.machine import remembered

MIN_ROUNDS = 3
ROUND_SECONDS = 0.02
MAX_PRODUCT_SECONDS = 0.05  # stop growing the size once one product takes this long
SIZES = {"cpu": (256, 512, 1024, 2048), "cuda": (1024, 2048, 4096, 8192)}


def catalog_peak(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a catalog GPU matching the CUDA device name, else None."""
    if device.type != "cuda":
        return None
    gpu = gpu_for_device_name(torch.cuda.get_device_name(device))
    return None if gpu is None else gpu.bf16_flops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device_type: str = "cpu", dtype: torch.dtype = torch.float32, *, budget_seconds: float = 1.0,
                sizes: tuple[int, ...] | None = None, min_rounds: int = MIN_ROUNDS) -> float:
    """FLOP/s of square ``(n, n) @ (n, n)`` products (2 n^3 FLOPs each): the best size's
    median over at least ``min_rounds`` timed rounds. Always > 0."""
    device = torch.device(device_type)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's RNG is untouched
        return _best_rate(device, dtype, time.perf_counter() + budget_seconds,
                          sizes or SIZES.get(device.type, SIZES["cuda"]), min_rounds)


def _best_rate(device: torch.device, dtype: torch.dtype, deadline: float, sizes: tuple[int, ...],
               min_rounds: int) -> float:
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)  # warm-up, and the time of one product
        _sync(device)
        single = max(time.perf_counter() - start, 1e-9)
        per_round = max(1, int(ROUND_SECONDS / single))
        rates = []
        while len(rates) < min_rounds or (time.perf_counter() < deadline and len(rates) < 2 * min_rounds):
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                torch.matmul(a, b)
            _sync(device)
            rates.append(2 * n**3 * per_round / max(time.perf_counter() - start, 1e-9))
        best = max(best, statistics.median(rates))
        if single > MAX_PRODUCT_SECONDS or time.perf_counter() >= deadline:
            break
    return best


def measured_peak(device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16, *, fresh: bool = False) -> float:
    """`matmul_rate` for this machine and dtype, measured once and remembered."""
    name = f"matmul_peak/{device_type}/{str(dtype).removeprefix('torch.')}"
    return remembered(name, lambda: matmul_rate(device_type, dtype), device_type=device_type, fresh=fresh)


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of a run in ``precision`` compute in."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def peak_flops(device: torch.device, precision: str, override_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for MFU."""
    if override_tflops is not None:
        return override_tflops * 1e12, "given"
    known = catalog_peak(device)
    if known is not None:
        return known, "catalog bf16 dense peak"
    dtype = precision_dtype(precision)
    return measured_peak(device.type, dtype), f"measured {str(dtype).removeprefix('torch.')} matmul peak"


@dataclass
class Peak:
    """The peak FLOP/s an MFU is computed against, raised to any rate a run is seen doing.

    ``flops`` is the peak of the whole job (``per_device`` x ranks). ``mfu(rate)`` is
    therefore <= 1 by construction: a measured rate above the peak proves the peak was
    low, and becomes the peak (``raised`` says it happened, for the report)."""

    per_device: float
    source: str
    world: int = 1
    raised: bool = False

    @property
    def flops(self) -> float:
        return self.per_device * self.world

    def observe(self, flops_per_second: float) -> bool:
        """Take a job-wide achieved FLOP/s; True the first time it raises the peak."""
        if flops_per_second <= self.flops:
            return False
        first = not self.raised
        self.per_device, self.raised = flops_per_second / self.world, True
        self.source += "" if not first else ", raised to the rate this run reached"
        return first

    def note(self) -> str:
        return (f"note: this run computes faster than the measured matmul peak; MFU is against "
                f"{self.flops / 1e9:,.1f} GFLOP/s, the rate it reached")

    def mfu(self, flops_per_second: float) -> float:
        self.observe(flops_per_second)
        return flops_per_second / self.flops
