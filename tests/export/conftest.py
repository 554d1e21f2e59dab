"""Shared fixtures of the export tests: one thread, and small trained runs per layout.

The runs train long enough on the order-2 Markov source (lmforge.data.builtin) that their
next-token distributions are peaked: greedy continuations then do not hinge on a near tie,
so two implementations computing the same logits must pick the same tokens.
"""

from __future__ import annotations

import pytest
import torch

from lmforge.train.config import load_config
from lmforge.train.loop import train

MARKOV = "markov=builtin:markov"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(out_dir, name: str, preset: str, **values):
    """40 steps of a tiny preset on the Markov source, byte-level vocabulary of 512 (152 merges)."""
    base = {
        "name": name, "out_dir": str(out_dir), "data.sources": [MARKOV], "data.vocab_size": 512,
        "data.seq_len": 32, "model.preset": preset, "train.batch_tokens": 512, "train.micro_batch": 16,
        "train.max_steps": 40, "train.warmup_steps": 4, "train.eval_every": 1000, "train.eval_tokens": 2048,
        "train.ckpt_every": 1000, "train.log_every": 1000, "train.lr": 3e-3,
    }
    base.update(values)
    return load_config(None, base)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(preset, **model overrides) -> run directory of a small trained run, made once."""
    root = tmp_path_factory.mktemp("export-runs")
    made: dict[tuple, object] = {}

    def get(preset: str, **overrides):
        key = (preset, tuple(sorted(overrides.items())))
        if key not in made:
            name = preset + "".join(f"-{k}-{v}" for k, v in sorted(overrides.items()))
            values = {f"model.{k}": v for k, v in overrides.items()}
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                made[key] = train(run_config(root, name, preset, **values), quiet=True, log=lambda _: None).run_dir
            finally:
                torch.set_num_threads(before)
        return made[key]

    return get
