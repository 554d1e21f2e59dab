"""A rank killed mid-run: the job stops in bounded time, or torchrun restarts it and it
resumes from the last complete checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.distributed.launch import BASE, overrides

pytestmark = pytest.mark.distributed


def _start(tmp_path: Path, name: str, max_restarts: int, tag: str) -> subprocess.Popen:
    values = {**BASE, "out_dir": tmp_path, "name": name, "parallel.strategy": "zero3", "train.max_steps": 60,
              "train.ckpt_every": 5, "parallel.timeout": 60}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--max-restarts", str(max_restarts), "-m", "lmforge", "train", "--quiet", *overrides(values)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "LMFORGE_TEST_TAG": tag}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _last_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def _worker(tag: str, rank: int) -> int | None:
    """The pid of the worker with RANK=rank launched by this test (found by its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LMFORGE_TEST_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _kill_rank_after(proc: subprocess.Popen, run_dir: Path, tag: str, step: int, rank: int = 1) -> None:
    deadline = time.monotonic() + 120
    while _last_step(run_dir) < step:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached the step to kill it at"
        time.sleep(0.05)
    pid = _worker(tag, rank)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_killed_rank_stops_the_job_in_bounded_time(tmp_path):
    tag = uuid.uuid4().hex
    proc = _start(tmp_path, "dies", max_restarts=0, tag=tag)
    _kill_rank_after(proc, tmp_path / "dies", tag, step=7)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=120)  # a hang fails the test here
    assert proc.returncode != 0
    assert time.monotonic() - killed < 120
    assert "rank      : 1" in err and "SIGKILL" in err  # torchrun names the rank that died
    assert (tmp_path / "dies" / "checkpoints" / "step-000005" / "layout.json").is_file()  # kept for --resume


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_torchrun_restart_resumes_from_the_last_checkpoint(tmp_path):
    tag = uuid.uuid4().hex
    proc = _start(tmp_path, "restarts", max_restarts=1, tag=tag)
    _kill_rank_after(proc, tmp_path / "restarts", tag, step=7)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "torchrun restart 1: resuming from the latest complete checkpoint" in out + err
    assert "resumed" in out + err
    lines = [json.loads(x) for x in (tmp_path / "restarts" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(r["step"] for r in lines) == list(range(1, 61))  # no step lost or repeated in the log
    assert (tmp_path / "restarts" / "model.safetensors").is_file()
