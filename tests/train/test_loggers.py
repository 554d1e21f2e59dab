"""Metric sinks (lmforge.train.loggers): what metrics.jsonl holds, TensorBoard and W&B hold
too, read back with each tool's own reader; a missing extra is one line before anything runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest

from lmforge.train.config import load_config
from lmforge.train.loggers import BY_TOKENS, TENSORBOARD_DIR, WANDB_ID_FILE, hyperparameters
from lmforge.train.loop import train
from lmforge.train.metrics import read_metrics
from tests.cli.cli_run import run as run_cli
from tests.tiny_runs import one_thread, run_config

LOGGED = {"train.max_steps": 6, "train.eval_every": 3, "train.log_every": 1, "train.ckpt_every": 2}
# every metric a decoder's training line or evaluation line carries (lmforge.train.metrics)
EXPECTED = {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "peak_memory_bytes",
            "val_loss/markov", "val_bpb/markov", "val_loss/all", "val_bpb/all"}


def quiet(_: str) -> None:
    pass


def metric_values(records: list[dict]) -> dict[str, dict[int, float]]:
    """metrics.jsonl as {name: {step: value}} (numbers only, not step and time)."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "time") and isinstance(v, (int, float)):
                out.setdefault(k, {})[r["step"]] = float(v)
    return out


def tensorboard_scalars(run_dir: Path):
    """(scalars {tag: {step: value}}, the accumulator) read by tensorboard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), (tag, steps)  # each step once
        scalars[tag] = {e.step: e.value for e in events}
    return scalars, acc


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (lmforge[tensorboard])")
    out = tmp_path_factory.mktemp("tb")
    with one_thread():
        train(run_config(out, "tb", "tiny-gpt2", **LOGGED, **{"log.tensorboard": True}), quiet=True, log=quiet)
    return out / "tb"


def test_tensorboard_has_every_metric_at_every_logged_step(tb_run):
    """Every number of every metrics.jsonl line is a TensorBoard scalar of the same name at
    that step (x-axis: step), and again under by_tokens/ at the tokens seen (x-axis: tokens)."""
    records = read_metrics(tb_run)
    expected = metric_values(records)
    assert set(expected) == EXPECTED
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    scalars, _ = tensorboard_scalars(tb_run)
    tokens_at = expected["tokens"]
    for name, by_step in expected.items():
        assert scalars[name].keys() == by_step.keys(), name
        for step, value in by_step.items():
            assert scalars[name][step] == pytest.approx(value, rel=1e-6), (name, step)  # stored as float32
            if name != "tokens":
                assert scalars[BY_TOKENS + name][int(tokens_at[step])] == pytest.approx(value, rel=1e-6)
    assert set(scalars) == EXPECTED | {BY_TOKENS + n for n in EXPECTED - {"tokens"}}


def test_tensorboard_holds_the_config_as_hyperparameters(tb_run):
    """The HParams plugin's session start holds every config key with its value, once."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, acc = tensorboard_scalars(tb_run)
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    config = load_config(tb_run / "config.yaml", {})
    assert hparams["train.lr"].number_value == pytest.approx(config.train.lr)
    assert hparams["model.preset"].string_value == "tiny-gpt2"
    assert hparams["log.tensorboard"].number_value == 1  # torch's hparams() writes a bool as a number
    assert set(hparams) == set(hyperparameters(config))
    assert hparams["train.budget"].string_value == "none"
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_after_resume_shows_the_resumed_values(tmp_path):
    """A run killed after logging steps 3-4 but before their checkpoint resumes from step 2:
    TensorBoard then shows each step once, with the resumed run's values (those of
    metrics.jsonl), not the dead run's (purge_step)."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    cfg = run_config(tmp_path, "resumed", "tiny-gpt2", **LOGGED, **{"log.tensorboard": True})
    with one_thread():
        train(run_config(tmp_path, "resumed", "tiny-gpt2", **LOGGED,
                         **{"log.tensorboard": True, "train.stop_at_step": 4}), quiet=True, log=quiet)
        run_dir = tmp_path / "resumed"
        dead = metric_values(read_metrics(run_dir))["tokens_per_s"]
        # the kill: step 4's checkpoint never happened
        (run_dir / "latest").write_text("checkpoints/step-000002\n")
        shutil.rmtree(run_dir / "checkpoints" / "step-000004")
        train(cfg, resume=True, quiet=True, log=quiet)
    expected = metric_values(read_metrics(run_dir))
    assert sorted(expected["loss"]) == [1, 2, 3, 4, 5, 6]
    scalars, _ = tensorboard_scalars(run_dir)
    for step in (3, 4):  # logged twice: by the dead run, then by the resumed one
        assert expected["tokens_per_s"][step] != dead[step]
    for name in ("loss", "tokens_per_s", "val_loss/all"):
        assert scalars[name] == pytest.approx(expected[name], rel=1e-6), name


# --------------------------------------------------------------------------- Weights & Biases


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (``run-ID.wandb``), decoded with wandb's own
    schema (wandb.proto.wandb_internal_pb2.Record). The file is a 7-byte header (":W&B",
    magic 0xBEE1, version 0) then LevelDB's log format (leveldb/doc/log_format.md): 32 KiB
    blocks of chunks, each a masked CRC32C (4 bytes), a length (2, little-endian) and a type
    (1: full, 2: first, 3: middle, 4: last) before its data."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_writes_its_run_files_with_every_metric(tmp_path, monkeypatch):
    """WANDB_MODE=offline: the run's W&B file under RUN_DIR/wandb holds the config (every
    key) and, for every metrics.jsonl line, a history row with the same step and values."""
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install lmforge[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with one_thread():
        train(run_config(tmp_path, "wb", "tiny-gpt2", **LOGGED, **{"log.wandb": "lmforge-tests"}),
              quiet=True, log=quiet)
    run_dir = tmp_path / "wb"
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, list((run_dir / "wandb").rglob("*"))
    records = wandb_records(files[0])
    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    run_records = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(run_records) == 1 and run_records[0].project == "lmforge-tests"
    assert run_records[0].display_name == "wb" and run_records[0].run_id == run_id
    config = {item.key: json.loads(item.value_json) for item in run_records[0].config.update}
    assert set(hyperparameters(load_config(run_dir / "config.yaml", {}))) <= set(config)
    assert config["train.lr"] == pytest.approx(3e-3)
    assert config["log.wandb"] == "lmforge-tests"
    expected = metric_values(read_metrics(run_dir))
    by_step = {row["step"]: row for row in rows}
    assert sorted(by_step) == [1, 2, 3, 4, 5, 6]
    for name, values in expected.items():
        for step, value in values.items():
            assert by_step[step][name] == pytest.approx(value), (name, step)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("flags", "needle"), [
    (["--log.tensorboard", "true"], "pip install 'lmforge[tensorboard]'"),
    (["--log.wandb", "proj"], "pip install 'lmforge[wandb]'"),
])
def test_a_missing_extra_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, flags, needle):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    code, out, err = run_cli(capsys, "train", "--data.sources", "markov=builtin:markov", "--out-dir", tmp_path,
                             "--name", "r", *flags)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("project", ["", "team/proj", "a:b", "x" * 129])
def test_a_project_name_wandb_refuses_is_one_line(tmp_path, capsys, project):
    code, _, err = run_cli(capsys, "train", "--data.sources", "markov=builtin:markov", "--out-dir", tmp_path,
                           "--name", "r", "--log.wandb", project)
    assert code == 2
    assert "log.wandb must be a W&B project name" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()

