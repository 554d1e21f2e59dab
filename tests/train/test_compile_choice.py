"""train.compile auto: compile where a timing of the compiled model here says it repays its
compilation over the planned run; both outcomes forced with LMFORGE_COMPILE; a compiler that
fails or is missing falls back cleanly; the choice is recorded for a resumed run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lmforge.errors import UserError
from lmforge.plan.presets import get_preset
from lmforge.train import compile_choice
from lmforge.train.calibrate import Calibration, calibrate
from lmforge.train.compile_choice import GAIN, MIN_PLANNED_SECONDS, choose_compile
from lmforge.train.loop import train
from tests.train.test_loop import config

CPU = torch.device("cpu")


def _timing(step: float, compile_seconds: float = 0.0) -> Calibration:
    """A calibration whose optimizer step is free: a training step takes ``step`` seconds."""
    return Calibration(step, 0.0, step / 3, 8, 256, "fp32", "cpu", 5, compile_seconds > 0, compile_seconds)


def _choose(eager: Calibration | None, compiled: Calibration | Exception, steps: int, requested="auto",
            max_seconds: float | None = None):
    calls = []

    def measure() -> Calibration:
        calls.append(1)
        if isinstance(compiled, Exception):
            raise compiled
        return compiled

    choice = choose_compile(requested, CPU, planned_steps=steps, accumulation=1, eager=eager,
                            measure_compiled=measure, max_seconds=max_seconds)
    return choice, len(calls)


@pytest.fixture(autouse=True)
def unforced(monkeypatch):
    monkeypatch.delenv("LMFORGE_COMPILE", raising=False)
    monkeypatch.setattr(compile_choice, "cannot_compile", lambda device: None)  # a compiler is there


def test_a_short_run_is_not_compiled_and_nothing_is_measured():
    steps = int(MIN_PLANNED_SECONDS / 1.0) - 1  # just under ten minutes of 1 s steps
    choice, measured = _choose(_timing(1.0), _timing(0.5, 30), steps)
    assert not choice.compile and measured == 0 and "too short to repay a compilation" in choice.reason
    # max_time ends a long run early: what counts is the time it will train
    choice, measured = _choose(_timing(1.0), _timing(0.5, 30), 100_000, max_seconds=300)
    assert not choice.compile and measured == 0


def test_a_long_run_compiles_when_the_compiled_step_repays_the_compilation():
    choice, measured = _choose(_timing(1.0), _timing(0.8, 60), 2000)  # saves 400 s for 60 s of compiling
    assert choice.compile and measured == 1 and choice.compiled.step_seconds(1) == 0.8
    assert "1.25x" in choice.reason and "compiling took 60 s" in choice.reason
    assert choice.line().startswith("compile: yes (")


@pytest.mark.parametrize("compiled_step, compile_seconds, why", [
    (1.0 / (GAIN - 0.01), 10, "below the gain"),  # faster, but by less than GAIN
    (1.1, 10, "slower"),
    (0.9, 1000, "saves 100 s of 2000 steps but takes 1000 s to compile"),
])
def test_a_long_run_stays_uncompiled_when_compiling_does_not_pay(compiled_step, compile_seconds, why):
    choice, measured = _choose(_timing(1.0), _timing(compiled_step, compile_seconds), 1000)
    assert not choice.compile and measured == 1 and "not worth it" in choice.reason, why


def test_a_compiler_failure_is_a_clean_no():
    choice, _ = _choose(_timing(1.0), RuntimeError("InductorError: C++ compile error\nlong log"), 5000)
    assert not choice.compile and "torch.compile failed here (RuntimeError: InductorError: C++ compile error)" \
        in choice.reason


def test_no_compiler_or_no_calibration_means_no(monkeypatch):
    monkeypatch.setattr(compile_choice, "cannot_compile", lambda device: "no C++ compiler on this machine")
    choice, measured = _choose(_timing(1.0), _timing(0.5, 1), 10**6)
    assert not choice.compile and measured == 0 and choice.reason == "no C++ compiler on this machine"
    monkeypatch.undo()
    monkeypatch.setattr(compile_choice, "cannot_compile", lambda device: None)
    choice, measured = _choose(None, _timing(0.5, 1), 10**6)  # train.expected_mfu: nothing was timed
    assert not choice.compile and measured == 0 and "not calibrated" in choice.reason


def test_cannot_compile_names_a_missing_cpp_compiler_and_true_is_refused_there(monkeypatch):
    monkeypatch.undo()
    monkeypatch.setattr(compile_choice.shutil, "which", lambda name: None)
    assert "no C++ compiler" in compile_choice.cannot_compile(CPU)
    with pytest.raises(UserError, match="train.compile true cannot compile here") as err:
        _choose(_timing(1.0), _timing(0.5, 1), 10, requested=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("forced, expected", [("0", False), ("1", True)])
def test_the_environment_forces_either_outcome(monkeypatch, forced, expected):
    monkeypatch.setenv("LMFORGE_COMPILE", forced)
    choice, measured = _choose(_timing(1.0), _timing(2.0, 1), 10)
    assert choice.compile is expected and measured == 0 and choice.reason == f"LMFORGE_COMPILE={forced}"
    monkeypatch.setenv("LMFORGE_COMPILE", "yes")
    with pytest.raises(UserError, match="LMFORGE_COMPILE must be 0 or 1"):
        _choose(_timing(1.0), _timing(2.0, 1), 10)


def test_true_and_false_are_obeyed_without_measuring():
    assert _choose(_timing(1.0), _timing(2.0, 1), 10, requested=True)[0].compile is True
    assert _choose(_timing(1.0), _timing(0.1, 1), 10**6, requested=False)[0].compile is False


@pytest.mark.parametrize("forced", ["0", pytest.param("1", marks=pytest.mark.slow)])  # "1": ~30 s compiling
def test_a_run_records_the_choice_and_trains_either_way(tmp_path, monkeypatch, forced):
    """The run's log names the choice and config.yaml records it as true/false, so a resume
    does not choose again. Compiled (LMFORGE_COMPILE=1) trains the same model to about the same
    loss (Inductor reorders float sums: not bit-equal)."""
    monkeypatch.setenv("LMFORGE_CPU_BF16", "0")
    monkeypatch.setenv("LMFORGE_COMPILE", forced)
    lines: list[str] = []
    result = train(config(tmp_path, f"c{forced}", **{"train.max_steps": 3}), quiet=True, log=lines.append)
    assert f"compile: {'yes' if forced == '1' else 'no'} (LMFORGE_COMPILE={forced})" in lines
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["train"]["compile"] is (forced == "1")
    losses = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses and all(0 < x < 10 for x in losses)


@pytest.mark.slow  # a real Inductor compilation of a tiny model, ~30 s on 2 cores; CI runs it (-m slow)
def test_calibrating_the_compiled_model_reports_its_compilation():
    spec = get_preset("tiny-gpt2").spec.with_(vocab_size=360)
    compiled = calibrate(spec, seq_len=32, micro_batch=4, steps=2, compile_model=True)
    assert compiled.compiled and compiled.compile_seconds > 0 and compiled.micro_batch_seconds > 0
    eager = calibrate(spec, seq_len=32, micro_batch=4, steps=2)
    assert not eager.compiled and eager.compile_seconds == 0
    assert compiled.compile_seconds > eager.step_seconds(1)  # compiling costs more than a step
