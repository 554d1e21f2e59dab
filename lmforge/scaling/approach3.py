"""Approach 3: fit L(N, D) = E + A / N^alpha + B / D^beta to all runs at once.

As Besiroglu et al. (2024, arXiv:2404.10102, Sec. 3) redid Hoffmann et al. (2022,
Sec. 3.3, Eq. 2-3): with theta = (a, b, e, alpha, beta) and A = exp(a), B = exp(b),
E = exp(e),

    log L_hat = LSE(a - alpha log N, b - beta log D, e),

minimise the sum over runs of Huber_delta(log L_hat - log L), delta = 1e-3, by L-BFGS-B
from a grid of starting points, keeping the best; errors by the bootstrap (resample the
runs with replacement, refit).

Speed: the objective and its analytic gradient are vectorised (numpy), and the grid is
searched in two stages: the objective of every start of Besiroglu et al.'s 4,500-point
grid (alpha, beta in 0..2 step 0.5, e in -1..1 step 0.5, a, b in 0..25 step 5) is
evaluated at once (one array operation), and only the ``polish`` best starts are run
through L-BFGS-B. ``tests/scaling/test_approach3.py`` shows this finds the optimum
that polishing all 4,500 starts finds. L-BFGS-B minimises the objective divided by
delta^2, so that its stopping tests (relative to max(|f|, 1), scipy's ftol) do not stop
it early: Besiroglu et al. (Sec. 3) trace Hoffmann et al.'s estimates to an optimizer
stopped before convergence by such a loss scale.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from lmforge.errors import UserError

DELTA = 1e-3  # Huber delta on log-loss residuals (Hoffmann et al. 2022, Sec. 3.3; Besiroglu et al. 2024)
NAMES = ("E", "A", "B", "alpha", "beta", "a", "b", "G")  # constants, then the derived a, b, G (Eq. 4)
GRID_AXES = {  # Besiroglu et al. 2024 (Sec. 3) grid, order of theta: a, b, e, alpha, beta
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}
POLISH = 24  # starts run through L-BFGS-B after the pre-screen
MIN_POINTS = 5  # five parameters
# e = log E is kept above log(1e-4): a sweep whose sizes and tokens span too little to tell the
# irreducible loss from the power laws drives E to zero, where exp(e) underflows; at the bound
# the law is effectively A/N^alpha + B/D^beta (the other parameters are unbounded, as in Sec. 3)
E_FLOOR = 1e-4
BOUNDS = [(None, None), (None, None), (math.log(E_FLOOR), None), (None, None), (None, None)]


def full_grid() -> np.ndarray:
    """The 4,500 starting points (a, b, e, alpha, beta) of Besiroglu et al. (2024, Sec. 3)."""
    return np.array(list(itertools.product(*GRID_AXES.values())), dtype=float)  # (4500, 5)


def _predict(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L_hat and the softmax weights of its three terms, for K parameter vectors at once.

    theta (K, 5); log_n, log_d (P,) -> log L_hat (K, P), weights (3, K, P).
    """
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))  # each (K, 1)
    terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # (3, K, P)
    top = terms.max(axis=0)  # (K, P)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    return top + np.log(total), exp / total


def huber(residual: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Huber loss: r^2 / 2 for |r| <= delta, else delta (|r| - delta / 2) (Huber 1964)."""
    r = np.abs(residual)
    return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))


def objectives(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> np.ndarray:
    """Sum of Huber(log L_hat - log L) for each row of ``theta`` (K, 5) -> (K,)."""
    pred, _ = _predict(np.atleast_2d(theta), log_n, log_d)
    return huber(pred - log_l).sum(axis=1)


def objective_and_gradient(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                           weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Huber objective (summed, times ``weights`` per point) and its gradient in theta.

    d log L_hat / d(a, b, e) are the softmax weights w1, w2, w3 of the three terms;
    d / d alpha = -w1 log N, d / d beta = -w2 log D; Huber'(r) = c = clip(r, -delta, delta),
    and Huber(r) = c (r - c / 2). One parameter vector, written out for speed.
    """
    a, b, e, alpha, beta = theta
    u1 = a - alpha * log_n  # (P,)
    u2 = b - beta * log_d
    top = np.maximum(np.maximum(u1, u2), e)
    x1, x2, x3 = np.exp(u1 - top), np.exp(u2 - top), np.exp(e - top)
    total = x1 + x2 + x3
    r = top + np.log(total) - log_l
    c = np.clip(r, -DELTA, DELTA)
    loss = c * (r - 0.5 * c)
    if weights is not None:
        c, loss = c * weights, loss * weights
    c = c / total
    g1, g2 = c @ x1, c @ x2
    grad = np.array([g1, g2, c @ x3, -((c * x1) @ log_n), -((c * x2) @ log_d)])
    return float(loss.sum()), grad


def _minimize(start: np.ndarray, data: tuple, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """L-BFGS-B from ``start``; returns (theta, objective). The objective is scaled by 1/delta^2."""
    from scipy.optimize import minimize

    scale = 1.0 / DELTA**2

    def f(theta):
        value, grad = objective_and_gradient(theta, *data, weights=weights)
        return value * scale, grad * scale

    result = minimize(f, start, jac=True, method="L-BFGS-B", bounds=BOUNDS,
                      options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15, "gtol": 1e-9})
    return result.x, float(result.fun) / scale


def constants(theta: np.ndarray) -> dict[str, float]:
    """E, A, B, alpha, beta from theta, and a = beta / (alpha + beta), b = alpha / (alpha + beta),
    G = (alpha A / (beta B))^(1 / (alpha + beta)) (Hoffmann et al. 2022, Eq. 4)."""
    a, b, e, alpha, beta = (float(v) for v in theta)
    out = {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}
    total = alpha + beta
    if total > 0 and alpha > 0 and beta > 0:
        out["a"], out["b"] = beta / total, alpha / total
        out["G"] = math.exp((math.log(alpha / beta) + a - b) / total)
    else:
        out["a"] = out["b"] = out["G"] = math.nan
    return out


@dataclass(frozen=True)
class Approach3Fit:
    """The fitted constants with bootstrap standard errors and 95% percentile intervals.

    ``objective`` is the summed Huber loss at ``theta``; ``starts`` the number of grid
    starts screened and ``polished`` of them run through L-BFGS-B; ``samples`` the
    bootstrap constants (one row per resample, columns ``NAMES``).
    """

    constants: dict[str, float]
    stderr: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    objective: float
    n_points: int
    starts: int
    polished: int
    bootstrap: int
    seconds: float
    theta: tuple[float, ...]
    n_counts: str = "params"
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        """L(N, D) = E + A / N^alpha + B / D^beta at the fitted constants (nats/token)."""
        c = self.constants
        return c["E"] + c["A"] / np.asarray(n, float) ** c["alpha"] + c["B"] / np.asarray(d, float) ** c["beta"]

    def to_dict(self) -> dict:
        return {"constants": self.constants, "stderr": self.stderr,
                "ci95": {k: list(v) for k, v in self.ci95.items()}, "objective": self.objective,
                "n_points": self.n_points, "starts": self.starts, "polished": self.polished,
                "bootstrap": self.bootstrap, "seconds": self.seconds, "n_counts": self.n_counts,
                "huber_delta": DELTA}


def _logs(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(x, dtype=float) for x in (n, d, loss)]
    if not (len(arrays[0]) == len(arrays[1]) == len(arrays[2])):
        raise UserError("N, D and loss have different lengths", tuple(len(a) for a in arrays),
                        "pass one of each per run")
    for name, values in zip(("N", "D", "loss"), arrays, strict=True):
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(f"every {name} must be a finite positive number", name, "check the sweep's rows")
    if len(arrays[0]) < MIN_POINTS:
        raise UserError("fewer runs than the law has parameters", f"{len(arrays[0])} runs, 5 parameters",
                        "fit at least 5 finished runs (an IsoFLOP sweep: 2+ budgets x 3+ sizes)")
    return tuple(np.log(a) for a in arrays)


def best_start(data: tuple, grid: np.ndarray | None = None,
               polish: int | None = POLISH) -> tuple[np.ndarray, float, int]:
    """The best of ``grid`` (default ``full_grid()``) after L-BFGS-B: (theta, objective, polished).

    With ``polish`` = k, only the k starts of lowest objective are polished (a
    vectorised pre-screen); ``polish=None`` polishes every start (4,500 runs).
    """
    grid = full_grid() if grid is None else grid
    if polish is not None and polish < len(grid):
        values = objectives(grid, *data)
        grid = grid[np.argsort(values, kind="stable")[:polish]]
    best_theta, best_value = grid[0], math.inf
    for start in grid:
        theta, value = _minimize(start, data)
        if value < best_value:
            best_theta, best_value = theta, value
    return best_theta, best_value, len(grid)


def fit_approach3(n, d, loss, *, bootstrap: int = 200, seed: int = 0, polish: int | None = POLISH,
                  n_counts: str = "params") -> Approach3Fit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta as Besiroglu et al. (2024, Sec. 3) did.

    ``n``, ``d``, ``loss``: parameters, training tokens and validation loss (nats/token)
    of each run. ``bootstrap`` resamples of the runs (with replacement, seeded by
    ``seed``) are refitted from the best fit; their standard deviation is the standard
    error and their 2.5th and 97.5th percentiles the 95% interval. Raises UserError for
    fewer than 5 runs or a non-finite or non-positive value.
    """
    started = time.perf_counter()
    data = _logs(n, d, loss)
    from threadpoolctl import threadpool_limits

    # one BLAS thread: L-BFGS-B calls BLAS on 5-vectors hundreds of times per fit, and idle OpenBLAS
    # workers on busy cores made each fit ~100x slower here (threadpoolctl, as scikit-learn uses)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(data, bootstrap, seed, polish, n_counts, started)


def _fit(data: tuple, bootstrap: int, seed: int, polish: int | None, n_counts: str, started: float) -> Approach3Fit:
    theta, value, polished = best_start(data, polish=polish)
    fitted = constants(theta)
    count = len(data[0])
    samples = np.empty((bootstrap, len(NAMES)))
    rng = np.random.default_rng(seed)
    for i in range(bootstrap):
        # A resample as weights (how often each run was drawn): the same sum, one array.
        weights = np.bincount(rng.integers(0, count, count), minlength=count).astype(float)
        refit, _ = _minimize(theta, data, weights=weights)
        samples[i] = [constants(refit)[k] for k in NAMES]
    if bootstrap >= 2:
        stderr = {k: float(np.nanstd(samples[:, j], ddof=1)) for j, k in enumerate(NAMES)}
        ci95 = {k: (float(np.nanpercentile(samples[:, j], 2.5)), float(np.nanpercentile(samples[:, j], 97.5)))
                for j, k in enumerate(NAMES)}
    else:
        stderr = {k: math.nan for k in NAMES}
        ci95 = {k: (math.nan, math.nan) for k in NAMES}
    return Approach3Fit(constants=fitted, stderr=stderr, ci95=ci95, objective=value, n_points=count,
                        starts=len(full_grid()), polished=polished, bootstrap=bootstrap,
                        seconds=time.perf_counter() - started, theta=tuple(float(t) for t in theta),
                        n_counts=n_counts, samples=samples)
