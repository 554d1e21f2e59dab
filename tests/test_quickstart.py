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
    plan.json, and it leaves a working run."""
    monkeypatch.setenv("LMFORGE_CPU_BF16", forced)
    lines: list[str] = []
    result = run_quickstart(tmp_path, "qs", minutes=0.05, quiet=True, log=lines.append)
    assert result.run_dir == tmp_path / "qs" and result.steps > 0
    assert f"precision: {precision} (forced by LMFORGE_CPU_BF16={forced})" in lines
    assert f"tokens, {precision}) in" in lines[0]
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["precision"]["precision"] == precision and plan["speed_source"].startswith("calibrated")
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
