"""plan.json's speed comes from timed steps of the run's own model; report.json compares it."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.plan.presets import get_preset
from lmforge.train.calibrate import Calibration, calibrate
from lmforge.train.loop import train
from tests.train.test_loop import config, quiet_log


def test_calibration_times_steps_without_touching_the_rng():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    speed = calibrate(get_preset("tiny-gpt2").spec.with_(vocab_size=360), seq_len=32, micro_batch=4, steps=2)
    assert torch.equal(torch.get_rng_state(), state)  # the run's initialisation does not depend on it
    assert speed.micro_batch_seconds > 0 and speed.optimizer_seconds > 0 and speed.eval_micro_batch_seconds > 0


def test_a_step_is_accumulated_micro_batches_plus_one_optimizer_step():
    c = Calibration(micro_batch_seconds=0.2, optimizer_seconds=0.1, eval_micro_batch_seconds=0.05, micro_batch=4,
                    seq_len=32, precision="fp32", device="cpu", timed_steps=3)
    assert c.step_seconds(3) == pytest.approx(0.7)
    assert c.tokens_per_second(3) == pytest.approx(3 * 4 * 32 / 0.7)
    assert c.eval_seconds(129) == pytest.approx(2 * 0.05)  # 129 tokens: two micro-batches of 128


def test_plan_json_predicts_speed_and_precision_and_the_report_compares(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CPU_BF16", "0")
    result = train(config(tmp_path, "p", **{"train.max_steps": 6, "train.eval_every": 3}), quiet=True,
                   log=quiet_log)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["precision"]["precision"] == "fp32" and plan["precision"]["requested"] == "auto"
    assert plan["speed_source"].startswith("calibrated: 5 timed steps")
    assert plan["calibration"]["precision"] == "fp32" and plan["calibration"]["micro_batch"] == 8
    assert plan["tokens_per_second"] > 0 and 0 < plan["expected_mfu"] <= 1
    assert plan["seconds"] > plan["eval_seconds"] > 0  # two evaluations (steps 3 and 6)
    report = json.loads((result.run_dir / "report.json").read_text())
    compare = report["compare"]
    assert compare["precision"] == {"predicted": "fp32", "measured": "fp32"}
    assert compare["tokens_per_second"]["ratio"] == pytest.approx(
        compare["tokens_per_second"]["measured"] / compare["tokens_per_second"]["predicted"])
    assert "precision: fp32" in (result.run_dir / "config.yaml").read_text().replace("'", "")


def test_expected_mfu_overrides_the_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CPU_BF16", "0")
    result = train(config(tmp_path, "m", **{"train.max_steps": 2, "train.expected_mfu": "0.25",
                                            "train.peak_tflops": "1"}), quiet=True, log=quiet_log)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["speed_source"] == "train.expected_mfu=0.25 x the peak" and plan["calibration"] is None
    assert plan["tokens_per_second"] == pytest.approx(0.25 * 1e12 / plan["flops_per_token"])


@pytest.mark.parametrize("forced, expected", [("0", "fp32"), ("1", "bf16")])
def test_the_run_header_names_the_precision_auto_chose(tmp_path, monkeypatch, forced, expected):
    monkeypatch.setenv("LMFORGE_CPU_BF16", forced)
    lines: list[str] = []
    result = train(config(tmp_path, "h", **{"train.max_steps": 1}), quiet=True, log=lines.append)
    assert f"precision: {expected} (forced by LMFORGE_CPU_BF16={forced})" in lines
    assert result.precision == expected and result.to_dict()["precision"] == expected


def test_explicit_bf16_on_a_cpu_without_fast_bf16_warns_once(tmp_path, monkeypatch):
    from lmforge.train import precision as precision_module

    monkeypatch.delenv("LMFORGE_CPU_BF16", raising=False)
    monkeypatch.setattr(precision_module, "_probe_rate", lambda d: 1e9 if d == torch.bfloat16 else 100e9)
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    precision_module._cpu_bf16.cache_clear()
    try:
        lines: list[str] = []
        train(config(tmp_path, "w", **{"train.max_steps": 1, "train.precision": "bf16"}), quiet=True,
              log=lines.append)
    finally:
        precision_module._cpu_bf16.cache_clear()
    warnings = [line for line in lines if line.startswith("warning: bf16 matmuls are 100x slower")]
    assert len(warnings) == 1
