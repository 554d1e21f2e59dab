"""What an export reads from a run: its fp32 weights by lmforge name, each tensor once.

A quantized run (``lmforge quantize``) is loaded in its stored layout and dequantized
(`lmforge.quantize.convert.dequantize_model`): the float weights it computes with, which
a format without lmforge's quantized layout stores (the note says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.runs import LoadedRun, load_run


@dataclass
class ExportSource:
    run: LoadedRun
    weights: dict[str, torch.Tensor]  # lmforge name -> fp32 tensor (contiguous, CPU); tied names all present
    dequantized: str | None  # the quantization label ("int8", "int4-g32", ...) when dequantized, else None

    @property
    def note(self) -> str | None:
        if self.dequantized is None:
            return None
        return f"the run is quantized ({self.dequantized}): its dequantized float weights are exported"


def export_source(run_dir) -> ExportSource:
    """Load ``run_dir`` (any run directory) and its fp32 weights for an exporter."""
    run = load_run(run_dir, layout="plain")
    label = None
    if run.quantization is not None:
        from lmforge.quantize.convert import dequantize_model

        dequantize_model(run.model, torch.float32)
        label = str(run.quantization.get("label") or run.quantization["scheme"].get("precision"))
    state = run.model.state_dict(keep_vars=False)
    weights = {name: t.detach().to(torch.float32).contiguous() for name, t in state.items() if t.is_floating_point()}
    return ExportSource(run, weights, label)
