"""Shared fixtures of the export tests: one thread, and small trained runs per layout.

The runs train 40 steps on the order-2 Markov source with a 512-token vocabulary (152
merges), long enough that their next-token distributions are peaked: greedy continuations
then do not hinge on a near tie, so two implementations computing the same logits must
pick the same tokens.
"""

from __future__ import annotations

import pytest

from lmforge.train.loop import train
from tests.tiny_runs import one_thread, run_config

TRAINED = {"data.vocab_size": 512, "train.max_steps": 40, "train.warmup_steps": 4}


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(preset, **model overrides) -> run directory of a small trained run, made once."""
    root = tmp_path_factory.mktemp("export-runs")
    made: dict[tuple, object] = {}

    def get(preset: str, **overrides):
        key = (preset, tuple(sorted(overrides.items())))
        if key not in made:
            name = preset + "".join(f"-{k}-{v}" for k, v in sorted(overrides.items()))
            values = {**TRAINED, **{f"model.{k}": v for k, v in overrides.items()}}
            with one_thread():
                made[key] = train(run_config(root, name, preset, **values), quiet=True, log=lambda _: None).run_dir
        return made[key]

    return get
