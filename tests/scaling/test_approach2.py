"""Approach 2: IsoFLOP parabolas, their minima, and N* ~ C^a (Hoffmann et al. 2022, Sec. 3.2)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import linregress

from lmforge.errors import UserError
from lmforge.plan.laws import EPOCH, ParametricLaw
from lmforge.scaling.approach2 import fit_approach2, fit_power
from tests.scaling.synthetic import isoflop_points

ASYMMETRIC = ParametricLaw("asym", "synthetic", E=2.0, A=800.0, B=3000.0, alpha=0.30, beta=0.50)


def _fit(points):
    return fit_approach2([p.budget_flops for p in points], [p.params for p in points], [p.loss for p in points])


@pytest.mark.parametrize("law", [EPOCH, ASYMMETRIC], ids=["epoch", "asymmetric"])
def test_recovers_the_known_exponent(law):
    """For L = E + A/N^alpha + B/D^beta the IsoFLOP minima follow N* ~ C^a with
    a = beta / (alpha + beta) (Hoffmann et al. 2022, Eq. 4): 0.513 for Epoch AI's fit,
    0.625 for the asymmetric law. The parabola in log N is a second-order approximation;
    7 sizes over 16x around the optimum keep its bias under 0.01."""
    fit = _fit(isoflop_points(law, budgets=(1e17, 1e18, 1e19, 1e20, 1e21), sizes=7))
    assert fit.n_star.exponent == pytest.approx(law.a, abs=0.01)
    assert fit.d_star.exponent == pytest.approx(1 - fit.n_star.exponent, abs=1e-9)  # D* = C / (6 N*)
    assert fit.n_budgets == 5 and not fit.notes
    for profile in fit.profiles:
        n_opt, _ = law.compute_optimal(profile.budget_flops)
        assert profile.inside and profile.n_star == pytest.approx(n_opt, rel=0.05)
        assert profile.l_star == pytest.approx(law.loss(*law.compute_optimal(profile.budget_flops)), rel=1e-3)


def test_exponent_interval_covers_the_truth_with_noise():
    points = isoflop_points(EPOCH, budgets=(1e17, 1e18, 1e19, 1e20, 1e21), sizes=7, noise=0.005, seed=1)
    fit = _fit(points)
    lo, hi = fit.n_star.ci95
    assert lo < EPOCH.a < hi and fit.n_star.stderr > 0


def test_ols_standard_error_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    flops = np.geomspace(1e17, 1e21, 6)
    values = 0.1 * flops**0.5 * np.exp(0.05 * rng.standard_normal(6))
    power = fit_power(flops, values)
    reference = linregress(np.log(flops), np.log(values))
    assert power.exponent == pytest.approx(reference.slope, rel=1e-12)
    assert power.stderr == pytest.approx(reference.stderr, rel=1e-9)
    assert power.k == pytest.approx(np.exp(reference.intercept), rel=1e-9)
    two = fit_power(flops[:2], values[:2])
    assert two.stderr is None and two.ci95 is None  # a line through two points has no residual


def test_downward_parabola_and_outside_minimum_are_noted_not_hidden():
    points = isoflop_points(EPOCH, budgets=(1e17, 1e18, 1e19), sizes=5)
    budgets = [p.budget_flops for p in points]
    sizes = np.array([p.params for p in points])
    loss = np.array([p.loss for p in points])
    loss[:5] = 5.0 - 0.01 * (np.log(sizes[:5]) - np.log(sizes[2])) ** 2  # budget 1e17: concave
    n_opt, _ = EPOCH.compute_optimal(1e19)
    sizes[10:] = n_opt * np.geomspace(2, 8, 5)  # budget 1e19: sampled only above its optimum
    loss[10:] = [EPOCH.loss(n, 1e19 / (6 * n)) for n in sizes[10:]]
    fit = fit_approach2(budgets, sizes, loss)
    down, _, outside = fit.profiles
    assert down.n_star is None and "opens downward" in down.note
    assert outside.n_star is not None and not outside.inside and "outside the sampled sizes" in outside.note
    assert fit.n_budgets == 2 and len(fit.notes) == 2


def test_one_budget_or_too_few_sizes_is_a_user_error():
    points = isoflop_points(EPOCH, budgets=(1e18,), sizes=5)
    with pytest.raises(UserError, match="Approach 2 needs two or more budgets"):
        _fit(points)
    two_sizes = isoflop_points(EPOCH, budgets=(1e18, 1e19), sizes=2)
    with pytest.raises(UserError, match="Approach 2 needs two or more budgets"):
        _fit(two_sizes)
    mixed = isoflop_points(EPOCH, budgets=(1e17, 1e18, 1e19), sizes=5)[:12]  # 1e19 keeps 2 sizes
    fit = _fit(mixed)
    assert fit.n_budgets == 2 and "2 size(s), a parabola needs 3" in fit.notes[0]
