"""Runs sized by compute: the IsoFLOP grid, the data-constrained tokens, the best shape for a budget."""

from __future__ import annotations

import math

import pytest

from lmforge.errors import UserError
from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.isoflop import (
    R_STAR,
    best_shape,
    candidate_shapes,
    effective_tokens,
    isoflop_grid,
    sized_run,
    smallest_params,
)
from lmforge.plan.laws import ParametricLaw, get_law
from lmforge.plan.specs import param_counts


def test_every_grid_run_spends_its_budget():
    """tokens x (6N + 12 L H Q T) equals the budget to within one token's FLOPs (PaLM App. B)."""
    grid = isoflop_grid([3e11, 1e12, 3e12], vocab_size=1024, seq_len=128)
    assert {r.budget for r in grid} == {3e11, 1e12, 3e12}
    for run in grid:
        spent = run.tokens * palm_flops_per_token(run.spec, 128)
        assert run.budget - run.flops_per_token < spent <= run.budget
        assert run.params == param_counts(run.spec).total


def test_sizes_are_spread_evenly_in_log_n_around_the_20x_optimum():
    """Hoffmann et al. 2022, Sec. 3.2: N0 x spread^t, t evenly in [-1, 1], N0 = sqrt(C / 120)."""
    budget = 1e15
    grid = isoflop_grid([budget], sizes=5, spread=4.0, vocab_size=1024, seq_len=128)
    centre = math.sqrt(budget / 120)
    assert [r.target_params for r in grid] == pytest.approx([centre * 4.0 ** t for t in (-1, -0.5, 0, 0.5, 1)])
    params = [r.params for r in grid]
    assert params == sorted(params) and len(set(params)) == 5
    for run in grid:  # small shapes are allowed 25% off their target (their aspect ratio matters more)
        assert abs(run.params / run.target_params - 1) <= 0.25


def test_a_budget_too_small_names_the_one_that_would_do():
    with pytest.raises(UserError, match="too small for the smallest runnable") as info:
        isoflop_grid([1e10], vocab_size=1024, seq_len=128)
    need = float(str(info.value).split("at least ")[1].split(" FLOP")[0])
    assert len([r for r in isoflop_grid([need * 1.01], vocab_size=1024, seq_len=128)]) >= 3


@pytest.mark.parametrize("kwargs, match", [
    ({"sizes": 2}, "at least three sizes"), ({"spread": 1.0}, "spread must be above 1"),
    ({"budgets": []}, "no compute budgets"), ({"budgets": [1e12, 1e12]}, "given twice"),
    ({"budgets": [-1e12]}, "greater than zero"), ({"budgets": [float("nan")]}, "finite"),
])
def test_bad_grid_arguments(kwargs, match):
    args = {"budgets": [1e12, 3e12], "vocab_size": 1024, "seq_len": 128, **kwargs}
    budgets = args.pop("budgets")
    with pytest.raises(UserError, match=match):
        isoflop_grid(budgets, **args)


def test_effective_tokens_of_repeated_data():
    """Muennighoff et al. 2023, Eq. 5: D' = U + U R* (1 - exp(-R / R*)); 4 epochs are worth
    about 3.7 unique ones ("up to about 4 epochs are nearly as good as new data"); many epochs
    saturate at U (1 + R*)."""
    unique = 1e6
    assert effective_tokens(5e5, unique) == 5e5 and effective_tokens(2e6, None) == 2e6
    assert effective_tokens(4e6, unique) == pytest.approx(unique * (1 + R_STAR * (1 - math.exp(-3 / R_STAR))))
    assert 3.6e6 < effective_tokens(4e6, unique) < 4e6
    assert effective_tokens(1e12, unique) == pytest.approx(unique * (1 + R_STAR), rel=1e-6)


def test_best_shape_is_the_argmin_of_the_law_over_runnable_shapes():
    law = ParametricLaw(name="toy", source="test", E=1.5, A=300.0, B=900.0, alpha=0.35, beta=0.3)
    budget = 3e13
    choice = best_shape(budget, law, vocab_size=1024, seq_len=128)
    runs = [sized_run(s, budget, 128) for s in candidate_shapes(1024, 128, "gpt2", smallest_params(1024, 128),
                                                                   math.sqrt(budget / 120) * 30)]
    losses = [law.loss(r.params, r.tokens) for r in runs if r.tokens >= 128]
    assert choice.predicted_loss == pytest.approx(min(losses))
    assert choice.run.budget == budget and choice.effective_tokens == choice.run.tokens


def test_best_shape_agrees_with_the_laws_own_optimum_at_scale():
    """Under Besiroglu et al.'s refit at 1e21 FLOPs the runnable choice sits near the law's
    closed-form N_opt (Hoffmann et al. 2022, Eq. 4); the FLOPs per token differ from 6N by
    attention and embeddings, so within 35%."""
    law = get_law("epoch")
    choice = best_shape(1e21, law, vocab_size=32000, seq_len=2048, style="llama")
    n_opt, _ = law.compute_optimal(1e21)
    assert abs(choice.run.params / n_opt - 1) < 0.35


def test_scarce_data_moves_the_choice_to_a_bigger_model():
    """With few unique tokens, repeated data is worth less (Muennighoff et al. 2023): the best
    shape trades tokens for parameters, and says the data repeats."""
    law = ParametricLaw(name="toy", source="test", E=1.5, A=300.0, B=900.0, alpha=0.35, beta=0.3)
    free = best_shape(1e14, law, vocab_size=1024, seq_len=128)
    scarce = best_shape(1e14, law, vocab_size=1024, seq_len=128, unique_tokens=free.run.tokens / 20)
    assert scarce.run.params > free.run.params
    assert scarce.epochs is not None and scarce.epochs > 1 and scarce.effective_tokens < scarce.run.tokens
    assert any("repeats" in note for note in scarce.notes)


def test_a_law_without_a_loss_picks_its_own_optimum():
    choice = best_shape(1e20, get_law("20x"), vocab_size=32000, seq_len=2048)
    n_opt, _ = get_law("20x").compute_optimal(1e20)
    assert choice.predicted_loss is None and abs(math.log(choice.run.params / n_opt)) < 0.15


def test_budget_below_the_smallest_model():
    with pytest.raises(UserError, match="budget too small"):
        best_shape(1e6, get_law("epoch"), vocab_size=1024, seq_len=128)
