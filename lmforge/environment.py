"""`lmforge env`: the machine as lmforge sees it, for a bug report (like ``accelerate env``
and ``torch.utils.collect_env``).

Versions, the device(s), the CPU's model, capability and bf16-related flags, memory,
whether bf16 is fast here (`lmforge.train.precision`), the measured fp32 and bf16
matmul peaks (`lmforge.train.peak`), and what lmforge will therefore do here: the
training precision ``auto`` picks, the compute dtype of 16-bit weights in evaluation
and sampling, and the path of int8 / int4 linears (`lmforge.quantize.paths`).
Measurements come from the per-machine cache (`lmforge.train.machine`) unless
``remeasure``.
"""

from __future__ import annotations

import os
import platform
import sys

import torch

from lmforge import __version__
from lmforge.quantize.paths import compute_plan
from lmforge.train.machine import cache_path, cpu_capability, cpu_flags, cpu_model, forget, machine_key
from lmforge.train.peak import catalog_peak, measured_peak
from lmforge.train.precision import BF16_FLAGS, ENV_VAR, choose_precision, cpu_bf16, inference_dtype

# flags that decide which kernels are fast: vector width, bf16 / fp16 / int8 dot products, AMX tiles
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")


def _memory_bytes() -> dict:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return {"total_bytes": page * os.sysconf("SC_PHYS_PAGES"), "available_bytes": page * os.sysconf(
            "SC_AVPHYS_PAGES")}
    except (ValueError, OSError, AttributeError):
        return {"total_bytes": None, "available_bytes": None}


def _gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    out = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        device = torch.device("cuda", index)
        out.append({"index": index, "name": props.name, "memory_bytes": int(props.total_memory),
                    "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported(),
                    "catalog_bf16_peak_flops": catalog_peak(device)})
    return out


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def describe_environment(remeasure: bool = False) -> dict:
    """Everything `lmforge env` prints, as a JSON-ready dict."""
    if remeasure:
        forget()
    cpu = cpu_bf16(fresh=remeasure)
    flags = cpu_flags()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choice = choose_precision("auto", device)
    int8, int4 = compute_plan(torch.bfloat16, "int8"), compute_plan(torch.bfloat16, "int4")
    peaks = {name: measured_peak("cpu", dtype, fresh=remeasure)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return {
        "lmforge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpus": _gpus(),
        "cpu": {
            "model": cpu_model(),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "capability": cpu_capability(),
            "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "bf16_flags": [f for f in BF16_FLAGS if f in flags],
            "native_bf16": cpu.fast,
            "bf16_decided_by": cpu.source,
            "probe_bf16_flops": cpu.bf16_flops,
            "probe_fp32_flops": cpu.fp32_flops,
            "matmul_peak_flops": peaks,
        },
        "memory": _memory_bytes(),
        "lmforge_will_use": {
            "train_precision": choice.precision,
            "train_precision_reason": choice.reason,
            "eval_and_generate_dtype_for_bf16_weights": _dtype_name(inference_dtype("cpu", torch.bfloat16)),
            "int8_linears": f"{_dtype_name(int8.dtype)} activations, {int8.int8_path}",
            "int4_linears": f"{_dtype_name(int4.dtype)} activations, {int4.int4_path}",
        },
        "override": {ENV_VAR: os.environ.get(ENV_VAR)},
        "cache": {"path": str(cache_path()), "machine_key": machine_key(device.type)},
    }
