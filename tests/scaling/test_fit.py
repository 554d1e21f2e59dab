"""Both fits of a sweep, the compute-optimal table, and law.json written and read back."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.errors import UserError
from lmforge.plan.fitted import read_law
from lmforge.plan.laws import EPOCH
from lmforge.scaling.fit import fit_points, law_record, optimal_points, write_law
from lmforge.scaling.points import SweepPoint
from tests.scaling.synthetic import isoflop_points

BUDGETS = (1e17, 1e18, 1e19, 1e20)
META = {"tokenizer": {"sha256": "a" * 64, "vocab_size": 1024}, "data": {"sources": ["builtin:pydocs"],
        "sha256": "b" * 64}, "seq_len": 128, "budgets": list(BUDGETS), "sizes": 7}


@pytest.fixture(scope="module")
def noisy():
    return fit_points(isoflop_points(EPOCH, budgets=BUDGETS, noise=0.003, seed=2), bootstrap=40)


def test_law_json_round_trip(tmp_path, noisy):
    path = write_law(tmp_path / "law.json", noisy.approach3, noisy.approach2, META, sweep_path="runs/s/sweep.csv")
    record = json.loads(path.read_text())
    assert record["kind"] == "fitted" and record["n_points"] == 28 and record["sweep"] == "runs/s/sweep.csv"
    assert record["tokenizer"]["sha256"] == "a" * 64 and record["data"]["sources"] == ["builtin:pydocs"]
    assert set(record["approach2"]) >= {"a", "a_stderr", "a_ci95", "b", "b_ci95"}
    law = read_law(path)
    c = noisy.approach3.constants
    assert (law.E, law.A, law.B, law.alpha, law.beta) == (c["E"], c["A"], c["B"], c["alpha"], c["beta"])
    assert law.tokenizer_sha256 == "a" * 64 and law.vocab_size == 1024 and law.data_sha256 == "b" * 64
    assert law.stderr == noisy.approach3.stderr and law.ci95["alpha"] == noisy.approach3.ci95["alpha"]
    assert law.n_counts == "params" and "your data and tokenizer" in law.loss_dataset
    assert law.loss(1e8, 2e9) == pytest.approx(float(noisy.approach3.predict(1e8, 2e9)), rel=1e-12)


def test_optimal_points_are_eq4_of_the_fitted_law(tmp_path, noisy):
    """N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b (Hoffmann et al. 2022, Eq. 4): the same as the
    planner's ParametricLaw.compute_optimal of the law read back from law.json."""
    law = read_law(write_law(tmp_path / "law.json", noisy.approach3, noisy.approach2, None))
    for row in optimal_points(noisy.approach3, [1e17, 1e21]):
        n, d = law.compute_optimal(row["flops"])
        assert row["n_opt"] == pytest.approx(n, rel=1e-12) and row["d_opt"] == pytest.approx(d, rel=1e-12)
        assert 6 * row["n_opt"] * row["d_opt"] == pytest.approx(row["flops"], rel=1e-12)
        lo, hi = row["n_opt_ci95"]
        assert lo < row["n_opt"] < hi
    assert law.tokenizer_sha256 is None and "unrecorded" in law.loss_dataset


def test_non_embedding_counts_rescale_A_exactly():
    """With N_ne = 0.8 N (synthetic.py), A / N^alpha = A 0.8^alpha / N_ne^alpha: the same law
    fitted on non-embedding counts has A' = A 0.8^alpha and everything else unchanged."""
    points = isoflop_points(EPOCH, budgets=BUDGETS)
    points = [SweepPoint(p.run, p.budget_flops, p.params, 0.8 * p.params, p.tokens, p.flops, p.loss) for p in points]
    total = fit_points(points, bootstrap=0).approach3.constants
    ne = fit_points(points, n_counts="non_embedding_params", bootstrap=0)
    assert ne.approach3.n_counts == "non_embedding_params"
    assert ne.approach3.constants["A"] == pytest.approx(total["A"] * 0.8 ** total["alpha"], rel=1e-3)
    assert ne.approach3.constants["alpha"] == pytest.approx(total["alpha"], rel=1e-4)
    assert law_record(ne.approach3, None, None)["n_counts"] == "non_embedding_params"


def test_bad_sweeps():
    points = isoflop_points(EPOCH, budgets=BUDGETS)
    with pytest.raises(UserError, match="fewer runs than the law has parameters"):
        fit_points(points[:4])
    with pytest.raises(UserError, match="Approach 2 needs two or more budgets"):
        fit_points(points[:7])
    missing = [SweepPoint(p.run, p.budget_flops, p.params, None, p.tokens, p.flops, p.loss) for p in points]
    with pytest.raises(UserError, match="no non_embedding_params for 28 run"):
        fit_points(missing, n_counts="non_embedding_params")
    flat = [SweepPoint(p.run, p.budget_flops, p.params, None, p.tokens, p.flops,
                       3.0 + 0.01 * math.sin(i)) for i, p in enumerate(points)]
    with pytest.raises(UserError, match="the fit found no fall of the loss with"):
        fit_points(flat, bootstrap=0)


def test_repeated_data_is_fitted_as_effective_tokens():
    """Runs that repeat a corpus of U tokens are fitted on D' = U + U R* (1 - exp(-R / R*))
    (Muennighoff et al. 2023, Eq. 5): points drawn from L(N, D') give the law back; fitted on
    the raw D they would not (the loss stops falling with D once the data repeats)."""
    from lmforge.plan.isoflop import effective_tokens

    unique = 3e9
    clean = isoflop_points(EPOCH, budgets=BUDGETS)
    repeated = [SweepPoint(run=p.run, budget_flops=p.budget_flops, params=p.params,
                           non_embedding_params=p.non_embedding_params, tokens=p.tokens, flops=p.flops,
                           loss=EPOCH.E + EPOCH.A / p.params**EPOCH.alpha
                           + EPOCH.B / effective_tokens(p.tokens, unique) ** EPOCH.beta) for p in clean]
    assert sum(p.tokens > unique for p in repeated) >= 5  # the larger budgets repeat the data
    aware = fit_points(repeated, bootstrap=0, unique_tokens=unique).approach3.constants
    naive = fit_points(repeated, bootstrap=0).approach3.constants
    assert aware["beta"] == pytest.approx(EPOCH.beta, rel=0.02) and aware["E"] == pytest.approx(EPOCH.E, rel=0.02)
    assert abs(naive["beta"] - EPOCH.beta) > 3 * abs(aware["beta"] - EPOCH.beta)
    record = law_record(fit_points(repeated, bootstrap=0, unique_tokens=unique).approach3, None,
                        {**META, "unique_train_tokens": unique})
    assert record["data_constrained"]["unique_train_tokens"] == unique
