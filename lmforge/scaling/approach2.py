"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, Sec. 3.2).

For each compute budget C, the runs of that budget (different N, each trained on
D = C / (6 N) tokens) trace an IsoFLOP curve; a parabola of the loss in log N,
L = c0 + c1 x + c2 x^2 with x = log N, has its minimum at x* = -c1 / (2 c2):
N*(C) = exp(x*), D*(C) = C / (6 N*), L* = c0 - c1^2 / (4 c2). Then N* = k_N C^a and
D* = k_D C^b by least squares on log N* = log k_N + a log C (Hoffmann et al. 2022,
Sec. 3.2 and Table 2: a = 0.49, b = 0.51), with OLS standard errors of the slopes,
se(a) = sqrt(s^2 / sum (log C - mean)^2), s^2 = RSS / (n - 2), and 95% intervals from
Student's t with n - 2 degrees of freedom (none for two budgets: a line through two
points has no residual).

A parabola that opens downward has no minimum: that budget is left out, with a note.
A minimum outside the sampled sizes is an extrapolation: it is kept, with a note.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lmforge.errors import UserError

MIN_SIZES = 3  # a parabola needs three points


@dataclass(frozen=True)
class IsoFlopProfile:
    """One budget's parabola and its minimum (None where the parabola opens downward)."""

    budget_flops: float
    n_sizes: int
    coefficients: tuple[float, float, float]  # c0, c1, c2 of L = c0 + c1 log N + c2 (log N)^2
    n_min: float  # smallest and largest N sampled
    n_max: float
    n_star: float | None
    d_star: float | None
    l_star: float | None
    inside: bool  # the minimum lies within [n_min, n_max]
    note: str | None = None

    def loss_at(self, n: np.ndarray) -> np.ndarray:
        """The parabola's loss at N (nats/token)."""
        c0, c1, c2 = self.coefficients
        x = np.log(np.asarray(n, dtype=float))
        return c0 + c1 * x + c2 * x * x


@dataclass(frozen=True)
class PowerFit:
    """y = k C^exponent by OLS in log-log, with the slope's standard error and 95% interval."""

    k: float
    exponent: float
    stderr: float | None
    ci95: tuple[float, float] | None

    def at(self, flops: float) -> float:
        return self.k * flops**self.exponent


@dataclass(frozen=True)
class Approach2Fit:
    """N* ~ C^a and D* ~ C^b from the IsoFLOP minima of two or more budgets."""

    profiles: tuple[IsoFlopProfile, ...]
    n_star: PowerFit
    d_star: PowerFit
    n_budgets: int  # budgets whose minimum entered the regression
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "a": self.n_star.exponent, "a_stderr": self.n_star.stderr,
            "a_ci95": None if self.n_star.ci95 is None else list(self.n_star.ci95), "k_n": self.n_star.k,
            "b": self.d_star.exponent, "b_stderr": self.d_star.stderr,
            "b_ci95": None if self.d_star.ci95 is None else list(self.d_star.ci95), "k_d": self.d_star.k,
            "n_budgets": self.n_budgets, "notes": list(self.notes),
            "budgets": [asdict(p) for p in self.profiles],
        }


def _group(budgets: np.ndarray) -> list[np.ndarray]:
    """Indices of the runs of each budget (budgets equal to 1e-6 relative), smallest first."""
    order = np.argsort(budgets, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and budgets[i] <= budgets[groups[-1][0]] * (1 + 1e-6):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.array(g) for g in groups]


def _profile(budget: float, n: np.ndarray, loss: np.ndarray) -> IsoFlopProfile:
    x = np.log(n)
    c2, c1, c0 = (float(c) for c in np.polyfit(x, loss, 2))
    where = f"budget {budget:.3g} FLOP"
    if c2 <= 0:
        return IsoFlopProfile(budget, len(n), (c0, c1, c2), float(n.min()), float(n.max()), None, None, None, False,
                              f"{where}: the parabola opens downward (no minimum); left out")
    x_star = -c1 / (2 * c2)
    n_star = math.exp(x_star)
    inside = bool(n.min() <= n_star <= n.max())
    note = None if inside else (f"{where}: minimum N* = {n_star:.3g} lies outside the sampled sizes "
                                f"{n.min():.3g}..{n.max():.3g} (extrapolated)")
    return IsoFlopProfile(budget, len(n), (c0, c1, c2), float(n.min()), float(n.max()), n_star,
                          budget / (6 * n_star), c0 - c1 * c1 / (4 * c2), inside, note)


def fit_power(flops: np.ndarray, values: np.ndarray) -> PowerFit:
    """OLS of log y on log C: (k, slope, se(slope), 95% t interval); see the module docstring."""
    x, y = np.log(flops), np.log(values)
    slope, intercept = np.polyfit(x, y, 1)
    dof = len(x) - 2
    if dof <= 0:
        return PowerFit(math.exp(intercept), float(slope), None, None)
    from scipy.stats import t

    rss = float(np.sum((y - (intercept + slope * x)) ** 2))
    se = math.sqrt(rss / dof / float(np.sum((x - x.mean()) ** 2)))
    half = float(t.ppf(0.975, dof)) * se
    return PowerFit(math.exp(intercept), float(slope), se, (float(slope) - half, float(slope) + half))


def fit_approach2(budget_flops, n, loss) -> Approach2Fit:
    """IsoFLOP parabolas per budget and N* ~ C^a, D* ~ C^b (Hoffmann et al. 2022, Sec. 3.2).

    Runs are grouped by ``budget_flops``; budgets with fewer than three distinct sizes are
    left out with a note. Raises UserError when fewer than two budgets give a minimum.
    """
    budgets, sizes, losses = (np.asarray(v, dtype=float) for v in (budget_flops, n, loss))
    profiles, notes = [], []
    for group in _group(budgets):
        budget = float(budgets[group[0]])
        if len(np.unique(sizes[group])) < MIN_SIZES:
            notes.append(f"budget {budget:.3g} FLOP: {len(np.unique(sizes[group]))} size(s), a parabola needs "
                         f"{MIN_SIZES}; left out")
            continue
        profile = _profile(budget, sizes[group], losses[group])
        profiles.append(profile)
        if profile.note:
            notes.append(profile.note)
    usable = [p for p in profiles if p.n_star is not None]
    if len(usable) < 2:
        raise UserError("Approach 2 needs two or more budgets", f"{len(usable)} budget(s) with a minimum",
                        "sweep two or more compute budgets with three or more sizes each "
                        "(lmforge scaling sweep --budgets 1e12,3e12,1e13 --sizes 5)")
    flops = np.array([p.budget_flops for p in usable])
    return Approach2Fit(
        profiles=tuple(profiles),
        n_star=fit_power(flops, np.array([p.n_star for p in usable])),
        d_star=fit_power(flops, np.array([p.d_star for p in usable])),
        n_budgets=len(usable),
        notes=tuple(notes),
    )
