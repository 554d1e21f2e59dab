"""Whether a run trains a ``torch.compile``d model: by measurement on this machine, not by
assumption (``train.compile: auto``, the default).

Compiling (TorchDynamo + Inductor) fuses the elementwise work between matmuls (norms,
GELU, the loss's casts) but costs a compilation up front: tens of seconds on a laptop CPU,
a minute or more for a large model. So ``auto``:

1. stays uncompiled where compiling cannot work here: no C++ compiler on a CPU (Inductor
   writes C++), or ``torch.compile`` unavailable in this Python;
2. stays uncompiled when the run is too short to repay any compilation: planned
   training seconds below ``MIN_PLANNED_SECONDS`` (the quickstart, the tests);
3. otherwise times the run's model compiled, the way the speed calibration timed it
   uncompiled (`lmforge.train.calibrate`, same micro-batch, precision and loss), and
   compiles when the compiled step is at least ``GAIN`` times faster AND the time saved
   over the planned steps exceeds the compilation it took. A compilation that fails is
   a "no", with its first line said.

``LMFORGE_COMPILE=0|1`` forces the outcome of steps 2-3 (as ``LMFORGE_CPU_BF16`` forces the
bf16 probe), so tests can take both paths. The choice is written into the run's
``config.yaml`` (``train.compile: true|false``), so a resumed run continues in the same mode.
``train.compile: true`` compiles without measuring; ``false`` never compiles.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmforge.errors import UserError
from lmforge.train.calibrate import Calibration

ENV_VAR = "LMFORGE_COMPILE"
MIN_PLANNED_SECONDS = 600.0  # below ten minutes of training, a compilation rarely pays for itself
GAIN = 1.05  # a compiled step must be at least 5% faster


@dataclass(frozen=True)
class CompileChoice:
    """The decision and why, for the run's log."""

    compile: bool
    reason: str
    compiled: Calibration | None = None  # the compiled model's timing, when it was measured and chosen

    def line(self) -> str:
        return f"compile: {'yes' if self.compile else 'no'} ({self.reason})"


def forced() -> bool | None:
    """``LMFORGE_COMPILE`` as True/False, None when unset; UserError for another value."""
    value = os.environ.get(ENV_VAR)
    if value is None or value == "":
        return None
    if value not in ("0", "1"):
        raise UserError(f"{ENV_VAR} must be 0 or 1", value, f"unset it to measure, or {ENV_VAR}=1 to compile")
    return value == "1"


def cannot_compile(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here, or None."""
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        return f"torch.compile is not supported on Python {sys.version_info.major}.{sys.version_info.minor} " \
               f"with torch {torch.__version__}"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler on this machine (Inductor writes C++ for the CPU)"
    return None


def choose_compile(requested: bool | str, device: torch.device, *, planned_steps: int, accumulation: int,
                   eager: Calibration | None, measure_compiled: Callable[[], Calibration],
                   max_seconds: float | None = None) -> CompileChoice:
    """The decision for ``train.compile: requested`` (see the module docstring); the run
    plans ``planned_steps`` steps of ``accumulation`` micro-batches, or ``max_seconds``
    (``train.max_time``) if that ends it sooner.

    ``eager``: the uncompiled calibration (None when the speed was not calibrated, e.g.
    ``train.expected_mfu``, or a model no single device holds: then nothing is measured and
    ``auto`` stays uncompiled); ``measure_compiled()`` times the compiled model.
    """
    if requested is False:
        return CompileChoice(False, "train.compile false")
    why_not = cannot_compile(device)
    if requested is True:
        if why_not is not None:
            raise UserError("train.compile true cannot compile here", why_not,
                            "install a C++ compiler (g++), or use train.compile auto (which then trains uncompiled)")
        return CompileChoice(True, "train.compile true")
    if why_not is not None:
        return CompileChoice(False, why_not)
    force = forced()
    if force is not None:
        return CompileChoice(force, f"{ENV_VAR}={int(force)}")
    if eager is None:
        return CompileChoice(False, "the speed was not calibrated here, so there is nothing to compare; "
                                    "train.compile true compiles")
    eager_step = eager.step_seconds(accumulation)
    if max_seconds is not None:
        planned_steps = min(planned_steps, int(max_seconds / eager_step))
    planned = planned_steps * eager_step
    if planned < MIN_PLANNED_SECONDS:
        return CompileChoice(False, f"planned {planned / 60:.1f} min of training: too short to repay a "
                                    f"compilation (measured from {MIN_PLANNED_SECONDS / 60:.0f} min)")
    try:
        compiled = measure_compiled()
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler means: do not compile
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return CompileChoice(False, f"torch.compile failed here ({type(exc).__name__}: {first})")
    compiled_step = compiled.step_seconds(accumulation)
    speedup = eager_step / compiled_step
    saved = planned_steps * (eager_step - compiled_step)
    measured = f"compiled step {compiled_step:.3g} s vs {eager_step:.3g} s uncompiled ({speedup:.2f}x); " \
               f"compiling took {compiled.compile_seconds:.0f} s"
    if speedup >= GAIN and saved > compiled.compile_seconds:
        return CompileChoice(True, f"{measured}, saves ~{saved / 60:.0f} min", compiled)
    return CompileChoice(False, f"{measured}: not worth it")
