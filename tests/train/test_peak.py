"""The peak behind MFU: never zero, cached per machine, and MFU <= 1 by construction."""

from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmforge.train import peak as peak_module
from lmforge.train.machine import cache_path, machine_key
from lmforge.train.metrics import read_metrics
from lmforge.train.peak import Peak, matmul_rate, measured_peak
from tests.train.test_loop import config


def test_the_peak_is_positive_when_one_product_outlasts_the_budget(monkeypatch):
    """The issue-11 failure: warm-up past the deadline left no timed product and a peak of 0.
    Here every product takes 30 ms against a 1 ms budget; the minimum rounds still run."""
    real = torch.matmul

    def slow(a, b):
        time.sleep(0.03)
        return real(a, b)

    monkeypatch.setattr(peak_module.torch, "matmul", slow)
    rate = matmul_rate("cpu", torch.float32, budget_seconds=0.001, sizes=(64, 128))
    assert 0 < rate <= 2 * 64**3 / 0.03  # measured at the first size only, at about the slept rate


def test_the_peak_is_a_median_of_rounds_not_one_lucky_product(monkeypatch):
    """One fast outlier round does not set the peak; the median of the rounds does."""
    clock = iter([0.0, 0.0, 1.0,  # deadline start, warm-up start and end
                  1.0, 2.0, 2.0, 2.0001, 3.0, 4.0])  # rounds of 1 s, 0.1 ms, 1 s
    monkeypatch.setattr(peak_module.time, "perf_counter", lambda: next(clock, 100.0))
    rate = matmul_rate("cpu", torch.float32, budget_seconds=0.0, sizes=(8,))
    assert rate == pytest.approx(2 * 8**3)  # one product per round (warm-up took 1 s), median 1 s


def test_the_peak_is_cached_per_machine_and_dtype(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(peak_module, "matmul_rate", lambda *a, **k: calls.append(a) or 123e9)
    assert measured_peak("cpu", torch.float32) == 123e9
    assert measured_peak("cpu", torch.float32) == 123e9 and len(calls) == 1  # from the cache
    stored = json.loads(cache_path().read_text())["machines"][machine_key("cpu")]
    assert stored["matmul_peak/cpu/float32"] == 123e9
    assert measured_peak("cpu", torch.float32, fresh=True) == 123e9 and len(calls) == 2


def test_a_corrupt_cache_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    cache_path().write_text("{not json")
    monkeypatch.setattr(peak_module, "matmul_rate", lambda *a, **k: 5e9)
    assert measured_peak("cpu", torch.bfloat16) == 5e9


@given(peak=st.floats(1e3, 1e15), world=st.integers(1, 64),
       rates=st.lists(st.floats(0, 1e18), min_size=1, max_size=20))
def test_mfu_never_exceeds_one(peak, world, rates):
    p = Peak(peak, "measured", world)
    for rate in rates:
        assert 0 <= p.mfu(rate) <= 1 + 1e-12
    assert p.raised == any(r > peak * world for r in rates)


def test_a_run_faster_than_its_peak_logs_mfu_at_most_one(tmp_path):
    """A peak far below what the run does (1 kFLOP/s given): the peak is raised to the rate
    reached, every logged MFU <= 1, and the report says the peak was raised."""
    from lmforge.train.loop import train

    lines: list[str] = []
    result = train(config(tmp_path, "fast", **{"train.peak_tflops": "1e-9", "train.max_steps": 4}), quiet=True,
                   log=lines.append)
    mfus = [r["mfu"] for r in read_metrics(result.run_dir / "metrics.jsonl")]
    assert len(mfus) == 4 and all(0 < m <= 1 for m in mfus)
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["measured"]["mfu"] <= 1 and "raised" in report["measured"]["peak_source"]
    assert sum("faster than the measured matmul peak" in line for line in lines) == 1
