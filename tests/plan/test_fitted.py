"""A fitted law.json in the planner: read (pure Python), checked, and one more row for every budget form."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.errors import UserError
from lmforge.plan.allocate import allocate, resolve_budget
from lmforge.plan.fitted import FittedLaw, read_law
from lmforge.plan.known_runs import compare_known
from lmforge.plan.laws import EPOCH, ParametricLaw
from lmforge.plan.planner import make_plan

# Epoch AI's refit (Besiroglu et al. 2024) written as a user's law.json.
RECORD = {"kind": "fitted", "constants": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
          "stderr": {"E": 0.03}, "ci95": {"E": [1.76, 1.87]}, "n_counts": "params", "n_points": 240,
          "tokenizer": {"sha256": "f" * 64, "vocab_size": 32000}, "data": {"sources": ["x"], "sha256": "e" * 64},
          "approach2": {"a": 0.5, "a_ci95": [0.45, 0.55]}}


@pytest.fixture
def law_file(tmp_path):
    path = tmp_path / "law.json"
    path.write_text(json.dumps(RECORD))
    return path


def test_read_law_is_a_parametric_law(law_file):
    law = read_law(law_file)
    assert isinstance(law, FittedLaw) and isinstance(law, ParametricLaw) and law.name == "fitted"
    assert law.compute_optimal(5.76e23) == pytest.approx(EPOCH.compute_optimal(5.76e23), rel=1e-12)
    assert law.loss(70e9, 1.4e12) == pytest.approx(EPOCH.loss(70e9, 1.4e12), rel=1e-12)
    assert law.ci95 == {"E": (1.76, 1.87)} and law.approach2["a"] == 0.5 and law.n_points == 240
    assert "f" * 12 in law.loss_dataset and "e" * 12 in law.loss_dataset
    assert law.to_dict()["kind"] == "FittedLaw"


@pytest.mark.parametrize("budget", [
    dict(flops=1e21), dict(gpus="8xH100", days=2), dict(dollars=1e5), dict(params="1B"), dict(tokens="20B"),
    dict(params="1B", tokens="20B"),
], ids=["flops", "gpus x days", "dollars", "params", "tokens", "both"])
def test_the_fitted_law_answers_every_budget_form_like_its_constants(law_file, budget):
    """The fitted row equals the same constants as a published ParametricLaw (Epoch's)."""
    law = read_law(law_file)
    resolved = resolve_budget(**budget)
    ours = allocate(resolved, ["20x"], extra_laws=[law])
    assert [a.law for a in ours] == ["20x", "fitted"]
    reference = allocate(resolved, ["epoch"])[0]
    fitted = ours[1]
    for key in ("n_params", "n_tokens", "flops", "predicted_loss"):
        assert getattr(fitted, key) == pytest.approx(getattr(reference, key), rel=1e-9), key
    assert fitted.loss_dataset == law.loss_dataset and fitted.loss_law == "fitted"
    plan = make_plan(resolved, ["20x"], extra_laws=[law])
    assert plan.to_dict()["laws"][1]["law"] == "fitted" and plan.rows[1].shape is not None


def test_non_embedding_law_is_noted(tmp_path):
    path = tmp_path / "law.json"
    path.write_text(json.dumps({**RECORD, "n_counts": "non_embedding_params"}))
    (row,) = allocate(resolve_budget(flops=1e21), [], extra_laws=[read_law(path)])
    assert any("non-embedding" in note for note in row.notes)


def test_compare_known_with_the_fitted_law(law_file):
    rows = compare_known(["20x"], extra_laws=(read_law(law_file),))
    assert [v.law for v in rows[0].verdicts] == ["20x", "fitted"]
    assert rows[0].verdict("fitted").undertrained == pytest.approx(compare_known(["epoch"])[0].verdicts[0].undertrained)


BAD = [
    (None, "law file not found"),
    ("{not json", "not JSON"),
    (json.dumps([1, 2]), "not a JSON object"),
    (json.dumps({**RECORD, "kind": "chinchilla"}), "kind is 'chinchilla', not 'fitted'"),
    (json.dumps({"kind": "fitted"}), "no constants"),
    (json.dumps({**RECORD, "constants": {"E": 1.8, "A": 400}}), "missing constant(s) B, alpha, beta"),
    (json.dumps({**RECORD, "constants": {**RECORD["constants"], "alpha": -0.3}}), "alpha must be finite and positive"),
    (json.dumps({**RECORD, "constants": {**RECORD["constants"], "E": 0}}), "E must be finite and positive"),
    (json.dumps({**RECORD, "constants": {**RECORD["constants"], "B": math.inf}}), "B must be finite and positive"),
    (json.dumps({**RECORD, "constants": {**RECORD["constants"], "A": "big"}}), "A is not a number"),
    (json.dumps({**RECORD, "n_counts": "all"}), "n_counts is 'all'"),
]


@pytest.mark.parametrize("text, needle", BAD, ids=[needle for _, needle in BAD])
def test_bad_law_files(tmp_path, text, needle):
    path = tmp_path / "law.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError) as info:
        read_law(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
