"""Several runs: one table of final numbers, one PNG with two panels overlaying their
loss curves, and --json with every run."""

from __future__ import annotations

import json
import shutil
import struct

from lmforge.report.overlay import overlay_figure, run_curve
from lmforge.report.run import read_run, read_runs
from tests.cli.cli_run import run


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _val_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_loss/all" in r]


def test_png_json_and_table(capsys, three_runs, tmp_path):
    out = tmp_path / "plots" / "three.png"
    code, text, err = run(capsys, "report", *three_runs, "--out", out)
    assert code == 0, err
    assert _png_size(out) == (12 * 120, int(4.8 * 120))  # the figure's inches x dpi: both panels drawn
    for run_dir in three_runs:
        assert run_dir.name in text
    assert f"loss curves: {out}" in text

    code, text, err = run(capsys, "report", *three_runs, "--out", out, "--json")  # replaces the PNG
    assert code == 0, err
    data = json.loads(text)
    assert data["plot"] == str(out)
    assert [r["name"] for r in data["runs"]] == ["lr0.001", "lr0.003", "lr0.01"]
    for numbers, run_dir in zip(data["runs"], three_runs, strict=True):
        measured = json.loads((run_dir / "report.json").read_text())["measured"]
        assert numbers["val_loss"] == measured["validation"]["all"]["loss"]
        assert numbers["train_loss"] == measured["final_loss"]
        assert (numbers["steps"], numbers["tokens"], numbers["stopped_by"]) == (6, 3072, "steps")
        assert numbers["model"] == "tiny-gpt2 (4 x 128)"


def test_the_figure_overlays_validation_curves(three_runs):
    records = read_runs(three_runs)
    figure = overlay_figure(records)
    by_tokens, by_time = figure.axes
    for ax in figure.axes:
        assert len(ax.get_lines()) == 3
    assert [t.get_text() for t in by_tokens.get_legend().get_texts()] == ["lr0.001", "lr0.003", "lr0.01"]
    assert "tokens" in by_tokens.get_xlabel() and "wall time (s" in by_time.get_xlabel()
    for line, run_dir in zip(by_tokens.get_lines(), three_runs, strict=True):
        val = _val_records(run_dir)  # validated at steps 3 and 6: 1536 and 3072 tokens
        assert list(line.get_xdata()) == [r["tokens"] for r in val] == [1536, 3072]
        assert list(line.get_ydata()) == [r["val_loss/all"] for r in val]
    for line in by_time.get_lines():
        seconds = list(line.get_xdata())
        assert 0 < seconds[0] < seconds[1]


def test_a_run_without_validation_draws_its_training_loss(three_runs, tmp_path):
    run_dir = shutil.copytree(three_runs[0], tmp_path / "noval")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in records]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    curve = run_curve(read_run(run_dir))
    assert curve.key == "loss" and curve.by_tokens == [r["loss"] for r in kept]
    figure = overlay_figure([read_run(run_dir), read_run(three_runs[1])])
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["noval (training loss)", "lr0.003"]


def test_runs_of_the_same_name_are_told_apart_by_path(three_runs, tmp_path):
    twin = shutil.copytree(three_runs[0], tmp_path / "elsewhere" / three_runs[0].name)
    records = read_runs([three_runs[0], twin])
    assert [r.name for r in records] == [str(three_runs[0]), str(twin)]
