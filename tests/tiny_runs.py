"""What the fixtures of tests that train tiny runs share: one thread, and a run config of a
tiny preset on the order-2 Markov source (lmforge.data.builtin)."""

from __future__ import annotations

import contextlib

import torch

from lmforge.train.config import load_config

MARKOV = "markov=builtin:markov"  # order 2 over 8 letters


@contextlib.contextmanager
def one_thread():
    """Tiny models gain nothing from a second thread, and spinning OpenMP threads slow them
    down a hundredfold while another process holds the other core (tests/models/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_config(out_dir, name: str, preset: str, **values):
    """A few steps of a tiny preset on the Markov source, byte-level vocabulary of 360;
    ``values`` (dotted keys) override."""
    base = {
        "name": name, "out_dir": str(out_dir), "data.sources": [MARKOV], "data.vocab_size": 360,
        "data.seq_len": 32, "model.preset": preset, "train.batch_tokens": 512, "train.micro_batch": 16,
        "train.max_steps": 6, "train.warmup_steps": 2, "train.eval_every": 1000, "train.eval_tokens": 2048,
        "train.ckpt_every": 1000, "train.log_every": 1000, "train.lr": 3e-3,
    }
    base.update(values)
    return load_config(None, base)
