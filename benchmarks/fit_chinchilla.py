"""Fitting Approach 3 to the 240 Chinchilla points: lmforge's fit against a plain scipy grid.

lmforge: ``lmforge.scaling.approach3.fit_approach3`` (what ``lmforge scaling fit`` calls),
with ``--bootstrap`` resamples (default 200). Peer: the fit as Besiroglu et al. (2024,
Sec. 3) describe it, written plainly: a numpy Huber objective on log loss, scipy's
L-BFGS-B without a gradient (finite differences) from every start of the 4,500-point
grid, the best kept, no bootstrap. The peer runs a spread subset of the grid (every
``--stride``-th start; 300 by default) and its time is extrapolated to 4,500 starts
(x stride), as the output says. Both sides run with one BLAS thread (as lmforge's fit
does; threadpoolctl); the peer with the default threads is timed on
``--default-thread-starts`` starts too. Runs alternate; prints medians and ratios as JSON.

    python benchmarks/fit_chinchilla.py [--repeats 3] [--stride 15] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

from lmforge.scaling.approach3 import fit_approach3, full_grid  # noqa: E402
from tests.scaling.chinchilla import chinchilla_points  # noqa: E402


def plain_objective(theta, log_n, log_d, log_l, delta=1e-3):
    """Huber(delta) of log L_hat - log L, summed; log L_hat = log(exp(a - alpha log N) +
    exp(b - beta log D) + exp(e)) (Besiroglu et al. 2024, Sec. 3), as one would write it."""
    a, b, e, alpha, beta = theta
    pred = np.log(np.exp(a - alpha * log_n) + np.exp(b - beta * log_d) + np.exp(e))
    r = np.abs(pred - log_l)
    return float(np.sum(np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))))


def plain_grid(starts: np.ndarray, data: tuple) -> tuple[float, np.ndarray]:
    from scipy.optimize import minimize

    best, best_x = np.inf, None
    with np.errstate(all="ignore"):
        for start in starts:
            result = minimize(plain_objective, start, args=data, method="L-BFGS-B")
            if result.fun < best:
                best, best_x = float(result.fun), result.x
    return best, best_x


def machine() -> str:
    from lmforge.train.machine import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stride", type=int, default=15)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--default-thread-starts", type=int, default=30)
    args = parser.parse_args()
    n, d, loss = chinchilla_points()
    data = tuple(np.log(x) for x in (n, d, loss))
    grid = full_grid()
    subset = grid[:: args.stride]
    ours, ours_fit_only, peer = [], [], []
    fit = None
    for _ in range(args.repeats):  # alternate the sides so drift hits both alike
        started = time.perf_counter()
        fit = fit_approach3(n, d, loss, bootstrap=args.bootstrap, seed=0)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        fit_approach3(n, d, loss, bootstrap=0)
        ours_fit_only.append(time.perf_counter() - started)
        started = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            peer_best, peer_x = plain_grid(subset, data)
        peer.append(time.perf_counter() - started)
    started = time.perf_counter()
    plain_grid(grid[:: len(grid) // args.default_thread_starts][: args.default_thread_starts], data)
    default_threads = (time.perf_counter() - started) / args.default_thread_starts
    peer_full = statistics.median(peer) * len(grid) / len(subset)
    print(json.dumps({
        "machine": machine(),
        "points": len(n),
        "lmforge": {"median_s": round(statistics.median(ours), 3), "runs_s": [round(t, 3) for t in ours],
                    "bootstrap": args.bootstrap, "fit_only_median_s": round(statistics.median(ours_fit_only), 3),
                    "polished_starts": fit.polished, "objective": fit.objective,
                    "constants": {k: round(v, 4) for k, v in fit.constants.items()}},
        "plain_scipy": {"starts_timed": len(subset), "median_s": round(statistics.median(peer), 3),
                        "extrapolated_4500_starts_s": round(peer_full, 1), "objective_best_of_subset": peer_best,
                        "alpha_beta": [round(float(peer_x[3]), 4), round(float(peer_x[4]), 4)],
                        "default_blas_threads_s_per_start": round(default_threads, 3),
                        "default_blas_threads_extrapolated_4500_s": round(default_threads * len(grid), 1)},
        "ratio_plain_full_grid_over_lmforge_with_bootstrap": round(peer_full / statistics.median(ours), 1),
        "ratio_plain_full_grid_over_lmforge_fit_only": round(peer_full / statistics.median(ours_fit_only), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
