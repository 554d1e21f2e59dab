"""Synthetic sweeps: an IsoFLOP grid (Hoffmann et al. 2022, Sec. 3.2) drawn from a known law."""

from __future__ import annotations

import numpy as np

from lmforge.plan.laws import ParametricLaw
from lmforge.scaling.points import SweepPoint


def isoflop_points(law: ParametricLaw, budgets=(1e17, 1e18, 1e19, 1e20), sizes: int = 7, span: float = 16.0,
                   noise: float = 0.0, seed: int = 0) -> list[SweepPoint]:
    """``sizes`` model sizes per budget, spaced evenly in log N over ``span``x around the law's
    own N_opt, each trained on D = C / (6 N); loss L(N, D) times exp(noise * standard normal)."""
    rng = np.random.default_rng(seed)
    points = []
    for budget in budgets:
        n_opt, _ = law.compute_optimal(budget)
        for j, n in enumerate(np.geomspace(n_opt / np.sqrt(span), n_opt * np.sqrt(span), sizes)):
            d = budget / (6.0 * n)
            clean = law.E + law.A / n**law.alpha + law.B / d**law.beta  # Hoffmann et al. 2022, Eq. 2
            loss = float(clean * np.exp(noise * rng.standard_normal()))
            points.append(SweepPoint(run=f"c{budget:.0e}-n{j}", budget_flops=float(budget), params=float(round(n)),
                                     non_embedding_params=float(round(0.8 * n)), tokens=float(round(d)),
                                     flops=float(budget), loss=loss, bits_per_byte=loss / np.log(2) / 4.0,
                                     seconds=1.0 + j))
    return points
