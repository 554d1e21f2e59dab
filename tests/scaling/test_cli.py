"""lmforge scaling fit / plot and plan --law from the command line: real answers, and every bad
input as one error line with exit code 2 that writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmforge.plan.laws import EPOCH
from lmforge.scaling.points import COLUMNS, write_sweep_csv
from tests.cli.cli_run import run
from tests.scaling.synthetic import isoflop_points

HEADER = ",".join(COLUMNS)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 4-budget x 7-size sweep from Epoch AI's law (0.3% noise), its sweep.json, and its law.json."""
    folder = tmp_path_factory.mktemp("sweep")
    csv = write_sweep_csv(folder / "sweep.csv", isoflop_points(EPOCH, noise=0.003, seed=5))
    (folder / "sweep.json").write_text(json.dumps({"tokenizer": {"sha256": "c" * 64, "vocab_size": 1024},
                                                   "data": {"sources": ["builtin:pydocs"], "sha256": "d" * 64}}))
    code = subprocess.run([sys.executable, "-m", "lmforge", "scaling", "fit", str(csv), "--bootstrap", "20"],
                          capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    return csv


def test_fit_prints_the_law_and_writes_law_json_beside_the_csv(sweep, capsys):
    law = sweep.with_name("law.json")
    record = json.loads(law.read_text())
    assert record["tokenizer"]["sha256"] == "c" * 64 and record["n_points"] == 28
    code, out, err = run(capsys, "scaling", "fit", sweep, "--bootstrap", 20, "--out", sweep.with_name("b.json"))
    assert code == 0, err
    for needle in ("Approach 3", "alpha (N exponent)", "95% interval", "Compute-optimal under your law",
                   "1e+21 FLOP", "extrapolated", "Approach 2: N* ~ C^a", f"wrote {sweep.with_name('b.json')}"):
        assert needle in out, needle
    assert json.loads(sweep.with_name("b.json").read_text())["constants"] == record["constants"]  # same seed


def test_fit_json(sweep, tmp_path, capsys):
    code, out, err = run(capsys, "scaling", "fit", sweep.parent, "--bootstrap", 0, "--params", "non-embedding",
                         "--out", tmp_path / "law.json", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["n_counts"] == "non_embedding_params" and data["runs"] == 28
    assert data["approach3"]["constants"]["alpha"] == pytest.approx(EPOCH.alpha, abs=0.03)
    assert data["approach2"]["a"] == pytest.approx(EPOCH.a, abs=0.03)
    assert [row["flops"] for row in data["optimal"]] == [1e17, 1e18, 1e19, 1e20, 1e21, 1e24]


def test_plot_writes_the_png(sweep, tmp_path, capsys):
    code, out, err = run(capsys, "scaling", "plot", sweep, "--law", sweep.with_name("law.json"))
    assert code == 0, err
    png = sweep.with_name("plot.png")
    assert out.strip() == f"wrote {png}" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "scaling", "plot", sweep, "--out", tmp_path / "fit-here.png")
    assert code == 0, err
    assert (tmp_path / "fit-here.png").stat().st_size > 20_000


@pytest.mark.parametrize("budget", [["--flops", "1e21"], ["--gpus", "8xH100", "--days", "3"], ["--dollars", "1e5"],
                                    ["--params", "1B"], ["--tokens", "20B"], ["--params", "1B", "--tokens", "20B"]],
                         ids=" ".join)
def test_plan_law_adds_a_row_for_every_budget_form(sweep, capsys, budget):
    code, out, err = run(capsys, "plan", *budget, "--law", sweep.with_name("law.json"), "--json")
    assert code == 0, err
    rows = {r["law"]: r for r in json.loads(out)["laws"]}
    assert list(rows)[-1] == "fitted" and "chinchilla" in rows
    fitted = rows["fitted"]
    assert fitted["n_params"] > 0 and fitted["n_tokens"] > 0 and fitted["predicted_loss"] > EPOCH.E * 0.9
    assert "your data and tokenizer" in fitted["loss_dataset"]
    code, out, err = run(capsys, "plan", *budget, "--law", sweep.with_name("law.json"))
    assert code == 0 and "fitted" in out and "† fitted" in out, err


def test_plan_compare_with_the_law_and_the_20x_column(sweep, capsys):
    code, out, err = run(capsys, "plan", "--compare", "--law", sweep.with_name("law.json"), "--json")
    assert code == 0, err
    chinchilla = json.loads(out)[0]
    assert chinchilla["twenty_x_tokens"] == pytest.approx(1.4e12) and chinchilla["verdicts"][-1]["law"] == "fitted"
    code, out, _ = run(capsys, "plan", "--compare")
    assert code == 0 and "compute-optimal tokens" in out and "3.52T" in out  # BLOOM-176B: 20 x 176B


PLAN_PROBE = """
import contextlib, io, sys
from lmforge.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(code, ",".join(sorted(m for m in ("torch", "numpy", "scipy", "matplotlib") if m in sys.modules)) or "none")
"""


def test_plan_with_a_law_imports_neither_torch_nor_numpy(sweep):
    done = subprocess.run([sys.executable, "-c", PLAN_PROBE, "plan", "--flops", "1e21", "--law",
                           str(sweep.with_name("law.json"))], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "none"], done.stderr


# ---- bad input -----------------------------------------------------------------------------


def _csv(folder, *rows, header=HEADER):
    path = folder / "sweep.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _rows(n, budgets=(1e17, 1e18)):
    return [f"r{b:.0e}-{i},{b},{10 ** (6 + i / 2):.0f},,{b / (6 * 10 ** (6 + i / 2)):.0f},{b},{4 - 0.1 * i},,"
            for b in budgets for i in range(n)]


BAD = [
    (lambda p: ["scaling", "fit", p / "none.csv"], "sweep CSV not found"),
    (lambda p: ["scaling", "fit", _csv(p, "r,1e17,1e6,1e10,3", header="run,budget_flops,params,tokens")],
     "lacks column(s) loss"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(3), "x,1e17,-1e6,,1e9,,3.0,,")],
     "non-positive value in the sweep CSV at row 7, column params"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(3), "x,1e17,1e6,,inf,,3.0,,")],
     "non-finite value in the sweep CSV at row 7, column tokens"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(2, budgets=(1e17,)))], "fewer runs than the law has parameters"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(6, budgets=(1e17,)))], "Approach 2 needs two or more budgets"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(3)), "--bootstrap", "-1"], "--bootstrap must be zero or more"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(3)), "--params", "non-embedding"], "no non_embedding_params"),
    (lambda p: ["scaling", "fit", _csv(p, *_rows(3)), "--out", p / "no" / "law.json"], "does not exist"),
    (lambda p: ["scaling", "plot", p / "none.csv"], "sweep CSV not found"),
    (lambda p: ["scaling", "plot", _csv(p, *_rows(3)), "--law", p / "nolaw.json"], "law file not found"),
    (lambda p: ["plan", "--flops", "1e21", "--law", p / "nolaw.json"], "law file not found"),
    (lambda p: ["plan", "--flops", "1e21", "--law", (p / "law.json", (p / "law.json").write_text("{"))[0]],
     "bad law file: not JSON"),
    (lambda p: ["plan", "--compare", "--law", (p / "law.json", (p / "law.json").write_text(
        json.dumps({"kind": "fitted", "constants": {"E": 1.8, "A": 400, "B": 400, "alpha": -0.3, "beta": 0.3}})))[0]],
     "alpha must be finite and positive"),
]


@pytest.mark.parametrize("make_argv, needle", BAD, ids=[f"{i}-{needle}" for i, (_, needle) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, make_argv, needle):
    argv = make_argv(tmp_path)
    before = set(tmp_path.rglob("*"))
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert out == ""
    assert set(tmp_path.rglob("*")) == before  # no law.json, no plot.png, no temp file
