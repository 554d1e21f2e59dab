"""Load a trained run directory: its config, tokenizer and model with final weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.train.checkpoint import latest_checkpoint, load_weights
from lmforge.train.config import RunConfig, load_config
from lmforge.train.model_setup import model_spec


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    tokenizer: Tokenizer
    spec: ModelSpec
    model: torch.nn.Module  # in eval mode, on the CPU
    weights: Path  # the file the weights came from
    compute: str = "fp32"  # the dtype (and quantized linears' path) it computes in here, and why


def weights_file(run_dir: Path) -> Path:
    """RUN_DIR/model.safetensors, else the latest checkpoint's weights."""
    final = run_dir / "model.safetensors"
    if final.is_file():
        return final
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and (checkpoint / "model.safetensors").is_file():
        return checkpoint / "model.safetensors"
    raise UserError("the run directory has no weights", str(run_dir), "train it first, or check the path")


def load_run(run_dir: str | Path) -> LoadedRun:
    """The run's model with its trained weights, ready for evaluation or sampling."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found", str(run_dir), "pass the RUN_DIR that lmforge train wrote")
    for needed in ("config.yaml", "tokenizer.json"):
        if not (run_dir / needed).is_file():
            fix = "pass a directory written by lmforge train"
            raise UserError(f"the run directory has no {needed}", str(run_dir), fix)
    config = load_config(run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    spec = model_spec(config.model, tokenizer.vocab_size, config.data.seq_len)
    weights = weights_file(run_dir)
    model = build_model(spec)
    load_weights(weights, model)  # UserError for a corrupt or mismatched file
    model.eval()
    return LoadedRun(run_dir, config, tokenizer, spec, model, weights)
