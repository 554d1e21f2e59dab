"""What this machine can do, measured once and remembered: the per-machine cache.

Probes (is bf16 fast on this CPU, the matmul peak in each precision) are short, but a
run, an evaluation and a benchmark on one machine must agree on their outcome, so each
is stored in ``$LMFORGE_CACHE_DIR/machine.json`` (default ``~/.cache/lmforge``) under a
key naming the machine: CPU model, core count, CPU capability, torch version and thread
count (and the GPU's name on a GPU; and ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``
where set, since they change which kernels run). ``lmforge env --remeasure`` measures afresh. A
cache that cannot be read or written is ignored: the probe then runs in every process.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

from lmforge.fileio import write_atomic

CACHE_FORMAT = 1
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")  # they cap the kernels PyTorch runs


def cache_path() -> Path:
    root = os.environ.get("LMFORGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmforge")
    return Path(root) / "machine.json"


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("model name", "Model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo`` on Linux; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")) and ":" in line:
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capability() -> str:
    """PyTorch's CPU kernel level: ``AVX2``, ``AVX512``, ``DEFAULT`` ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def machine_key(device_type: str = "cpu") -> str:
    """The key a probe's result is stored under: it changes when the machine does."""
    parts = [cpu_model(), f"{os.cpu_count()} cores", cpu_capability(), f"torch {torch.__version__}",
             f"{torch.get_num_threads()} threads"]
    parts += [f"{name}={os.environ[name]}" for name in KERNEL_VARIABLES if os.environ.get(name)]
    if device_type == "cuda" and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    return " | ".join(parts)


def _read() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else {}


def _write(data: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only or full disk: the probe runs again next time


def remembered(name: str, measure: Callable[[], float], *, device_type: str = "cpu", fresh: bool = False) -> float:
    """``measure()``'s result for this machine, from the cache when it is there."""
    key = machine_key(device_type)
    data = _read()
    entry = data.get("machines", {}).get(key, {})
    if not fresh and isinstance(entry.get(name), (int, float)) and entry[name] > 0:
        return float(entry[name])
    value = float(measure())
    data = _read()  # another process may have written meanwhile
    data["format"] = CACHE_FORMAT
    data.setdefault("machines", {}).setdefault(key, {})[name] = value
    _write(data)
    return value


def forget() -> None:
    """Drop this machine's cached measurements (``lmforge env --remeasure``)."""
    data = _read()
    for device_type in ("cpu", "cuda"):
        data.get("machines", {}).pop(machine_key(device_type), None)
    if data:
        _write(data)
