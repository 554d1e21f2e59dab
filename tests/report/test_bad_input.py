"""Input lmforge report cannot use: one line ``error: ...`` naming the value and the fix,
exit code 2, nothing written; and its --help."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli.cli_run import run


def _bad(capsys, tmp_path, *argv):
    before = sorted(p for p in tmp_path.rglob("*"))
    code, out, err = run(capsys, "report", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p for p in tmp_path.rglob("*")) == before, "something was written"
    return err


def test_a_missing_path(capsys, tmp_path):
    err = _bad(capsys, tmp_path, tmp_path / "nope")
    assert "run directory not found" in err and str(tmp_path / "nope") in err


def test_a_file_of_a_run(capsys, tmp_path, three_runs):
    copy = shutil.copytree(three_runs[0], tmp_path / "run")
    err = _bad(capsys, tmp_path, copy / "report.json")
    assert "not a directory" in err and f"lmforge report {copy}" in err


def test_a_directory_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    err = _bad(capsys, tmp_path, tmp_path / "notes")
    assert "not a run directory" in err and "lmforge train" in err


def test_the_directory_above_runs(capsys, tmp_path, three_runs):
    shutil.copytree(three_runs[0], tmp_path / "runs" / "a")
    err = _bad(capsys, tmp_path, tmp_path / "runs")
    assert "it holds runs" in err and f"lmforge report {tmp_path / 'runs' / 'a'}" in err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"predicted": {}, "measured": {}}'])
def test_an_unreadable_report(capsys, tmp_path, three_runs, content):
    copy = shutil.copytree(three_runs[0], tmp_path / "run")
    (copy / "report.json").write_text(content)
    err = _bad(capsys, tmp_path, copy)
    assert "report.json" in err and str(copy / "report.json") in err and "train the run again" in err


def test_a_damaged_weights_header(capsys, tmp_path, three_runs):
    copy = shutil.copytree(three_runs[0], tmp_path / "run")
    (copy / "model.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{}")
    err = _bad(capsys, tmp_path, copy)
    assert "safetensors header" in err and str(copy / "model.safetensors") in err


def test_a_quantized_run(capsys, tmp_path):
    run_dir = tmp_path / "q"
    run_dir.mkdir()
    (run_dir / "quantization.json").write_text(json.dumps({"source": {"run_dir": "/data/runs/base"}}))
    err = _bad(capsys, tmp_path, run_dir)
    assert "quantized run has no training of its own" in err and "lmforge report /data/runs/base" in err


def test_an_imported_run(capsys, tmp_path):
    run_dir = tmp_path / "imp"
    run_dir.mkdir()
    (run_dir / "import.json").write_text("{}")
    err = _bad(capsys, tmp_path, run_dir)
    assert "imported checkpoint" in err and f"lmforge eval {run_dir}" in err


def test_the_same_run_twice(capsys, tmp_path, three_runs):
    err = _bad(capsys, tmp_path, three_runs[0], three_runs[0], "--out", tmp_path / "x.png")
    assert "the same run is given twice" in err


def test_out_for_one_run(capsys, tmp_path, three_runs):
    err = _bad(capsys, tmp_path, three_runs[0], "--out", tmp_path / "x.png")
    assert "--out names the overlay PNG of several runs" in err


@pytest.mark.parametrize("name", ["plots", "curves.txt"])
def test_an_out_that_is_no_png_file(capsys, tmp_path, three_runs, name):
    (tmp_path / "plots").mkdir()
    err = _bad(capsys, tmp_path, *three_runs[:2], "--out", tmp_path / name)
    assert "--out" in err and str(tmp_path / name) in err


def test_help_and_no_run(capsys):
    code, out, _ = run(capsys, "report", "--help")
    assert code == 0 and "run_dirs" in out and "--out" in out and "--json" in out and "lmforge report runs/" in out
    code, out, err = run(capsys, "report")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "run_dirs" in err
