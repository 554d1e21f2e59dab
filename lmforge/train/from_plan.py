"""A training config from a plan: `lmforge plan ... --emit-config run.yaml`.

The planner's compute-optimal N under one law becomes a Llama-style shape
(``plan.shapes.shape_for_params``), its D becomes ``train.max_tokens``; the batch and
learning rate follow GPT-3's table for models of that size (Brown et al. 2020,
Table 2.1: 0.5M-token batches and lr 6e-4 at 125M parameters, falling to 1.2e-4 at
175B). ``report.json`` of the run then sets the measured loss, speed and memory beside
what ``plan.json`` predicted. Imports no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge.errors import UserError
from lmforge.plan.laws import get_law
from lmforge.plan.planner import Plan
from lmforge.plan.specs import ModelSpec
from lmforge.train.config import RunConfig, build_config, save_config

# GPT-3 Table 2.1: (parameters, learning rate, batch in tokens).
_GPT3 = [(125e6, 6.0e-4, 0.5e6), (350e6, 3.0e-4, 0.5e6), (760e6, 2.5e-4, 0.5e6), (1.3e9, 2.0e-4, 1e6),
         (2.7e9, 1.6e-4, 1e6), (6.7e9, 1.2e-4, 2e6), (13e9, 1.0e-4, 2e6), (175e9, 0.6e-4, 3.2e6)]


def gpt3_hyperparameters(n_params: float) -> tuple[float, int]:
    """(learning rate, batch tokens) interpolated in log N from GPT-3 Table 2.1; small
    models below 125M keep 6e-4 with a batch of 64K tokens (what a single GPU holds)."""
    if n_params < _GPT3[0][0]:
        return 6e-4, 65536
    for (n0, lr0, b0), (n1, lr1, b1) in zip(_GPT3, _GPT3[1:], strict=False):
        if n_params <= n1:
            t = math.log(n_params / n0) / math.log(n1 / n0)
            return lr0 + t * (lr1 - lr0), int(b0 if t < 0.5 else b1)
    return _GPT3[-1][1], int(_GPT3[-1][2])


def config_from_plan(shape: ModelSpec, n_tokens: float, *, name: str = "planned", seq_len: int = 2048) -> RunConfig:
    """A RunConfig that trains ``shape`` on ``n_tokens`` tokens."""
    seq_len = min(seq_len, shape.context)
    lr, batch_tokens = gpt3_hyperparameters(shape.n_decoder_layers * 12 * shape.d_model**2)
    batch_tokens = max(seq_len * 8, batch_tokens // seq_len * seq_len)
    return build_config({
        "name": name,
        "model.preset": "tiny-llama",  # the style: rotary, RMSNorm, SwiGLU, no biases, untied
        "model.n_layers": shape.n_decoder_layers,
        "model.d_model": shape.d_model,
        "model.n_heads": shape.n_heads,
        "model.n_kv_heads": shape.kv_heads,
        "model.d_ff": shape.ffn,
        "model.context": shape.context,
        "data.vocab_size": shape.vocab_size,
        "data.seq_len": seq_len,
        "train.lr": lr,
        "train.batch_tokens": batch_tokens,
        "train.micro_batch": 8 if (batch_tokens // seq_len) % 8 == 0 else 1,
        "train.max_tokens": str(int(n_tokens)),
        "train.warmup_steps": 2000 if n_tokens > 1e10 else 100,
    })


def emit_training_config(plan: Plan, law: str, path: str) -> str:
    """Write the training config for ``law``'s row of ``plan`` (YAML, atomically).

    """
    name = get_law(law).name
    row = next((r for r in plan.rows if r.allocation.law == name), None)
    if row is None:
        raise UserError("--emit-law is not among the planned laws", law, "add it to --laws or pick another")
    if row.shape is None:
        raise UserError("no runnable shape for this law's size", law, row.shape_note or "pick another budget")
    target = Path(path)
    if not target.parent.is_dir():
        raise UserError("the folder for --emit-config does not exist", str(target.parent), "create it first")
    save_config(config_from_plan(row.shape, row.allocation.n_tokens, name=target.stem), target)
    return str(target)
