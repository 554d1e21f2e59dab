"""Budgets, per-law allocations and known runs (time and cost: test_cost.py)."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.errors import UserError
from lmforge.plan.allocate import Budget, allocate, resolve_budget
from lmforge.plan.known_runs import KNOWN_RUNS, compare_known
from lmforge.plan.laws import CHINCHILLA, LAWS

# 64 x H100-SXM (989 TFLOP/s bf16 dense, NVIDIA data sheet) x MFU 0.4 x 14 days, by hand:
# 64 * 989e12 = 6.3296e16; * 0.4 = 2.53184e16 FLOP/s; * 14 * 86400 s = 3.06251e22 FLOP.
H100_64_14DAYS = 3.06251e22


# ---------------------------------------------------------------- resolve_budget


def test_flops_budget_and_strings():
    assert resolve_budget(flops=1e23).flops == 1e23
    budget = resolve_budget(flops="3e23")
    assert budget.flops == 3e23 and budget.source == "flops" and budget.fixed == "none"


def test_gpus_times_days_by_hand():
    budget = resolve_budget(gpus="64xH100", days=14)
    assert budget.flops == pytest.approx(H100_64_14DAYS, rel=1e-5)
    assert budget.source == "gpus x days"
    assert (budget.gpu, budget.gpu_count, budget.days) == ("H100-SXM", 64, 14)
    # MFU scales linearly: 0.5 instead of 0.4.
    assert resolve_budget(gpus="64xH100", days=14, mfu=0.5).flops == pytest.approx(H100_64_14DAYS * 1.25, rel=1e-5)


def test_dollars_with_example_price_by_hand():
    """$1M / $2.50 per H100-hour (hardware.py example) = 400,000 GPU-hours * 3600 * 989e12 * 0.4 = 5.6966e23."""
    budget = resolve_budget(dollars=1e6)
    assert budget.flops == pytest.approx(5.6966e23, rel=1e-4)
    assert budget.gpu == "H100-SXM"
    assert any("EXAMPLE" in note for note in budget.notes)


def test_dollars_with_price_override_and_gpu_kind():
    """$1M / $2.00 = 500,000 A100-hours * 3600 * 312e12 * 0.4 = 2.2464e23; 8 GPUs -> 500000/8/24 days."""
    budget = resolve_budget(dollars=1e6, gpus="8xA100", price_per_hour=2.0)
    assert budget.flops == pytest.approx(2.2464e23, rel=1e-4)
    assert budget.days == pytest.approx(500000 / 8 / 24)
    assert not any("EXAMPLE" in note for note in budget.notes)


def test_params_and_tokens_give_six_n_d():
    budget = resolve_budget(params="7B", tokens="1.4T")
    assert budget.flops == pytest.approx(6 * 7e9 * 1.4e12)
    assert budget.fixed == "both" and budget.compute_given is False


def test_params_with_compute_gives_tokens():
    budget = resolve_budget(flops=6e21, params=1e9)
    assert budget.n_tokens == pytest.approx(1e12)
    assert budget.fixed == "params" and budget.compute_given


def test_tokens_with_compute_gives_params():
    budget = resolve_budget(gpus="64xH100", days=14, tokens=1e12)
    assert budget.n_params == pytest.approx(H100_64_14DAYS / 6e12, rel=1e-5)


def test_params_alone_uses_twenty_tokens_per_param_and_says_so():
    budget = resolve_budget(params=1e9)
    assert budget.n_tokens == pytest.approx(20e9)
    assert budget.flops == pytest.approx(120e18)
    assert budget.compute_given is False
    assert any("20" in note for note in budget.notes)


def test_consistent_params_tokens_and_flops_are_accepted():
    budget = resolve_budget(flops=6 * 7e9 * 1.4e12 * 1.005, params=7e9, tokens=1.4e12)
    assert budget.fixed == "both"


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"flops": 1e23, "dollars": 1e6}, ("flops", "dollars")),
        ({"flops": 1e23, "gpus": "64xH100", "days": 14}, ("flops", "gpus x days")),
        ({"dollars": 1e6, "gpus": "64xH100", "days": 14}, ("gpus x days", "dollars")),
        ({"flops": 1e23, "params": 7e9, "tokens": 1.4e12}, ("params x tokens", "flops")),
    ],
)
def test_conflicting_budgets_name_both(kwargs, names):
    with pytest.raises(UserError) as info:
        resolve_budget(**kwargs)
    for name in names:
        assert name in str(info.value)


def test_missing_pieces_say_what_to_add():
    with pytest.raises(UserError, match="--days"):
        resolve_budget(gpus="64xH100")
    with pytest.raises(UserError, match="--gpus"):
        resolve_budget(days=14)
    with pytest.raises(UserError, match="no compute budget"):
        resolve_budget()


def test_gpus_with_flops_only_name_the_hardware():
    budget = resolve_budget(flops=1e23, gpus="8xA100")
    assert budget.flops == 1e23 and budget.cluster is not None and budget.cluster.count == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flops": 0},
        {"flops": -1e20},
        {"flops": math.nan},
        {"flops": math.inf},
        {"flops": 1e36},
        {"flops": "lots"},
        {"gpus": "64xH100", "days": 0},
        {"gpus": "64xH100", "days": -3},
        {"gpus": "64xH100", "days": 14, "mfu": 40},
        {"gpus": "64xH100", "days": 14, "mfu": 0},
        {"gpus": "64xH100", "days": math.nan},
        {"gpus": "64xNOPE", "days": 14},
        {"gpus": "100000000xH100", "days": 14},
        {"gpus": "64xH100", "days": 1e6},
        {"dollars": 0},
        {"dollars": 1e6, "price_per_hour": -2},
        {"params": 0},
        {"params": 1e9, "tokens": -1},
        {"params": 1e17},
    ],
)
def test_bad_numbers_raise_user_error(kwargs):
    with pytest.raises(UserError):
        resolve_budget(**kwargs)


def test_budget_to_dict_carries_the_derived_compute():
    """$1M at the example $2.50/GPU-hour is 400,000 H100-hours: x 3600 s x 989 TFLOP/s (dense bf16 peak) x MFU 0.4
    = 5.70e23 FLOPs, over 8 GPUs 2,083 days; the dict is plain JSON (no NaN) and says the rate is an example."""
    data = resolve_budget(dollars=1e6, gpus="8xH100").to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["flops"] == pytest.approx(4e5 * 3600 * 989e12 * 0.4, rel=1e-9)
    assert data["days"] == pytest.approx(4e5 / 8 / 24) and (data["gpu"], data["gpu_count"]) == ("H100-SXM", 8)
    assert data["source"] == "dollars" and any("EXAMPLE" in note for note in data["notes"])


# ---------------------------------------------------------------- allocate


def test_allocate_free_budget_is_each_laws_optimum():
    """Hoffmann et al. 2022, Eq. 4 at Gopher's 5.76e23 FLOPs, computed here from the constants."""
    allocations = {a.law: a for a in allocate(resolve_budget(flops=5.76e23))}
    assert list(allocations) == list(LAWS)
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    chinchilla = allocations["chinchilla"]
    assert chinchilla.n_params == pytest.approx(g * (5.76e23 / 6) ** (0.28 / 0.62), rel=1e-9)
    assert chinchilla.n_params == chinchilla.optimal_n_params
    assert allocations["20x"].n_params == pytest.approx(6.928e10, rel=1e-3)
    assert allocations["20x"].tokens_per_param == pytest.approx(20.0)
    for a in allocations.values():
        assert 6 * a.n_params * a.n_tokens == pytest.approx(5.76e23, rel=1e-9)
        assert a.flops == 5.76e23


def test_allocate_losses_and_their_datasets():
    allocations = {a.law: a for a in allocate(resolve_budget(flops=5.76e23))}
    twenty = allocations["20x"]
    assert twenty.loss_law == "chinchilla"
    assert twenty.predicted_loss == pytest.approx(CHINCHILLA.loss(twenty.n_params, twenty.n_tokens))
    assert allocations["epoch"].loss_law == "epoch"
    assert "WebText2" in allocations["kaplan"].loss_dataset
    assert any("not comparable" in note for note in allocations["kaplan"].notes)
    for a in allocations.values():
        assert a.predicted_loss is not None and 1.5 < a.predicted_loss < 3.0


def test_allocate_fixed_params_with_compute_spends_it_on_tokens():
    budget = resolve_budget(flops=6e22, params=1e10)
    for a in allocate(budget, ["chinchilla", "kaplan"]):
        assert a.n_params == 1e10 and a.n_tokens == pytest.approx(1e12)
        assert a.optimal_n_params != a.n_params  # the law's own optimum is shown for comparison


def test_allocate_fixed_params_alone_takes_each_laws_own_optimum():
    """N = 1e9 without compute: each law's tokens are those at which 1e9 is its compute-optimal size."""
    allocations = {a.law: a for a in allocate(resolve_budget(params=1e9))}
    assert allocations["20x"].n_tokens == pytest.approx(20e9, rel=1e-9)
    for a in allocations.values():
        assert a.n_params == 1e9
        assert a.optimal_n_params == pytest.approx(1e9, rel=1e-9)
        assert 6 * a.n_params * a.n_tokens == pytest.approx(a.flops, rel=1e-9)
    # Kaplan spends far fewer tokens per parameter than Chinchilla-type laws.
    assert allocations["kaplan"].tokens_per_param < allocations["20x"].tokens_per_param


def test_allocate_fixed_tokens_alone():
    allocations = {a.law: a for a in allocate(resolve_budget(tokens=2e12), ["20x", "epoch"])}
    assert allocations["20x"].n_params == pytest.approx(1e11, rel=1e-9)
    assert allocations["epoch"].n_tokens == 2e12


def test_allocate_both_fixed_only_predicts_loss():
    budget = resolve_budget(params=70e9, tokens=1.4e12)
    allocations = allocate(budget)
    assert {(a.n_params, a.n_tokens) for a in allocations} == {(70e9, 1.4e12)}
    by_law = {a.law: a for a in allocations}
    assert by_law["chinchilla"].predicted_loss == pytest.approx(1.9369, abs=5e-4)  # Eq. 10 by hand


def test_allocate_rejects_unknown_and_empty_laws():
    budget = resolve_budget(flops=1e23)
    with pytest.raises(UserError, match="unknown scaling law"):
        allocate(budget, ["chinchila"])
    with pytest.raises(UserError):
        allocate(budget, [])


def test_allocations_to_dict_are_the_allocations():
    """Each allocation's dict is plain JSON with the allocation's own numbers (C = 6ND holds in it)."""
    for allocation in allocate(resolve_budget(params=7e9)):
        data = allocation.to_dict()
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert (data["law"], data["n_params"], data["n_tokens"]) == (allocation.law, 7e9, allocation.n_tokens)
        assert 6 * data["n_params"] * data["n_tokens"] == pytest.approx(data["flops"], rel=1e-9)


def test_budget_is_frozen():
    budget = resolve_budget(flops=1e23)
    assert isinstance(budget, Budget)
    with pytest.raises(AttributeError):
        budget.flops = 2e23  # type: ignore[misc]


# ---------------------------------------------------------------- known runs


def test_known_runs_and_gpt3_compute():
    """Brown et al. 2020, Table D.1: GPT-3 175B trained with 3.14e23 FLOPs; 6ND = 6 * 175e9 * 300e9 = 3.15e23."""
    assert {run.name for run in KNOWN_RUNS} >= {
        "Chinchilla",
        "LLaMA-65B",
        "GPT-3",
        "OPT-175B",
        "BLOOM-176B",
        "BloombergGPT",
    }
    gpt3 = {c.run: c for c in compare_known()}["GPT-3"]
    assert gpt3.flops == pytest.approx(3.14e23, rel=0.01)
    assert gpt3.tokens_per_param == pytest.approx(300 / 175)


def test_chinchilla_is_not_undertrained_by_the_20x_rule_and_gpt3_is():
    """Hoffmann et al. 2022, Sec. 4 and Table 1: Chinchilla at 20 tokens/param; GPT-3 at 1.7 was under-trained."""
    runs = {c.run: c for c in compare_known()}
    assert runs["Chinchilla"].verdict("20x").undertrained == pytest.approx(1.0, rel=0.01)
    assert runs["GPT-3"].verdict("20x").undertrained > 3
    assert runs["GPT-3"].main is not None and runs["GPT-3"].main.law == "20x"
    assert runs["GPT-3"].main.undertrained > 3


def test_known_run_verdicts_are_consistent():
    """At fixed C, D_opt / D = N / N_opt; 6 N_opt D_opt = C."""
    for comparison in compare_known():
        for v in comparison.verdicts:
            assert v.undertrained == pytest.approx(v.oversized, rel=1e-9)
            assert 6 * v.optimal_n_params * v.optimal_n_tokens == pytest.approx(comparison.flops, rel=1e-9)
            assert v.predicted_loss is not None
        data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
        assert data["flops"] == comparison.flops and len(data["verdicts"]) == len(comparison.verdicts)


def test_compare_known_subset_and_unknown_law():
    comparisons = compare_known(["epoch"])
    assert all(len(c.verdicts) == 1 and c.main is None for c in comparisons)
    with pytest.raises(UserError):
        compare_known(["nope"])
    with pytest.raises(UserError):
        comparisons[0].verdict("20x")


def test_compute_optimal_tokens_at_twenty_per_parameter_of_each_models_own_size():
    """The seed's column: 20 N for each model's own size (Hoffmann et al. 2022, Sec. 4.1 and
    Table 3: Chinchilla, 70B parameters on 1.4T tokens). Chinchilla 70B -> 1.4T, LLaMA-65B
    (65.2B) -> 1.3T, GPT-3 175B -> 3.5T, OPT-175B -> 3.5T, BLOOM-176B -> 3.5T (3.52T),
    against the tokens actually used: 1.4T, 1.4T, 300B, 180B, 366B."""
    runs = {c.run: c for c in compare_known(["20x"])}
    golden = {"Chinchilla": 1.4e12, "LLaMA-65B": 1.3e12, "GPT-3": 3.5e12, "OPT-175B": 3.5e12, "BLOOM-176B": 3.5e12}
    for name, tokens in golden.items():
        assert runs[name].twenty_x_tokens == pytest.approx(tokens, rel=0.01), name
        assert runs[name].to_dict()["twenty_x_tokens"] == runs[name].twenty_x_tokens
    assert runs["GPT-3"].n_tokens == 300e9 and runs["GPT-3"].twenty_x_tokens / runs["GPT-3"].n_tokens > 11
    # The equal-compute view differs: GPT-3's own compute buys 51B parameters on 1.0T tokens under 20x.
    assert runs["GPT-3"].verdict("20x").optimal_n_tokens == pytest.approx(1.025e12, rel=0.01)
