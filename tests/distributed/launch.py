"""Launch ``lmforge train`` under torchrun (gloo, loopback) from a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

# The tiny run every distributed test shares: 16 sequences of 32 tokens per step, fp32 so
# that strategies can be compared tightly, a checkpoint every 2 steps.
BASE = {
    "data.sources": "markov=builtin:markov", "data.vocab_size": "360", "data.seq_len": "32",
    "model.preset": "tiny-gpt2", "train.batch_tokens": "512", "train.micro_batch": "4", "train.max_steps": "4",
    "train.warmup_steps": "1", "train.eval_every": "1000", "train.eval_tokens": "1024", "train.ckpt_every": "2",
    "train.log_every": "1", "train.precision": "fp32", "train.device": "cpu", "train.lr": "3e-3",
}


def overrides(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        out += [f"--{key}", str(value)]
    return out


def launch(nproc: int | None, values: dict, *extra: str, timeout: float = 240, torchrun: tuple = ()):
    """Run ``lmforge train`` with ``values`` over BASE: under torchrun with ``nproc``
    processes, or as one plain process (``nproc=None``). Returns the CompletedProcess."""
    args = ["train", "--quiet", *overrides({**BASE, **values}), *extra]
    if nproc is None:
        command = [sys.executable, "-m", "lmforge", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   *torchrun, "-m", "lmforge", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def weights(run_dir: Path) -> dict:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def report(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "report.json").read_text())


def losses(run_dir: Path) -> dict[int, float]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}
