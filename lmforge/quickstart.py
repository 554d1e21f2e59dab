"""`lmforge quickstart`: the whole loop on the built-in corpus, offline, in minutes.

Tokenizer (byte-level BPE, 4,096 tokens) and token shards from the documentation
strings of this Python's standard library, a GPT-2-style model of about 1.4M
parameters trained for about ``minutes`` on this machine, its validation loss and bits
per byte, and a sample of generated text. The token budget is fixed before training
from a few timed training steps of the same model on this machine (so the
learning-rate schedule is known in advance); the wall-clock limit is a safety stop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from lmforge.plan.presets import get_preset
from lmforge.train.config import load_config
from lmforge.train.loop import TrainResult, pick_device, train

PRESET = "tiny-gpt2"
SEQ_LEN = 128
MICRO_BATCH = 16
SPEED_MARGIN = 0.8  # evaluation, logging and checkpoints take the rest of the time
PROMPT = "Return the"


def free_run_dir(out_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` ... if that run directory is taken."""
    candidate, index = name, 1
    while (out_dir / candidate).exists():
        index += 1
        candidate = f"{name}-{index}"
    return candidate


def quickstart_tokens(minutes: float, device, steps: int = 4) -> int:
    """Tokens that fill ``minutes``: a few timed training steps of the quickstart model."""
    import torch

    from lmforge.models.build import build_model
    from lmforge.train.optim import build_optimizer

    spec = get_preset(PRESET).spec
    model = build_model(spec).to(device)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    batch = torch.randint(0, spec.vocab_size, (MICRO_BATCH, SEQ_LEN + 1), device=device)
    elapsed = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(batch[:, :-1])
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed.append(time.perf_counter() - start)
    rate = MICRO_BATCH * SEQ_LEN / min(elapsed[1:])
    return max(100_000, int(minutes * 60 * rate * SPEED_MARGIN))


def run_quickstart(out_dir: Path, name: str, *, minutes: float = 2.0, quiet: bool = False,
                   log: Callable[[str], None] = print) -> TrainResult:
    """Train, evaluate and sample; print where everything went."""
    from lmforge.errors import check_positive
    from lmforge.generate.sample import sample
    from lmforge.train.run_dir import load_run

    check_positive("--minutes", minutes, upper=24 * 60)
    name = free_run_dir(out_dir, name)
    device = pick_device("auto")
    tokens = quickstart_tokens(minutes, device)
    config = load_config(None, {
        "name": name, "out_dir": str(out_dir), "model.preset": PRESET, "data.sources": ["pydocs=builtin:pydocs"],
        "data.vocab_size": get_preset(PRESET).spec.vocab_size, "data.seq_len": SEQ_LEN,
        "train.batch_tokens": 32 * SEQ_LEN, "train.micro_batch": MICRO_BATCH,
        "data.max_epochs": 10.0, "train.lr": 2e-3, "train.warmup_steps": 30,
        "train.max_tokens": str(tokens), "train.max_time": minutes * 60 * 1.25, "train.eval_every": 200,
        "train.ckpt_every": 500, "train.log_every": 10,
    })
    log(f"quickstart: training {PRESET} on the standard library's docstrings for about {minutes:g} min "
        f"({tokens:,} tokens) in {config.run_dir}")
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
