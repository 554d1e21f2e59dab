"""One run: the predicted-vs-measured rows carry report.json's and plan.json's numbers,
with the errors computed from them; a run without report.json reports metrics.jsonl."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from lmforge.dirlock import DirectoryLock
from lmforge.report.compare import NO_LAW, comparison_rows, format_error, to_dict
from lmforge.report.run import read_run, safetensors_params
from lmforge.report.side_by_side import final_numbers
from lmforge.runs import load_run
from tests.cli.cli_run import run


def _rows(run_dir):
    return {r.what.split(" (")[0]: r for r in comparison_rows(read_run(run_dir))}


def _files(run_dir):
    return (json.loads((run_dir / "report.json").read_text()), json.loads((run_dir / "plan.json").read_text()))


def test_rows_carry_report_and_plan_numbers(three_runs):
    run_dir = three_runs[0]
    report, plan = _files(run_dir)
    compare, rows = report["compare"], _rows(run_dir)
    assert rows["parameters"].predicted == plan["params"]
    assert rows["tokens"].predicted == plan["tokens"] and rows["tokens"].measured == report["measured"]["tokens"]
    assert rows["FLOPs"].predicted == plan["total_flops"]
    assert rows["FLOPs"].measured == pytest.approx(plan["flops_per_token"] * report["measured"]["tokens"])
    speed = rows["tokens/s"]
    assert (speed.predicted, speed.measured) == (plan["tokens_per_second"], report["measured"]["tokens_per_second"])
    # by hand: report.json's ratio is measured / predicted, so the relative error is ratio - 1
    assert speed.error == pytest.approx(compare["tokens_per_second"]["ratio"] - 1)
    assert format_error(speed) == f"{100 * (compare['tokens_per_second']['ratio'] - 1):+.1f}%"
    seconds = compare["seconds"]
    assert rows["time"].error == pytest.approx((seconds["measured"] - seconds["predicted"]) / seconds["predicted"])
    assert rows["time"].note == seconds["note"]
    memory = rows["memory per device"]
    assert (memory.predicted, memory.measured) == (plan["memory_bytes"], report["measured"]["peak_memory_bytes"])
    states = rows["model states per rank"]
    held = report["measured"]["memory_per_rank"][0]["held"]
    assert states.predicted == plan["memory"]["weights"] + plan["memory"]["gradients"] + \
        plan["memory"]["optimizer_states"]
    assert states.measured == sum(held.values())
    assert rows["precision"].measured == report["measured"]["precision"]


def test_loss_without_a_law_says_so(three_runs):
    loss = _rows(three_runs[0])["validation loss"]
    report, _ = _files(three_runs[0])
    assert loss.predicted == NO_LAW and loss.error is None
    assert loss.measured == report["measured"]["validation"]["all"]["loss"]
    assert loss.note == report["compare"]["loss"]["note"]


def test_loss_error_is_the_difference_in_nats(law_run):
    report, plan = _files(law_run)
    loss = _rows(law_run)["validation loss"]
    assert plan["loss"] is not None and loss.predicted == plan["loss"]
    by_hand = report["measured"]["validation"]["all"]["loss"] - plan["loss"]
    assert loss.error == pytest.approx(by_hand) == pytest.approx(report["compare"]["loss"]["error"])
    assert format_error(loss) == f"{by_hand:+.3f} nats"


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_parameters_from_the_header_equal_the_models(which, three_runs, llama_run):
    run_dir = three_runs[0] if which == "gpt2" else llama_run
    model = load_run(run_dir).model
    counted = sum(p.numel() for p in model.parameters())  # tied weights once
    assert safetensors_params(run_dir / "model.safetensors") == counted == _files(run_dir)[1]["params"]
    assert _rows(run_dir)["parameters"].error == 0


def test_table_and_json_from_the_cli(capsys, three_runs):
    run_dir = three_runs[1]
    report, plan = _files(run_dir)
    code, out, err = run(capsys, "report", run_dir)
    assert code == 0, err
    assert f"{plan['params']:,}" in out and "no law prediction" in out and "finished, 6 steps" in out
    assert f"tokens/s: {report['compare']['tokens_per_second']['note']}" in out
    code, out, err = run(capsys, "report", run_dir, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "finished" and data["final"]["steps"] == 6
    assert data["final"]["val_bpb"] == report["measured"]["validation"]["all"]["bits_per_byte"]
    by_what = {r["what"]: r for r in data["rows"]}
    assert by_what["tokens/s"]["measured"] == report["measured"]["tokens_per_second"]
    assert by_what["validation loss"]["predicted"] == NO_LAW


@pytest.fixture
def half_run(three_runs, tmp_path):
    """A copy of a run as it was after step 2 of 6: no report.json, no final weights."""
    run_dir = shutil.copytree(three_runs[2], tmp_path / "half")
    (run_dir / "report.json").unlink()
    (run_dir / "model.safetensors").unlink()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r["step"] <= 2))
    return run_dir


def test_a_run_still_training_reports_its_metrics(capsys, half_run):
    lock = DirectoryLock(half_run).acquire()  # this process is "training" it
    try:
        record = read_run(half_run)
        assert (record.status, record.owner_pid) == ("running", os.getpid())
        code, out, err = run(capsys, "report", half_run)
    finally:
        lock.release()
    assert code == 0, err
    assert f"running (pid {os.getpid()}), step 2 of 6" in out and "no report.json yet" in out
    rows = _rows(half_run)
    plan = json.loads((half_run / "plan.json").read_text())
    assert rows["tokens"].measured == 1024 and rows["tokens"].error is None
    assert rows["tokens"].note == f"so far: {100 * 1024 / plan['tokens']:.0f}% of the plan"
    assert rows["parameters"].measured == plan["params"]  # from the checkpoint's weights
    assert rows["memory per device"].measured is None
    assert read_run(half_run).status == "unfinished"  # the lock released: nothing trains it
    final = final_numbers(read_run(half_run))
    assert (final["steps"], final["tokens"], final["stopped_by"]) == (2, 1024, "unfinished")
    assert to_dict(read_run(half_run))["status"] == "unfinished"
