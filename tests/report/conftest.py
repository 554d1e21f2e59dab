"""Tiny trained runs for the report tests, made once per session, on one thread.

Three GPT-2-style runs differing only in learning rate (logged every 2 steps, validated
every 3, so that their curves have points), one sized by tokens under a published law
(so that plan.json predicts a loss), and a Llama-style one (its parameter count from the
safetensors header must match the torch model's as the GPT-2 one's does).
"""

from __future__ import annotations

import pytest

from lmforge.train.loop import train
from tests.tiny_runs import one_thread, run_config

CURVES = {"train.log_every": 2, "train.eval_every": 3}


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def _train(root, name: str, preset: str = "tiny-gpt2", **values):
    with one_thread():
        return train(run_config(root, name, preset, **values), quiet=True, log=lambda _: None).run_dir


@pytest.fixture(scope="session")  # trained once for every report test module
def three_runs(tmp_path_factory):
    """Three finished runs (lr 1e-3, 3e-3, 1e-2): their directories."""
    root = tmp_path_factory.mktemp("report-runs")
    return [_train(root, f"lr{lr:g}", **CURVES, **{"train.lr": lr}) for lr in (1e-3, 3e-3, 1e-2)]


@pytest.fixture(scope="session")  # trained once for every report test module
def law_run(tmp_path_factory):
    """A run sized by tokens (6 steps of 512) whose loss Chinchilla's law predicts."""
    root = tmp_path_factory.mktemp("report-law")
    return _train(root, "law", **{"train.max_steps": None, "train.max_tokens": 3072, "train.law": "chinchilla"})


@pytest.fixture(scope="session")  # trained once for every report test module
def llama_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("report-llama"), "llama", "tiny-llama")
