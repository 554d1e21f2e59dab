"""`lmforge quickstart`: the whole loop on the built-in corpus, offline, in minutes.

Tokenizer (byte-level BPE, 1,024 tokens) and token shards from the documentation
strings of this Python's standard library; then ``lmforge train --budget MINUTES``: the
planner picks the GPT-2-style model and the token count that minimise the loss lmforge's
default law predicts for what this machine computes in that time (`lmforge.train.budget`:
a few timed steps of the candidate shapes; the law was fitted with ``lmforge scaling
sweep`` on ``builtin:pydocs`` with these tokenizer settings, see the README). It prints
the validation loss the law predicts and the one measured, bits per byte, and a sample
of generated text. The precision is the run's ``auto`` choice (`lmforge.train.precision`:
bf16 only where this CPU computes it fast); the wall-clock limit is a safety stop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lmforge.train.config import load_config
from lmforge.train.loop import TrainResult, train

PRESET = "tiny-gpt2"  # the style: GELU, LayerNorm, learned positions, tied embeddings
VOCAB_SIZE = 1024  # the default law's tokenizer (lmforge/plan/pydocs_law.json)
SEQ_LEN = 128
PROMPT = "Return the"


def free_run_dir(out_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` ... if that run directory is taken."""
    candidate, index = name, 1
    while (out_dir / candidate).exists():
        index += 1
        candidate = f"{name}-{index}"
    return candidate


def run_quickstart(out_dir: Path, name: str, *, minutes: float = 2.0, quiet: bool = False,
                   log: Callable[[str], None] = print) -> TrainResult:
    """Train, evaluate and sample; print where everything went."""
    from lmforge.errors import check_positive
    from lmforge.generate.config import GenerateConfig
    from lmforge.generate.engine import generate
    from lmforge.runs import load_run

    check_positive("--minutes", minutes, upper=24 * 60)
    name = free_run_dir(out_dir, name)
    config = load_config(None, {
        "name": name, "out_dir": str(out_dir), "model.preset": PRESET, "data.sources": ["pydocs=builtin:pydocs"],
        "data.vocab_size": VOCAB_SIZE, "data.seq_len": SEQ_LEN, "data.max_epochs": 100.0,
        "train.budget": f"{minutes * 60:g}s", "train.max_time": minutes * 60 * 1.25, "train.log_every": 10,
    })
    log(f"quickstart: training on the standard library's docstrings for about {minutes:g} min in {config.run_dir}; "
        "the planner sizes the model for this machine")
    result = train(config, quiet=quiet, log=log)
    val = result.validation["all"]
    log(f"validation: {val.loss:.3f} nats/token, perplexity {val.perplexity:.1f}, "
        f"{val.bits_per_byte:.3f} bits per byte ({val.tokens:,} held-out tokens)")
    predicted = _predicted_loss(result.run_dir)
    if predicted is not None:
        log(f"predicted validation loss {predicted:.3f}, measured {val.loss:.3f} (law: lmforge's pydocs fit)")
    run = load_run(result.run_dir)
    (out,) = generate(run.model, run.tokenizer, [PROMPT], GenerateConfig(max_new_tokens=60, temperature=0.8, top_k=40))
    text = re.sub(r"\n\s*\n+", "\n", PROMPT + out.text)
    log(f"sample (temperature 0.8, top-k 40):\n{text}")
    run_dir = result.run_dir
    log(f"everything is in {run_dir}: config.yaml, tokenizer.json, data/ (shards), plan.json, metrics.jsonl, "
        f"checkpoints/, model.safetensors, plots/loss.png, report.json")
    log(f"next: lmforge report {run_dir}  |  lmforge eval {run_dir}  |  lmforge generate {run_dir} "
        f"--prompt \"{PROMPT}\"")
    return result


def _predicted_loss(run_dir: Path) -> float | None:
    import json

    return json.loads((run_dir / "plan.json").read_text(encoding="utf-8")).get("loss")
