"""The README's main job, end to end, on a tiny time budget."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.plan.presets import get_preset
from lmforge.quickstart import free_run_dir, run_quickstart
from lmforge.train.calibrate import calibrate
from tests.cli.cli_run import run as cli


@pytest.mark.parametrize("forced, precision", [  # bf16 forced too in CI (-m slow)
    ("0", "fp32"), pytest.param("1", "bf16", marks=pytest.mark.slow)])
def test_quickstart_runs_end_to_end(tmp_path, monkeypatch, capsys, forced, precision):
    """With the bf16 probe forced each way: the precision it chose is in its header and in
    plan.json; the planner sized the run for the time from calibrated steps; it leaves a
    working run, and says what the law predicted beside what it measured."""
    monkeypatch.setenv("LMFORGE_CPU_BF16", forced)
    lines: list[str] = []
    result = run_quickstart(tmp_path, "qs", minutes=0.2, quiet=True, log=lines.append)
    assert result.run_dir == tmp_path / "qs" and result.steps > 0
    assert f"precision: {precision} (forced by LMFORGE_CPU_BF16={forced})" in lines
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["precision"]["precision"] == precision and plan["speed_source"].startswith("calibrated")
    budget = plan["budget"]
    assert budget["kind"] == "seconds" and budget["seconds"] == 12 and budget["calibrations"]
    assert any(line.startswith("budget 12s: ") for line in lines)
    if budget["loss_applies"]:  # the default law was fitted with this tokenizer (same Python's docstrings)
        assert plan["loss"] is not None
        assert any(line.startswith(f"predicted validation loss {plan['loss']:.3f}, measured") for line in lines)
    validation = result.validation["pydocs"]
    vocab_size = Tokenizer.load(result.run_dir / "tokenizer.json").vocab_size
    assert validation.loss < math.log(vocab_size)  # it learned: below the uniform distribution's ln V nats
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["measured"]["validation"]["pydocs"]["loss"] == pytest.approx(validation.loss)
    assert report["compare"]["tokens"]["measured"] == result.tokens
    text = "\n".join(lines)
    assert "sample (temperature 0.8, top-k 40):\nReturn the" in text
    assert "validation:" in text and "everything is in" in text
    for name in ("model.safetensors", "report.json", "plots/loss.png", "tokenizer.json", "data/manifest.json"):
        assert (result.run_dir / name).exists(), name
    assert free_run_dir(tmp_path, "qs") == "qs-2"  # a second quickstart does not clobber the first
    assert f"next: lmforge report {result.run_dir}" in text
    _report_agrees(capsys, result, plan, report)


def _report_agrees(capsys, result, plan: dict, report: dict) -> None:
    """lmforge report on the quickstart run: every row's numbers are plan.json's and report.json's,
    the parameter count measured from the weights equals the plan's exactly."""
    capsys.readouterr()
    code, out, err = cli(capsys, "report", result.run_dir, "--json")
    assert code == 0, err
    shown = json.loads(out)
    rows = {r["what"]: r for r in shown["rows"]}
    assert shown["status"] == "finished" and shown["final"]["tokens"] == result.tokens
    assert rows["parameters"]["predicted"] == rows["parameters"]["measured"] == plan["params"]
    assert rows["tokens"]["measured"] == result.tokens
    assert rows["tokens/s"]["measured"] == report["measured"]["tokens_per_second"]
    loss = rows["validation loss"]
    assert loss["measured"] == pytest.approx(report["measured"]["validation"]["all"]["loss"])
    if plan["loss"] is not None:
        assert loss["predicted"] == plan["loss"] and loss["error"] == pytest.approx(loss["measured"] - plan["loss"])


def test_calibration_times_steps_and_leaves_the_run_rng_alone():
    """A step of A micro-batches costs A x micro-batch + optimizer seconds (calibrate's docstring); evaluation
    counts whole micro-batches; the timed copy of the model does not move the run's random stream, and the
    same setting is measured once per process."""
    spec = get_preset("tiny-gpt2").spec
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    speed = calibrate(spec, seq_len=32, micro_batch=2, steps=1)
    assert torch.equal(torch.rand(3), expected_next)
    assert speed.timed_steps == 1 and min(speed.micro_batch_seconds, speed.optimizer_seconds) > 0
    assert speed.tokens_per_second(4) == pytest.approx(
        4 * 2 * 32 / (4 * speed.micro_batch_seconds + speed.optimizer_seconds))
    assert speed.eval_seconds(64) == speed.eval_micro_batch_seconds  # 64 tokens: one micro-batch of 2 x 32
    assert speed.eval_seconds(65) == 2 * speed.eval_micro_batch_seconds
    assert calibrate(spec, seq_len=32, micro_batch=2, steps=1) is speed
