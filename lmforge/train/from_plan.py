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
from lmforge.plan.specs import ModelSpec, param_counts
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


SMALL_LR = 2e-3  # lmforge's tuned rate at quickstart's 1.35M parameters (tiny-gpt2, batch 4K tokens)
SMALL_LR_MAX = 3e-3
MIN_STEPS = 100  # a planned small run takes at least this many optimizer steps where its tokens allow
SMALL_BATCH_SEQUENCES = 32  # the batch of every small run with tokens for MIN_STEPS of it (one batch for a sweep)


def small_model_lr(n_params: float) -> float:
    """Learning rate for models below GPT-3's smallest (125M): log-linear in N from 2e-3 at
    1.35M parameters (lmforge's quickstart) to GPT-3's 6e-4 at 125M (Brown et al. 2020,
    Table 2.1), capped at 3e-3. lmforge's interpolation, not a published rule."""
    if n_params >= _GPT3[0][0]:
        return gpt3_hyperparameters(n_params)[0]
    slope = math.log(_GPT3[0][1] / SMALL_LR) / math.log(_GPT3[0][0] / 1.35e6)
    return min(SMALL_LR_MAX, SMALL_LR * (n_params / 1.35e6) ** slope)


def planned_overrides(spec: ModelSpec, n_tokens: int, seq_len: int) -> dict:
    """Config overrides that train the decoder ``spec`` on ``n_tokens`` tokens: every
    ModelSpec field, a batch of 32 sequences (fewer, down to 8, where that would leave fewer
    than ``MIN_STEPS`` steps; GPT-3's from 125M), so that the runs of a sweep differ in
    their size and tokens, not their batch; the learning rate of ``small_model_lr``, a cosine schedule over exactly the
    run's steps with a warmup of 5% of them (at most 100), evaluations at the end only."""
    n_params = spec.n_decoder_layers * 12 * spec.d_model**2
    if param_counts(spec).total < _GPT3[0][0]:
        sequences = 2 ** int(math.log2(max(1.0, n_tokens / (seq_len * MIN_STEPS))))
        sequences = max(8, min(SMALL_BATCH_SEQUENCES, sequences))
    else:
        sequences = max(8, gpt3_hyperparameters(n_params)[1] // seq_len)
    micro = math.gcd(sequences, 16)
    steps = max(1, math.ceil(n_tokens / (sequences * seq_len)))
    preset = "tiny-gpt2" if spec.positions == "learned" else "tiny-llama"
    return {
        "model.preset": preset, "model.n_layers": spec.n_decoder_layers, "model.d_model": spec.d_model,
        "model.n_heads": spec.n_heads, "model.n_kv_heads": spec.kv_heads, "model.d_ff": spec.ffn,
        "model.context": spec.context, "model.mlp": spec.mlp, "model.norm": spec.norm,
        "model.positions": spec.positions, "model.bias": spec.bias, "model.tied_embeddings": spec.tied_embeddings,
        "data.seq_len": seq_len, "train.lr": small_model_lr(param_counts(spec).total),
        "train.batch_tokens": sequences * seq_len, "train.micro_batch": micro,
        "train.max_tokens": str(int(n_tokens)), "train.warmup_steps": max(1, min(100, steps // 20)),
        "train.schedule": "cosine", "train.eval_every": steps,
    }


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
    names = {r.allocation.law for r in plan.rows}
    name = law.strip().lower() if law.strip().lower() in names else get_law(law).name  # "fitted": --law's row
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
