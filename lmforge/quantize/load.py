"""Load any run directory, quantized or not, as a `LoadedRun` (what ``lmforge generate``,
``lmforge eval``, ``lmforge fill-mask`` and ``lmforge.api.generate`` use).

A quantized run directory (written by ``lmforge quantize``) holds ``quantization.json``;
its model is built on the meta device, the quantized modules are swapped in empty, and
the file's tensors are assigned to them (no float copy of the weights is ever made).
Any other run directory goes to ``lmforge.train.run_dir.load_run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.quantize.convert import Scheme, make_scheme, quantized_skeleton
from lmforge.quantize.paths import apply_compute_plan, compute_plan
from lmforge.quantize.store import load_tensors
from lmforge.train.checkpoint import fit_problems
from lmforge.train.config import load_config
from lmforge.train.model_setup import model_spec
from lmforge.train.run_dir import LoadedRun, load_run

QUANT_FILE = "quantization.json"
QUANT_FORMAT = 1  # bump when the layout of quantized files changes
LAYOUTS = ("auto", "plain")


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


def load_any_run(run_dir: str | Path, *, layout: str = "auto") -> LoadedRun:
    """The run's model with its weights, in eval mode on the CPU; quantized runs as quantized
    modules, computing as `lmforge.quantize.paths.compute_plan` finds fastest here
    (``LoadedRun.compute`` says how).

    ``layout="auto"`` re-lays int4 weights for PyTorch's bf16 CPU kernel where the shapes
    allow and that path is taken (same bytes); ``"plain"`` keeps the file's layout and
    dtypes (to dequantize or re-save).
    """
    run_dir = Path(run_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not run_dir.is_dir():
        raise UserError("run directory not found", str(run_dir), "pass the RUN_DIR that lmforge train wrote")
    info = read_quantization(run_dir)
    if info is None:
        return load_run(run_dir)
    for needed in ("config.yaml", "tokenizer.json", "model.safetensors"):
        if not (run_dir / needed).is_file():
            raise UserError(f"the quantized run directory has no {needed}", str(run_dir),
                            "quantize the source run again (lmforge quantize SOURCE --force)")
    scheme = scheme_of(info)
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    spec = model_spec(config.model, tokenizer.vocab_size, config.data.seq_len)
    with torch.device("meta"):
        model = build_model(spec)
    quantized_skeleton(model, scheme)
    weights = run_dir / "model.safetensors"
    tensors, _ = load_tensors(weights)
    _check_fits(tensors, model.state_dict(), weights)
    model.load_state_dict(tensors, strict=True, assign=True)
    _retie(model)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise UserError(f"the weights file lacks {len(left)} tensors (e.g. {left[0]})", str(weights),
                        "quantize the source run again")
    compute = f"{scheme.label} as stored"
    if layout == "auto":
        plan = compute_plan(scheme.dtype, scheme.precision)
        apply_compute_plan(model, plan, layout)
        compute = plan.describe(scheme.precision)
    model.eval()
    return LoadedRun(run_dir, config, tokenizer, spec, model, weights, compute)


def _check_fits(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: Path) -> None:
    problems = fit_problems(tensors, expected, "file", check_dtype=True)
    if problems:
        raise UserError("quantized weights do not fit the model: " + "; ".join(problems), str(where),
                        "the run's config.yaml, tokenizer.json and quantization.json must be those it was written "
                        "with; quantize the source run again")


def _retie(model: nn.Module) -> None:
    """Tie a 16-bit output head to the token embedding again (loading by assignment gives
    each name its own Parameter; the quantized tied pair already shares its buffers)."""
    spec = getattr(model, "spec", None)
    if spec is None or not spec.tied_embeddings or not isinstance(getattr(model, "tok_emb", None), nn.Embedding):
        return
    head = getattr(model, "lm_head", None)
    if head is None and getattr(model, "head", None) is not None:
        head = model.head.out
    if isinstance(head, nn.Linear):
        head.weight = model.tok_emb.weight
