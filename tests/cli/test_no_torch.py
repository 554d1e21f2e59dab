"""Planning verbs never import torch (nor numpy): they must answer in well under 0.5 s."""

from __future__ import annotations

import subprocess
import sys

import pytest

PLANNING_COMMANDS = [
    ["plan", "--flops", "5.76e23"],
    ["plan", "--gpus", "64xH100", "--days", "14", "--mfu", "0.4"],
    ["plan", "--compare"],
    ["memory", "llama-2-7b", "--gpus", "8xH100"],
    ["memory", "--params", "500B"],
    ["cost", "llama-2-7b", "--tokens", "2T", "--gpus", "64xH100"],
    ["advise", "--task", "summarization", "--budget", "1e21"],
]

PROBE = """
import contextlib, io, sys
from lmforge.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "numpy", "scipy", "matplotlib", "jsonargparse") if m in sys.modules)
print(code, ",".join(heavy) or "none")
"""


@pytest.mark.parametrize("argv", PLANNING_COMMANDS, ids=lambda a: " ".join(a))
def test_planning_verb_imports_no_torch(argv):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    code, heavy = done.stdout.split()
    assert code == "0", done.stderr
    assert heavy == "none", f"lmforge {' '.join(argv)} imported {heavy}"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny trained runs (a few steps each) for lmforge report."""
    from lmforge.train.loop import train
    from tests.tiny_runs import one_thread, run_config

    root = tmp_path_factory.mktemp("no-torch-runs")
    with one_thread():
        return [train(run_config(root, name, "tiny-gpt2"), quiet=True, log=lambda _: None).run_dir
                for name in ("a", "b")]


@pytest.mark.parametrize("several", [False, True], ids=["report one run", "report two runs"])
def test_report_imports_no_torch(two_runs, tmp_path, several):
    """lmforge report reads JSON: one run imports nothing heavy; two draw their PNG with
    matplotlib (which brings numpy), still without torch."""
    argv = ["report", *map(str, two_runs), "--out", str(tmp_path / "r.png")] if several else [
        "report", str(two_runs[0])]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    code, heavy = done.stdout.split()
    assert code == "0", done.stderr
    allowed = {"matplotlib", "numpy"} if several else set()
    assert set(heavy.split(",")) - {"none"} <= allowed, f"lmforge {' '.join(argv)} imported {heavy}"
    if several:
        assert "torch" not in heavy and (tmp_path / "r.png").is_file()
