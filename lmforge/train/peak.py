"""The device's peak FLOP/s, the denominator of MFU (Chowdhery et al. 2022, App. B).

On a GPU in the planner's catalog: its dense bf16 data-sheet peak. On a CPU (or an
unknown GPU): measured, as the best of a few timed square matmuls in the training
precision. A measured peak is what this device can actually do, so the MFU it gives is
an honest utilisation of the hardware, not of a marketing number.
"""

from __future__ import annotations

import time
from functools import cache

import torch

from lmforge.plan.hardware import GPUS


def catalog_peak(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a catalog GPU matching the CUDA device name, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower().replace(" ", "").replace("nvidia", "")
    for gpu in sorted(GPUS.values(), key=lambda g: -len(g.name)):
        key = gpu.name.lower().replace("-", "").replace("sxm", "").replace("gb", "")
        if key and key in name.replace("-", ""):
            return gpu.bf16_flops
    return None


@cache
def measured_peak(device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16, size: int = 1024) -> float:
    """Best FLOP/s of ``2 size^3``-FLOP matmuls over about half a second."""
    device = torch.device(device_type)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + 0.5
    torch.matmul(a, b)  # warm-up
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def peak_flops(device: torch.device, precision: str, override_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for MFU."""
    if override_tflops is not None:
        return override_tflops * 1e12, "given"
    known = catalog_peak(device)
    if known is not None:
        return known, "catalog bf16 dense peak"
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    return measured_peak(device.type, dtype), f"measured {dtype} matmul peak"
