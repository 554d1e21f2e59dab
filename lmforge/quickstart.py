"""`lmforge quickstart`: the whole loop on the built-in corpus, offline, in minutes.

Tokenizer (byte-level BPE, 4,096 tokens) and token shards from the documentation
strings of this Python's standard library, a GPT-2-style model of about 1.4M
parameters trained for about ``minutes`` on this machine, its validation loss and bits
per byte, and a sample of generated text. The precision is the run's ``auto`` choice
(`lmforge.train.precision`: bf16 only where this CPU computes it fast). The token budget
is fixed before training from a few timed training steps of the same model, precision
and micro-batch on this machine (`lmforge.train.calibrate`, the calibration the run's
``plan.json`` then reports), so that the learning-rate schedule is known in advance and
training plus its evaluations fill ``minutes``; the wall-clock limit is a safety stop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lmforge.plan.presets import get_preset
from lmforge.train.calibrate import calibrate
from lmforge.train.config import ModelConfig, load_config
from lmforge.train.loop import TrainResult, pick_device, train
from lmforge.train.model_setup import model_spec
from lmforge.train.precision import PrecisionChoice, choose_precision

PRESET = "tiny-gpt2"
SEQ_LEN = 128
MICRO_BATCH = 16
BATCH_SEQUENCES = 32  # per optimizer step: 2 micro-batches
EVAL_EVERY = 200
EVAL_TOKENS = 65536
SPEED_MARGIN = 0.9  # logging, checkpoints and the rank's other work take the rest of the time
PROMPT = "Return the"


def free_run_dir(out_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` ... if that run directory is taken."""
    candidate, index = name, 1
    while (out_dir / candidate).exists():
        index += 1
        candidate = f"{name}-{index}"
    return candidate


def quickstart_tokens(minutes: float, device, precision: PrecisionChoice) -> int:
    """Tokens whose training and evaluations fill ``minutes``, from a few timed training
    steps (and evaluation forwards) of the quickstart model in ``precision``."""
    spec = model_spec(ModelConfig(preset=PRESET), get_preset(PRESET).spec.vocab_size, SEQ_LEN)
    speed = calibrate(spec, seq_len=SEQ_LEN, micro_batch=MICRO_BATCH, precision=precision.precision, device=device)
    accumulation = BATCH_SEQUENCES // MICRO_BATCH
    step_seconds = speed.step_seconds(accumulation)
    eval_seconds = speed.eval_seconds(EVAL_TOKENS)
    # steps s: s x step + ceil(s / EVAL_EVERY) x eval = budget, taking ceil(s / E) ~ s / E + 1
    budget = minutes * 60 * SPEED_MARGIN - eval_seconds
    steps = max(1, int(budget / (step_seconds + eval_seconds / EVAL_EVERY)))
    return max(BATCH_SEQUENCES * SEQ_LEN, steps * BATCH_SEQUENCES * SEQ_LEN)


def run_quickstart(out_dir: Path, name: str, *, minutes: float = 2.0, quiet: bool = False,
                   log: Callable[[str], None] = print) -> TrainResult:
    """Train, evaluate and sample; print where everything went."""
    from lmforge.errors import check_positive
    from lmforge.generate.sample import sample
    from lmforge.train.run_dir import load_run

    check_positive("--minutes", minutes, upper=24 * 60)
    name = free_run_dir(out_dir, name)
    device = pick_device("auto")
    precision = choose_precision("auto", device)
    tokens = quickstart_tokens(minutes, device, precision)
    config = load_config(None, {
        "name": name, "out_dir": str(out_dir), "model.preset": PRESET, "data.sources": ["pydocs=builtin:pydocs"],
        "data.vocab_size": get_preset(PRESET).spec.vocab_size, "data.seq_len": SEQ_LEN,
        "train.batch_tokens": BATCH_SEQUENCES * SEQ_LEN, "train.micro_batch": MICRO_BATCH,
        "data.max_epochs": 10.0, "train.lr": 2e-3, "train.warmup_steps": 30,
        "train.max_tokens": str(tokens), "train.max_time": minutes * 60 * 1.25, "train.eval_every": EVAL_EVERY,
        "train.eval_tokens": EVAL_TOKENS,
        "train.ckpt_every": 500, "train.log_every": 10,
    })
    log(f"quickstart: training {PRESET} on the standard library's docstrings for about {minutes:g} min "
        f"({tokens:,} tokens, {precision.precision}) in {config.run_dir}")
    result = train(config, quiet=quiet, log=log)
    val = result.validation["all"]
    log(f"validation: {val.loss:.3f} nats/token, perplexity {val.perplexity:.1f}, "
        f"{val.bits_per_byte:.3f} bits per byte ({val.tokens:,} held-out tokens)")
    run = load_run(result.run_dir)
    prompt = run.tokenizer.encode(PROMPT)
    new = sample(run.model, prompt, 60, temperature=0.8, top_k=40, seed=0, eos_id=run.tokenizer.eos_id)
    text = re.sub(r"\n\s*\n+", "\n", PROMPT + run.tokenizer.decode(new))
    log(f"sample (temperature 0.8, top-k 40):\n{text}")
    run_dir = result.run_dir
    log(f"everything is in {run_dir}: config.yaml, tokenizer.json, data/ (shards), plan.json, metrics.jsonl, "
        f"checkpoints/, model.safetensors, plots/loss.png, report.json")
    log(f"next: lmforge eval {run_dir}  |  lmforge train --resume {run_dir} --train.max_tokens {2 * tokens}")
    return result
