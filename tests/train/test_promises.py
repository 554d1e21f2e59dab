"""lmforge train keeps its promises (issue 12): one owner per run directory, killed first
attempts start afresh, resume means what it says, signals give exit codes a script can
trust, disk full is one line with nothing half-written, a model that cannot fit is refused
before anything is built, weights load only with their dtype."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.errors import UserError
from lmforge.runs import load_run
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.loop import train
from tests.cli.cli_run import run as cli
from tests.train.test_loop import config, quiet_log

TINY_CLI = ["--data.sources", "markov=builtin:markov", "--data.vocab_size", "360", "--data.seq_len", "32",
            "--train.batch_tokens", "256", "--train.micro_batch", "8", "--train.eval_every", "100000",
            "--train.eval_tokens", "512", "--train.log_every", "1", "--train.precision", "fp32", "--quiet"]


def _spawn(tmp_path: Path, name: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lmforge", "train", "--out-dir", str(tmp_path), "--name", name, *TINY_CLI, *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_run_killed_before_its_first_checkpoint_starts_afresh_with_the_same_command(tmp_path):
    long = ("--train.max_steps", "100000", "--train.ckpt_every", "100000")
    first = _spawn(tmp_path, "k", *long)
    _wait_for(tmp_path / "k" / "metrics.jsonl", first)  # training, no checkpoint yet
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert latest_checkpoint(tmp_path / "k") is None and (tmp_path / "k" / "config.yaml").exists()
    again = subprocess.run([sys.executable, "-m", "lmforge", "train", "--out-dir", str(tmp_path), "--name", "k",
                            *TINY_CLI, "--train.max_steps", "3"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "stopped before its first complete checkpoint; starting it afresh" in again.stdout + again.stderr
    assert latest_checkpoint(tmp_path / "k") is not None


def test_temp_files_of_a_killed_final_write_are_removed_on_the_next_start(tmp_path):
    train(config(tmp_path, "t", **{"train.stop_at_step": 2}), quiet=True, log=quiet_log)
    stale = tmp_path / "t" / ".model.safetensors.tmp-999999"
    stale.write_bytes(b"half a file")
    lines: list[str] = []
    train(config(tmp_path, "t"), resume=True, quiet=True, log=lines.append)
    assert not stale.exists()
    assert any(line.startswith("removed 1 temp file(s)") for line in lines)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_one_owner_per_run_directory_twenty_races(tmp_path):
    """Two processes lock one run directory at the same instant, 20 times: exactly one
    wins, the other is refused naming the owner's pid, nothing is deleted."""
    script = (
        "import sys, time\n"
        "from lmforge.errors import UserError\n"
        "from lmforge.dirlock import DirectoryLock as RunLock\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "try:\n"
        "    lock = RunLock(sys.argv[1]).acquire()\n"
        "except UserError as e:\n"
        "    print('refused', e); sys.exit(2)\n"
        "print('owner'); sys.stdout.flush(); time.sleep(0.5)\n"
    )
    for attempt in range(20):
        run_dir = tmp_path / f"race-{attempt}"
        start = time.time() + 0.4
        procs = [subprocess.Popen([sys.executable, "-c", script, str(run_dir), str(start)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        owners = [p for p, out in zip(procs, outs, strict=True) if out.startswith("owner")]
        refused = [out for out in outs if out.startswith("refused")]
        assert len(owners) == 1 and len(refused) == 1, outs
        assert f"(pid {owners[0].pid})" in refused[0]
        assert (run_dir / ".lock").exists()  # nothing deleted


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_second_train_on_a_live_run_is_refused_with_the_owners_pid(tmp_path):
    first = _spawn(tmp_path, "busy", "--train.max_steps", "100000", "--train.max_time", "20")
    try:
        _wait_for(tmp_path / "busy" / "metrics.jsonl", first)
        for argv in (["--name", "busy"], ["--resume", str(tmp_path / "busy")]):
            second = subprocess.run([sys.executable, "-m", "lmforge", "train", "--out-dir", str(tmp_path), *argv,
                                     *TINY_CLI, "--train.max_steps", "3"], capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stderr
            assert second.stderr.startswith("error: the run directory is in use by another lmforge process")
            assert f"(pid {first.pid})" in second.stderr and second.stderr.count("\n") == 1
        assert (tmp_path / "busy" / "config.yaml").exists()  # the refused one deleted nothing
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_exits_with_its_code(tmp_path, signum, code):
    process = _spawn(tmp_path, "sig", "--train.max_steps", "100000", "--train.ckpt_every", "100000")
    _wait_for(tmp_path / "sig" / "metrics.jsonl", process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "saving a checkpoint (resume with --resume)" in out + err
    assert latest_checkpoint(tmp_path / "sig") is not None


def test_resume_of_a_finished_run_is_refused_and_rewrites_nothing(tmp_path):
    done = train(config(tmp_path, "f", **{"train.max_steps": 3}), quiet=True, log=quiet_log)
    final = done.run_dir / "model.safetensors"
    stamp = (final.stat().st_mtime_ns, (done.run_dir / "report.json").read_bytes())
    with pytest.raises(UserError, match="the run is finished.*step 3 of 3.*--init-from"):
        train(config(tmp_path, "f", **{"train.max_steps": 3}), resume=True, quiet=True, log=quiet_log)
    with pytest.raises(UserError, match="limit is below its checkpoint"):
        train(config(tmp_path, "f", **{"train.max_steps": 2}), resume=True, quiet=True, log=quiet_log)
    assert (final.stat().st_mtime_ns, (done.run_dir / "report.json").read_bytes()) == stamp
    more = train(config(tmp_path, "f", **{"train.max_steps": 5}), resume=True, quiet=True, log=quiet_log)
    assert more.steps == 5


def test_stop_at_step_pauses_this_invocation_only(tmp_path):
    paused = train(config(tmp_path, "p", **{"train.stop_at_step": 2}), quiet=True, log=quiet_log)
    assert paused.steps == 2 and "stop_at_step: null" in (paused.run_dir / "config.yaml").read_text()


def test_resume_and_init_from_together_are_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "a", "--init-from", tmp_path / "b")
    assert code == 2 and err.startswith("error: --resume and --init-from do not go together")


def test_a_model_that_cannot_fit_is_refused_before_data_or_model_exist(tmp_path, monkeypatch):
    """llama-2-70b on this CPU: the planner refuses it; no tokenizer is trained, no tensor allocated."""
    from lmforge.train import build

    def never(*args, **kwargs):
        raise AssertionError("built before the memory check")

    monkeypatch.setattr(build, "setup_data", never)
    monkeypatch.setattr(build, "build_model", never)
    monkeypatch.setattr(build, "calibrate", never)
    with pytest.raises(UserError, match="predicted not to fit"):
        train(config(tmp_path, "big", **{"model.preset": "llama-2-70b", "parallel.device_memory": "24GiB"}),
              quiet=True, log=quiet_log)
    assert not (tmp_path / "big").exists()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]) if len(args) > 1 else None)


def test_disk_full_at_a_checkpoint_or_the_final_model_is_one_line_and_latest_stays(tmp_path, capsys, monkeypatch):
    from lmforge import tensorfile

    real = tensorfile.save_safetensors
    code, _, err = cli(capsys, "train", "--out-dir", tmp_path, "--name", "full", *TINY_CLI, "--train.max_steps", "2",
                       "--train.ckpt_every", "1")
    assert code == 0, err
    for target, needle in [(".tmp-step-000003", "checkpoint"), (".model.safetensors.tmp", "final model")]:
        def failing(tensors, path, meta=None, target=target):
            if target in str(path):
                _enospc(tensors, path)
            return real(tensors, path, meta)

        monkeypatch.setattr(tensorfile, "save_safetensors", failing)
        latest = (tmp_path / "full" / "latest").read_text()
        steps = "3" if needle == "checkpoint" else "4"
        code, out, err = cli(capsys, "train", "--resume", tmp_path / "full", *TINY_CLI, "--train.max_steps", steps,
                             "--train.ckpt_every", "1")
        assert code == 2, (needle, err)
        assert err.startswith("error: No space left on device (ENOSPC)") and err.count("\n") == 1, err
        run_dir = tmp_path / "full"
        assert not list(run_dir.glob(".*.tmp-*")) and not list((run_dir / "checkpoints").glob(".tmp-*"))
        if needle == "checkpoint":
            assert (run_dir / "latest").read_text() == latest  # still the last complete one
        monkeypatch.setattr(tensorfile, "save_safetensors", real)
        if needle == "checkpoint":
            code, _, err = cli(capsys, "train", "--resume", run_dir, *TINY_CLI, "--train.max_steps", "3",
                               "--train.ckpt_every", "1")
            assert code == 0, err


def test_disk_full_for_the_tokenizer_and_emit_config_leaves_nothing(tmp_path, capsys, monkeypatch):
    from lmforge import fileio
    from lmforge.data import tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("some text to learn from, " * 200)
    monkeypatch.setattr(tokenizer.os, "fsync", lambda fd: _enospc(fd))
    code, _, err = cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", "400", "--out",
                       tmp_path / "tok.json")
    assert code == 2 and err.startswith("error: No space left on device (ENOSPC)") and err.count("\n") == 1, err
    monkeypatch.undo()
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: _enospc(fd))
    code, _, err = cli(capsys, "plan", "--flops", "1e18", "--emit-config", tmp_path / "run.yaml")
    assert code == 2 and err.startswith("error: No space left on device (ENOSPC)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]  # no tokenizer, no config, no temp files


def test_weights_of_the_wrong_dtype_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    done = train(config(tmp_path, "w", **{"train.max_steps": 1}), quiet=True, log=quiet_log)
    path = done.run_dir / "model.safetensors"
    tensors = load_file(path)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].to(torch.int32)
    save_file(tensors, str(path))
    with pytest.raises(UserError, match="dtype mismatches.*torch.int32 in the checkpoint but .* torch.float32"):
        load_run(done.run_dir)
    assert json.loads((done.run_dir / "report.json").read_text())["measured"]["steps"] == 1


def test_disk_full_while_writing_shards_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from lmforge.data import shards

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"document number {i} with a few words" for i in range(200)))
    code, _, err = cli(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", "400", "--out",
                       tmp_path / "tok.json")
    assert code == 0, err
    monkeypatch.setattr(shards._SplitWriter, "write", lambda self, tokens: _enospc(self, tokens))
    code, _, err = cli(capsys, "prepare", "--data", corpus, "--tokenizer", tmp_path / "tok.json", "--out",
                       tmp_path / "shards")
    assert code == 2 and err.startswith("error: No space left on device (ENOSPC)") and err.count("\n") == 1, err
    assert not (tmp_path / "shards").exists()  # the directory this command made is gone again


def test_an_unreadable_prompt_file_is_one_line(tmp_path, capsys, monkeypatch):
    """PermissionError (the tests run as root, who reads everything: the read is made to fail)."""
    import pathlib

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    real = pathlib.Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "prompts.txt":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    code, _, err = cli(capsys, "generate", tmp_path / "no-run", "--prompt-file", prompts)
    assert code == 2 and err.startswith("error: Permission denied (EACCES)") and str(prompts) in err, err
    assert err.count("\n") == 1
