"""metrics.jsonl logging and reading, the progress display, and plots/loss.png."""

from __future__ import annotations

import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch

from lmforge.errors import UserError
from lmforge.train.metrics import MetricsLogger, Progress, format_duration, json_safe, read_metrics
from lmforge.train.plots import loss_curves, plot_loss


def test_logger_writes_one_flushed_json_line_per_record(tmp_path):
    with MetricsLogger(tmp_path) as log:
        log.log(1, loss=3.5, tokens=512, lr=1e-3)
        # flushed: readable before close
        assert read_metrics(tmp_path)[0]["loss"] == 3.5
        log.log(2, loss=float("nan"), grad_norm=float("inf"), mfu=np.float32(0.25), tps=torch.tensor(10.0))
        log.log(3, eval_loss=3.0, **{"eval_loss/pydocs": 3.1})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        json.loads(line)  # strict JSON: no NaN / Infinity tokens
        assert "NaN" not in line and "Infinity" not in line
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert list(records[0])[:1] == ["step"] and isinstance(records[0]["time"], float)
    assert records[1]["loss"] is None and records[1]["grad_norm"] is None
    assert records[1]["mfu"] == 0.25 and records[1]["tps"] == 10.0
    assert records[2]["eval_loss/pydocs"] == 3.1


def test_json_safe_rejects_unknown_types():
    assert json_safe({"a": (1, 2.0, float("-inf"))}) == {"a": [1, 2.0, None]}
    with pytest.raises(TypeError):
        json_safe(object())
    with pytest.raises(TypeError):
        json_safe(torch.ones(3))  # a whole tensor is a bug, not a metric


def test_resume_drops_lines_after_the_checkpoint_and_partial_last_line(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 8):
            log.log(step, loss=10.0 - step)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # killed mid-line
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 8))  # partial line skipped

    with MetricsLogger(tmp_path, resume_step=5) as log:  # resumed from checkpoint step 5
        log.log(6, loss=0.5)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert read_metrics(tmp_path)[-1]["loss"] == 0.5

    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    with MetricsLogger(tmp_path) as log:  # plain reopen repairs the partial line before appending
        log.log(7, loss=0.25)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6, 7]


def test_read_metrics_errors(tmp_path):
    with pytest.raises(UserError, match="metrics file not found"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match=r"corrupt metrics file.*metrics.jsonl:2"):
        read_metrics(tmp_path)


def test_progress_compact_lines_when_not_a_terminal():
    out = io.StringIO()
    with Progress(100, every=25, stream=out) as bar:
        assert not bar.live
        for step in range(1, 101):
            bar.update(step, loss=4.0 - step / 100, tokens_per_s=12345.6, mfu=0.412, lr=3e-4, grad_norm=1.5)
        bar.print("eval loss 3.1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # step 1 (first), 25, 50, 75, 100, the message
    assert lines[1].startswith("train step 25/100 (25%) | loss 3.7500 | 12,346 tok/s | MFU 41.2% | lr 3.00e-04")
    assert "grad_norm 1.5" in lines[1] and "ETA " in lines[1]
    assert lines[4].endswith("ETA 0s") and lines[5] == "eval loss 3.1"


def test_progress_quiet_and_silent():
    out = io.StringIO()
    with Progress(10, quiet=True, every=0, stream=out) as bar:
        for step in range(1, 11):
            bar.update(step, loss=1.0)
    assert out.getvalue() == ""


def test_progress_live_bar_on_a_terminal():
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = FakeTTY()
    with Progress(50, stream=out, start_step=10) as bar:
        assert bar.live
        for step in range(11, 51):
            bar.update(step, loss=2.5, tokens_per_s=2000.0, mfu=0.5, lr=1e-3)
    text = out.getvalue()
    assert "50/50" in text and "2.5000" in text and "2,000 tok/s" in text and "MFU 50.0%" in text


def test_format_duration():
    seconds = (None, math.nan, 0, 42.4, 312, 3720)
    assert [format_duration(s) for s in seconds] == ["?", "?", "0s", "42s", "5m12s", "1h02m"]


# --------------------------------------------------------------------------- plots


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"
    return struct.unpack(">II", data[16:24])


def fake_run(n: int = 60) -> list[dict]:
    records = []
    for step in range(1, n + 1):
        records.append({"step": step, "tokens": step * 2048, "loss": 5.0 * step**-0.3, "lr": 1e-3})
        if step % 20 == 0:
            records.append({"step": step, "eval_loss": 5.1 * step**-0.3, "eval_loss/markov": 4.9 * step**-0.3})
    return records


@pytest.mark.parametrize("log_x", [False, True])
def test_plot_loss_writes_a_valid_png(tmp_path, log_x):
    out = plot_loss(fake_run(), tmp_path / "plots" / "loss.png", log_x=log_x, references={"entropy rate": 1.2})
    assert out == tmp_path / "plots" / "loss.png"
    width, height = png_size(out)
    assert 600 <= width <= 2000 and 400 <= height <= 1500
    assert 10_000 < out.stat().st_size < 1_000_000
    assert [p.name for p in out.parent.iterdir()] == ["loss.png"]  # no temp file left


def test_plot_loss_by_step_and_errors(tmp_path):
    records = [{"step": s, "loss": 3.0 / s} for s in range(1, 10)]  # no token counts: x is the step
    png_size(plot_loss(records, tmp_path / "loss.png", title="tiny"))
    with pytest.raises(UserError, match="no loss to plot"):
        plot_loss([{"step": 1, "lr": 1e-3}], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_loss_curves_place_eval_records_by_tokens():
    records = fake_run(40)
    records.append({"step": 40, "tokens": 40 * 2048, "val_loss/all": 1.5, "val_bpb/all": 0.9})
    curves, axis = loss_curves(records)
    labels = [c[0] for c in curves]
    assert labels == ["train", "eval", "eval/markov", "val/all"]
    train, evals = curves[0], curves[1]
    assert train[1][:2] == [2048.0, 4096.0] and len(train[1]) == 40
    assert evals[1] == [20 * 2048.0, 40 * 2048.0]  # eval records carry no tokens: placed by their step
    assert float(axis[0](81920.0)) == 40.0 and float(axis[1](10)) == 20480.0
    by_step, no_axis = loss_curves([{"step": 3, "loss": 1.0}, {"step": 4, "loss": 0.5}])
    assert no_axis is None and by_step == [("train", [3.0, 4.0], [1.0, 0.5])]
