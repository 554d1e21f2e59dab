"""How a quantized run computes on this machine: the dtype of everything that is not
quantized, and the path each int8 / int4 linear takes. Chosen by measurement.

Where bf16 is fast (`lmforge.train.precision.cpu_bf16`), a quantized run computes in
bf16 as written: int8 linears call ``torch._weight_int8pack_mm`` and int4 linears
``torch._weight_int4pack_mm_for_cpu`` with bf16 activations. Where bf16 is slow (a bf16
matmul about 100x slower than fp32 on AVX2-only CPUs), the embeddings, norms and
attention compute in fp32, and each quantized linear takes whichever of its paths is
fastest here for fp32 activations, timed once per machine on a 512 x 512 layer:

- ``kernel-bf16``: cast the activations to bf16 for the weight-only kernel and the
  result back (the kernels convert to fp32 inside, so they stay fast without native
  bf16: seen 87 us at batch 1 against 2.35 ms for the dequantize path);
- ``kernel-fp32``: the kernel with fp32 activations (int8; a slow reference path in
  torch 2.13);
- ``dequantize``: rebuild the fp32 weight for the call and ``F.linear`` (exact).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.quantize.convert import cast_kept
from lmforge.quantize.modules import Int4Linear, Int8Linear, QuantizedEmbedding
from lmforge.quantize.primitives import int4_quantize, int8_quantize
from lmforge.train.machine import remembered
from lmforge.train.precision import cpu_bf16, inference_dtype

PATHS = {"int8": ("kernel-bf16", "kernel-fp32", "dequantize"), "int4": ("kernel-bf16", "dequantize")}
PROBE_FEATURES = 512
PROBE_ROWS = (1, 32)  # decoding one token, and a prompt or evaluation batch


@dataclass(frozen=True)
class ComputePlan:
    """What `apply_compute_plan` does to a loaded quantized model, and the line that says it."""

    dtype: torch.dtype  # of the activations and of every tensor that is not quantized
    int8_path: str
    int4_path: str
    reason: str

    def describe(self, precision: str) -> str:
        name = str(self.dtype).removeprefix("torch.")
        name = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)
        path = {"int8": f", int8 linears: {self.int8_path}", "int4": f", int4 linears: {self.int4_path}"}
        return f"{name}{path.get(precision, '')} ({self.reason})"


def _timed(module: nn.Module, x: torch.Tensor) -> float:
    module(x)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _probe_layer(kind: str, path: str) -> tuple[nn.Module, bool]:
    """A 512 x 512 quantized linear set up for ``path`` (False where the path cannot run)."""
    with torch.random.fork_rng(devices=[]):
        w = torch.randn(PROBE_FEATURES, PROBE_FEATURES)
        if kind == "int8":
            module = Int8Linear.from_codes(*int8_quantize(w), None)
            module.fp32_kernel_dtype = {"kernel-bf16": torch.bfloat16, "kernel-fp32": torch.float32}.get(path)
            return module, path == "dequantize" or module.kernel
        module = Int4Linear.from_codes(*int4_quantize(w, 32), None)
        if path == "kernel-bf16":
            return module, module.to_cpu_kernel_layout()
        return module, True


def path_seconds(kind: str, path: str) -> float:
    """Seconds of one fp32 call of the probe layer along ``path`` (summed over PROBE_ROWS)."""
    module, runs = _probe_layer(kind, path)
    if not runs:
        return float("inf")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        return sum(_timed(module, torch.randn(rows, PROBE_FEATURES)) for rows in PROBE_ROWS)


def fastest_fp32_path(kind: str) -> str:
    """The fastest of ``PATHS[kind]`` for fp32 activations here (measured once per machine)."""
    seconds = {path: remembered(f"quantized_linear/{kind}/{path}", lambda p=path: path_seconds(kind, p))
               for path in PATHS[kind]}
    return min(seconds, key=seconds.get)


def compute_plan(stored: torch.dtype, precision: str) -> ComputePlan:
    """The plan for a run whose kept tensors are ``stored`` and whose linears are ``precision``."""
    cpu = cpu_bf16()
    if inference_dtype("cpu", stored) == stored:
        return ComputePlan(stored, "kernel-bf16" if stored == torch.bfloat16 else "dequantize", "kernel-bf16",
                           "as stored" if stored == torch.float32 else f"bf16 is fast on this CPU: {cpu.rates()}")
    int8 = fastest_fp32_path("int8") if precision == "int8" else "dequantize"
    int4 = fastest_fp32_path("int4") if precision == "int4" else "dequantize"
    if stored == torch.bfloat16:
        why = f"bf16 is slow on this CPU: {cpu.rates()}; fp32 is exact for bf16 weights"
    else:
        why = "fp16 arithmetic is slow on CPUs; fp32 is exact for fp16 weights"
    return ComputePlan(torch.float32, int8, int4, why)


def apply_compute_plan(model: nn.Module, plan: ComputePlan, layout: str = "auto") -> int:
    """Cast the kept tensors to ``plan.dtype`` and set each quantized linear's path; with
    ``layout="auto"`` int4 linears on the kernel path are re-laid for it (same bytes).
    Returns how many int4 linears were re-laid."""
    if plan.dtype == torch.float32:
        cast_kept(model, torch.float32)
    relaid = 0
    for module in model.modules():
        if isinstance(module, QuantizedEmbedding):
            module.dtype = plan.dtype
        elif isinstance(module, Int8Linear) and plan.dtype == torch.float32:
            module.fp32_kernel_dtype = {"kernel-bf16": torch.bfloat16, "kernel-fp32": torch.float32}.get(
                plan.int8_path)
        elif (isinstance(module, Int4Linear) and layout == "auto" and plan.int4_path == "kernel-bf16"
              and not getattr(module, "tied_to_embedding", False)):
            relaid += module.to_cpu_kernel_layout()
    return relaid


