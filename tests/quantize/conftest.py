"""Shared fixtures of the quantization tests: one thread, and tiny trained runs per family."""

from __future__ import annotations

import pytest

from lmforge.train.loop import train
from tests.tiny_runs import one_thread, run_config


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """preset -> run directory of a tiny trained run (made once, on first use)."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, object] = {}

    def get(preset: str):
        if preset not in made:
            with one_thread():
                made[preset] = train(run_config(root, preset, preset), quiet=True, log=lambda _: None).run_dir
        return made[preset]

    return get
