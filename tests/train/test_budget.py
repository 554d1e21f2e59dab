"""train --budget: the planner sizes the run; plan.json predicts the loss, report.json measures it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmforge.data.sources import iter_documents, parse_source
from lmforge.data.tokenizer import train_tokenizer
from lmforge.plan.flops import palm_flops_per_token
from lmforge.train.config import load_config
from lmforge.train.loop import train
from lmforge.train.model_setup import model_spec
from tests.cli.cli_run import run as cli

DATA = ["--data.sources", "markov=builtin:markov", "--data.vocab_size", "360", "--data.seq_len", "32",
        "--train.precision", "fp32", "--train.eval_tokens", "4096", "--quiet"]


def _law(path: Path, tokenizer_sha256: str | None, **constants) -> Path:
    values = {"E": 1.2, "A": 40.0, "B": 60.0, "alpha": 0.3, "beta": 0.3, **constants}
    record = {"kind": "fitted", "constants": values, "n_counts": "params", "n_points": 20,
              "tokenizer": {"sha256": tokenizer_sha256, "vocab_size": 360} if tokenizer_sha256 else None}
    path.write_text(json.dumps(record))
    return path


def test_a_flop_budget_trains_the_planned_shape_on_exactly_its_compute(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--budget", "5e10", "--name", "b", "--out-dir", tmp_path, *DATA)
    assert code == 0, err
    run = tmp_path / "b"
    plan = json.loads((run / "plan.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert plan["budget"]["kind"] == "flops" and plan["budget"]["flops"] == 5e10
    choice = plan["budget"]["choice"]
    config = load_config(run / "config.yaml")
    assert config.train.budget is None and config.model.n_layers == choice["n_layers"]  # the resolved run
    assert config.model.d_model == choice["d_model"] and plan["params"] == choice["params"]
    spec = model_spec(config.model, 360, 32)
    spent = report["measured"]["tokens"] * palm_flops_per_token(spec, 32)
    assert abs(spent / 5e10 - 1) < 0.01  # within one batch of the budget
    assert "budget 5e10: 5e+10 FLOP ->" in out
    raw = yaml.safe_load((run / "config.yaml").read_text())
    assert raw["train"]["max_tokens"] == str(choice["tokens"])


def test_a_law_fitted_with_this_tokenizer_predicts_the_loss_and_the_report_measures_it(tmp_path, capsys):
    spec = parse_source("markov=builtin:markov")
    tokenizer = train_tokenizer(iter_documents(spec), 360)
    tokenizer.save(tmp_path / "tokenizer.json")
    law = _law(tmp_path / "law.json", tokenizer.sha256)
    code, out, err = cli(capsys, "train", "--budget", "5e10", "--law", law, "--data.tokenizer",
                         tmp_path / "tokenizer.json", "--name", "p", "--out-dir", tmp_path, *DATA)
    assert code == 0, err
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    n, d = plan["params"], plan["budget"]["choice"]["effective_tokens"]
    assert plan["loss"] == pytest.approx(1.2 + 40.0 / n**0.3 + 60.0 / d**0.3)
    compare = report["compare"]["loss"]
    assert compare["predicted"] == plan["loss"]
    assert compare["measured"] == report["measured"]["validation"]["all"]["loss"]
    assert compare["error"] == pytest.approx(compare["measured"] - compare["predicted"])
    assert "predicted validation loss" in out


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_a_law_fitted_with_another_tokenizer_warns_and_still_plans(tmp_path, capsys):
    law = _law(tmp_path / "law.json", "0" * 64)
    code, out, err = cli(capsys, "train", "--budget", "5e10", "--law", law, "--name", "w", "--out-dir", tmp_path,
                         *DATA)
    assert code == 0, err
    assert "warning: the law" in out and "fitted with another tokenizer" in out
    plan = json.loads((tmp_path / "w" / "plan.json").read_text())
    assert plan["loss"] is not None and any("another tokenizer" in n for n in plan["budget"]["notes"])


def test_a_run_sized_by_tokens_predicts_its_loss_from_an_explicit_law(tmp_path):
    law = _law(tmp_path / "law.json", None)
    config = load_config(None, {"name": "t", "out_dir": str(tmp_path), "data.sources": ["markov=builtin:markov"],
                                "data.vocab_size": 360, "data.seq_len": 32, "train.batch_tokens": 256,
                                "train.micro_batch": 8, "train.max_tokens": "2048", "train.precision": "fp32",
                                "train.eval_tokens": 4096, "train.law": str(law), "model.n_layers": 1})
    train(config, quiet=True, log=lambda *a, **k: None)
    plan = json.loads((tmp_path / "t" / "plan.json").read_text())
    assert plan["loss"] == pytest.approx(1.2 + 40.0 / plan["params"] ** 0.3 + 60.0 / plan["tokens"] ** 0.3, rel=1e-3)


def test_without_a_law_for_this_tokenizer_plan_json_says_why(tmp_path):
    config = load_config(None, {"name": "n", "out_dir": str(tmp_path), "data.sources": ["markov=builtin:markov"],
                                "data.vocab_size": 360, "data.seq_len": 32, "train.batch_tokens": 256,
                                "train.micro_batch": 8, "train.max_steps": 1, "train.precision": "fp32",
                                "train.eval_tokens": 4096, "model.n_layers": 1})
    train(config, quiet=True, log=lambda *a, **k: None)
    plan = json.loads((tmp_path / "n" / "plan.json").read_text())
    assert plan["loss"] is None and plan["loss_source"]


@pytest.mark.parametrize("extra, match", [
    (["--budget", "5 parsecs"], "cannot read --budget as a time or a FLOP count"),
    (["--budget", "0s"], "must be greater than zero"),
    (["--budget", "1e12", "--tokens", "1M"], "--budget sizes the run; --tokens is set too"),
    (["--budget", "1e12", "--model.d_model", "64"], "--budget chooses the model's shape; --model.d_model is set"),
    (["--budget", "1e12", "--model.preset", "tiny-bert"], "plans decoder-only"),
    (["--budget", "1e12", "--law", "nowhere.json"], "law file not found"),
    (["--budget", "1e12", "--law", "chinchila"], "unknown law"),
    (["--budget", "1e6"], "budget too small for the smallest runnable model"),
    (["--budget", "5s"], "--budget is too short to plan and train"),
])
def test_bad_budgets_are_one_line_and_leave_nothing(tmp_path, capsys, extra, match):
    code, out, err = cli(capsys, "train", *extra, "--name", "bad", "--out-dir", tmp_path, *DATA)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err
    assert not (tmp_path / "bad").exists()
