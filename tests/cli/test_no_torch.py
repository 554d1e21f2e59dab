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
