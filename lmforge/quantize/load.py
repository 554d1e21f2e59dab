"""A quantized run directory's ``quantization.json`` and its model (`lmforge.runs.load_run`
loads every run directory and calls `load_quantized` for quantized ones).

A quantized run directory (written by ``lmforge quantize``) holds ``quantization.json``;
its model is built on the meta device, the quantized modules are swapped in empty, and
the file's tensors are assigned to them (no float copy of the weights is ever made).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.quantize.convert import Scheme, make_scheme, quantized_skeleton
from lmforge.quantize.paths import apply_compute_plan, compute_plan
from lmforge.tensorfile import load_tensors
from lmforge.train.checkpoint import fit_problems

QUANT_FILE = "quantization.json"
QUANT_FORMAT = 1  # bump when the layout of quantized files changes


def read_quantization(run_dir: str | Path) -> dict | None:
    """The run's ``quantization.json`` as a dict, or None when the run is not quantized."""
    path = Path(run_dir) / QUANT_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"unreadable {QUANT_FILE}: {type(e).__name__}", str(path),
                        "quantize the source run again (lmforge quantize SOURCE --force)") from None
    if not isinstance(info, dict) or not isinstance(info.get("scheme"), dict):
        raise UserError(f"{QUANT_FILE} lacks its 'scheme'", str(path), "quantize the source run again")
    if int(info.get("format", 0)) > QUANT_FORMAT:
        raise UserError("quantized run written by a newer lmforge", str(path), "upgrade lmforge to load it")
    return info


def scheme_of(info: dict) -> Scheme:
    s = info["scheme"]
    return make_scheme(s.get("precision"), s.get("group_size"), s.get("scale_method", "absmax"),
                       s.get("keep_embeddings", True))


def load_quantized(run_dir: Path, spec: ModelSpec, info: dict, layout: str) -> tuple[nn.Module, Path, str]:
    """(model, weights file, how it computes) of a quantized run directory, for
    `lmforge.runs.load_run`: the model built on the meta device, its quantized modules
    swapped in empty and the file's tensors assigned to them; ``layout="auto"`` then sets
    up the fastest compute path here (see `lmforge.runs.load_run`)."""
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise UserError("the quantized run directory has no model.safetensors", str(run_dir),
                        "quantize the source run again (lmforge quantize SOURCE --force)")
    scheme = scheme_of(info)
    with torch.device("meta"):
        model = build_model(spec)
    quantized_skeleton(model, scheme)
    tensors, _ = load_tensors(weights, what="unreadable weights file",
                              fix="quantize the run again (lmforge quantize RUN_DIR --force)")  # 64-byte aligned
    _check_fits(tensors, model.state_dict(), weights)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.tie_weights()  # assignment gives each name its own Parameter; a quantized tied pair shares buffers already
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise UserError(f"the weights file lacks {len(left)} tensors (e.g. {left[0]})", str(weights),
                        "quantize the source run again")
    compute = f"{scheme.label} as stored"
    if layout == "auto":
        plan = compute_plan(scheme.dtype, scheme.precision)
        apply_compute_plan(model, plan, layout)
        compute = plan.describe(scheme.precision)
    return model, weights, compute


def _check_fits(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: Path) -> None:
    problems = fit_problems(tensors, expected, "file", check_dtype=True)
    if problems:
        raise UserError("quantized weights do not fit the model: " + "; ".join(problems), str(where),
                        "the run's config.yaml, tokenizer.json and quantization.json must be those it was written "
                        "with; quantize the source run again")
