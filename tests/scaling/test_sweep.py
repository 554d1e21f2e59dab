"""lmforge scaling sweep: killed at any point, the same command continues without redoing finished runs."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.plan.isoflop import isoflop_grid
from lmforge.scaling.points import read_sweep
from lmforge.train.checkpoint import latest_checkpoint
from tests.cli.cli_run import run as cli

GRID = ["--budgets", "2e11", "--sizes", "3", "--spread", "1.5", "--vocab-size", "360", "--seq-len", "64"]


def _argv(out: Path) -> list[str]:
    return [sys.executable, "-m", "lmforge", "scaling", "sweep", "--data", "builtin:markov", *GRID, "--out", str(out),
            "--quiet"]


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open() as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_sweep_killed_mid_run_continues_and_skips_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    names = [r.name for r in isoflop_grid([2e11], sizes=3, spread=1.5, vocab_size=360, seq_len=64)]
    first = subprocess.Popen(_argv(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (_rows(out / "sweep.csv") >= 1 and latest_checkpoint(out / "runs" / names[1]) is not None):
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the second run never reached a checkpoint"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # in the middle of the second run
    first.wait()
    finished_report = out / "runs" / names[0] / "report.json"
    stamp = finished_report.stat().st_mtime_ns
    again = subprocess.run(_argv(out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    text = again.stdout + again.stderr
    assert f"{names[0]}: finished before" in text  # read back, not trained again
    assert f"{names[1]}: resuming from step-" in text
    assert finished_report.stat().st_mtime_ns == stamp
    sweep = read_sweep(out / "sweep.csv")
    assert [p.run for p in sweep.points] == names and sweep.unfinished == 0
    assert all(abs(p.flops / 2e11 - 1) < 0.01 for p in sweep.points)  # every run on its budget
    assert sweep.meta["tokenizer"]["vocab_size"] == 360 and sweep.meta["sizes"] == 3
    done = subprocess.run(_argv(out), capture_output=True, text=True, timeout=300)  # all finished: nothing to train
    assert done.returncode == 0 and "(0 trained now)" in done.stdout


def test_a_budget_too_small_writes_nothing(tmp_path, capsys):
    code, out, err = cli(capsys, "scaling", "sweep", "--data", "builtin:markov", "--budgets", "1e9", "--vocab-size",
                         "360", "--out", tmp_path / "s")
    assert code == 2 and err.startswith("error: budget too small for the smallest runnable models")
    assert err.count("\n") == 1 and not (tmp_path / "s").exists()


def test_bad_budgets_and_a_changed_setting_are_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "scaling", "sweep", "--data", "builtin:markov", "--budgets", "1e12,abc", "--out",
                       tmp_path / "s")
    assert code == 2 and "cannot read --budgets as a number" in err
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text('{"vocab_size": 512, "seq_len": 128}')
    code, _, err = cli(capsys, "scaling", "sweep", "--data", "builtin:markov", "--budgets", "1e13", "--vocab-size",
                       "1024", "--out", tmp_path / "s")
    assert code == 2 and "made with another vocab_size" in err and "--vocab-size" in err
