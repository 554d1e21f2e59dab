"""The README's main job, end to end, on a tiny time budget."""

from __future__ import annotations

import json

import pytest

from lmforge.plan.presets import get_preset
from lmforge.quickstart import free_run_dir, run_quickstart
from lmforge.train.calibrate import calibrate


@pytest.mark.parametrize("forced, precision", [("0", "fp32"), ("1", "bf16")])
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch, forced, precision):
    """With the bf16 probe forced each way: the precision it chose is in its header and in
    plan.json; the planner sized the run for the time from calibrated steps; it leaves a
    working run, and says what the law predicted beside what it measured."""
    monkeypatch.setenv("LMFORGE_CPU_BF16", forced)
    lines: list[str] = []
    result = run_quickstart(tmp_path, "qs", minutes=0.3, quiet=True, log=lines.append)
    assert result.run_dir == tmp_path / "qs" and result.steps > 0
    assert f"precision: {precision} (forced by LMFORGE_CPU_BF16={forced})" in lines
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["precision"]["precision"] == precision and plan["speed_source"].startswith("calibrated")
    budget = plan["budget"]
    assert budget["kind"] == "seconds" and budget["seconds"] == 18 and budget["calibrations"]
    assert any(line.startswith("budget 18s: ") for line in lines)
    if budget["loss_applies"]:  # the default law was fitted with this tokenizer (same Python's docstrings)
        assert plan["loss"] is not None
        assert any(line.startswith(f"predicted validation loss {plan['loss']:.3f}, measured") for line in lines)
    assert result.validation["pydocs"].bits_per_byte > 0
    text = "\n".join(lines)
    assert "sample (temperature 0.8, top-k 40):\nReturn the" in text
    assert "validation:" in text and "everything is in" in text
    for name in ("model.safetensors", "report.json", "plots/loss.png", "tokenizer.json", "data/manifest.json"):
        assert (result.run_dir / name).exists(), name
    assert free_run_dir(tmp_path, "qs") == "qs-2"  # a second quickstart does not clobber the first


def test_calibration_measures_a_positive_rate():
    spec = get_preset("tiny-gpt2").spec
    speed = calibrate(spec, seq_len=32, micro_batch=2, steps=1)
    assert speed.tokens_per_second() > 0 and speed.eval_seconds(64) > 0
