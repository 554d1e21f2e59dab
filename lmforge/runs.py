"""The one run loader: any run directory (trained, quantized, imported) as a `LoadedRun`.

What ``lmforge eval``, ``generate``, ``fill-mask``, ``quantize``, ``export`` and
``lmforge.api.generate`` load. A run directory holds ``config.yaml`` (the model is its
preset with the overrides, `lmforge.train.model_setup.model_spec`), ``tokenizer.json`` and
the weights: ``model.safetensors`` when training finished (or the run was quantized or
imported), else the latest checkpoint's. A quantized run (``quantization.json``, written by
``lmforge quantize``) is built on the meta device with its quantized modules and the
file's tensors assigned to them (no float copy is made); see `lmforge.quantize.load`.
Tied weights are tied again through each model's ``tie_weights()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.quantize.load import load_quantized, read_quantization
from lmforge.train.checkpoint import latest_checkpoint, load_weights
from lmforge.train.config import RunConfig, load_config
from lmforge.train.model_setup import model_spec

LAYOUTS = ("auto", "plain")


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    tokenizer: Tokenizer
    spec: ModelSpec
    model: torch.nn.Module  # in eval mode, on the CPU
    weights: Path  # the file the weights came from
    compute: str = "fp32"  # the dtype (and quantized linears' path) it computes in here, and why
    quantization: dict | None = None  # the run's quantization.json, when it is quantized


def weights_file(run_dir: Path) -> Path:
    """RUN_DIR/model.safetensors, else the latest checkpoint's weights."""
    final = run_dir / "model.safetensors"
    if final.is_file():
        return final
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and (checkpoint / "model.safetensors").is_file():
        return checkpoint / "model.safetensors"
    raise UserError("the run directory has no weights", str(run_dir), "train it first, or check the path")


def load_run(run_dir: str | Path, *, layout: str = "auto") -> LoadedRun:
    """The run's model with its weights, in eval mode on the CPU.

    Quantized runs come as quantized modules computing as
    `lmforge.quantize.paths.compute_plan` finds fastest here (``LoadedRun.compute`` says
    how): ``layout="auto"`` re-lays int4 weights for PyTorch's bf16 CPU kernel where the
    shapes allow and that path is taken (same bytes); ``"plain"`` keeps the file's layout
    and dtypes (to dequantize, export or re-save). Plain runs ignore ``layout``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found", str(run_dir), "pass the RUN_DIR that lmforge train wrote")
    info = read_quantization(run_dir)
    for needed in ("config.yaml", "tokenizer.json"):
        if not (run_dir / needed).is_file():
            fix = "quantize the source run again (lmforge quantize SOURCE --force)" if info else (
                "pass a directory written by lmforge train, quantize or import")
            raise UserError(f"the run directory has no {needed}", str(run_dir), fix)
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    spec = model_spec(config.model, tokenizer.vocab_size, config.data.seq_len)
    if info is not None:
        model, weights, compute = load_quantized(run_dir, spec, info, layout)
    else:
        weights, compute = weights_file(run_dir), "fp32"
        model = build_model(spec)
        load_weights(weights, model)  # UserError for a corrupt or mismatched file
    model.eval()
    return LoadedRun(run_dir, config, tokenizer, spec, model, weights, compute, info)
