"""Fit a scaling law to a sweep's runs, both ways, and write it as ``law.json``.

- Approach 3 (``approach3.fit_approach3``): L(N, D) = E + A / N^alpha + B / D^beta over
  all runs, as Besiroglu et al. (2024, Sec. 3) refit Hoffmann et al. (2022, Sec. 3.3);
- Approach 2 (``approach2.fit_approach2``): the IsoFLOP minima and N* ~ C^a, D* ~ C^b
  (Hoffmann et al. 2022, Sec. 3.2).

The compute-optimal split under the fitted law is Hoffmann et al. (2022), Eq. 4:
N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b (``optimal_points``). ``law.json`` is read back by
``lmforge.plan.fitted.read_law`` (pure Python, for ``lmforge plan --law``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge import __version__
from lmforge.errors import UserError
from lmforge.fileio import write_atomic
from lmforge.plan import fitted
from lmforge.plan.isoflop import R_STAR, effective_tokens
from lmforge.scaling.approach2 import Approach2Fit, fit_approach2
from lmforge.scaling.approach3 import MIN_POINTS, Approach3Fit, fit_approach3
from lmforge.scaling.points import SweepPoint

__all__ = ["SweepFit", "fit_approach2", "fit_approach3", "fit_points", "optimal_points", "write_law"]

PARAMS_FLAG = {"total": "params", "non-embedding": "non_embedding_params"}  # --params -> SweepPoint field


@dataclass(frozen=True)
class SweepFit:
    """Both fits of one sweep, and which parameters N counts."""

    approach3: Approach3Fit
    approach2: Approach2Fit
    n_counts: str
    budgets: tuple[float, ...]


def n_of(points: list[SweepPoint], n_counts: str) -> np.ndarray:
    """N of each run as ``n_counts`` says ("params" or "non_embedding_params"); UserError
    naming the first run without that count."""
    if n_counts not in fitted.N_COUNTS:
        raise UserError("unknown parameter count", n_counts, "choose params or non_embedding_params")
    missing = [p.run for p in points if p.n(n_counts) is None]
    if missing:
        raise UserError(f"no {n_counts} for {len(missing)} run(s) in the sweep CSV", missing[0],
                        f"fill in the {n_counts} column, or fit with total parameters (--params total)")
    return np.array([p.n(n_counts) for p in points], dtype=float)


def fit_points(points: list[SweepPoint], *, n_counts: str = "params", bootstrap: int = 200,
               seed: int = 0, unique_tokens: float | None = None) -> SweepFit:
    """Approach 2 and Approach 3 on ``points`` with N counting ``n_counts``.

    With ``unique_tokens`` U (the sweep's training tokens, from sweep.json), Approach 3 is
    fitted on the effective data of runs that repeated it, D' = U + U R* (1 - exp(-R/R*))
    (Muennighoff et al. 2023, Eq. 5; ``lmforge.plan.isoflop.effective_tokens``), so that the
    law is L(N, D') as ``train --budget`` uses it; D' = D for runs that did not repeat.
    Approach 2 runs first (it is quick and says at once when the sweep has one budget
    only); both raise UserError for input they cannot fit.
    """
    if len(points) < MIN_POINTS:
        raise UserError("fewer runs than the law has parameters", f"{len(points)} runs, 5 parameters",
                        "fit at least 5 finished runs (an IsoFLOP sweep: 2+ budgets x 3+ sizes)")
    n = n_of(points, n_counts)
    d = np.array([effective_tokens(p.tokens, unique_tokens) for p in points], dtype=float)
    loss = np.array([p.loss for p in points], dtype=float)
    budgets = np.array([p.budget_flops for p in points], dtype=float)
    two = fit_approach2(budgets, n, loss)
    three = fit_approach3(n, d, loss, bootstrap=bootstrap, seed=seed, n_counts=n_counts)
    flat = [k for k in ("alpha", "beta") if not three.constants[k] > 0]
    if flat:
        what = " and ".join("N" if k == "alpha" else "D" for k in flat)
        raise UserError(f"the fit found no fall of the loss with {what}",
                        ", ".join(f"{k} = {three.constants[k]:.3g}" for k in flat),
                        "check the sweep: loss should fall with model size and with tokens")
    return SweepFit(three, two, n_counts, tuple(sorted({p.budget_flops for p in points})))


def optimal_points(fit: Approach3Fit, budgets: list[float]) -> list[dict]:
    """N_opt, D_opt, tokens per parameter and predicted loss at each budget, with the 95%
    bootstrap interval of N_opt: N_opt = G (C/6)^a, D_opt = C / (6 N_opt) (Hoffmann et al.
    2022, Eq. 4; C = 6 N D, Kaplan et al. 2020, Eq. 2.1)."""
    c = fit.constants
    rows = []
    for budget in budgets:
        n_opt = c["G"] * (budget / 6.0) ** c["a"]
        d_opt = budget / (6.0 * n_opt)
        interval = None
        if fit.samples is not None and len(fit.samples) >= 2:
            g, a = fit.samples[:, 7], fit.samples[:, 5]  # columns of approach3.NAMES
            spread = g * (budget / 6.0) ** a
            interval = [float(np.nanpercentile(spread, 2.5)), float(np.nanpercentile(spread, 97.5))]
        rows.append({"flops": budget, "n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt,
                     "loss": float(fit.predict(n_opt, d_opt)), "n_opt_ci95": interval})
    return rows


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def law_record(fit3: Approach3Fit, fit2: Approach2Fit | None, meta: dict | None,
               sweep_path: str | os.PathLike | None = None) -> dict:
    """The ``law.json`` dict (schema in ``lmforge.plan.fitted``)."""
    meta = meta or {}
    c = fit3.constants
    return _clean({
        "kind": fitted.KIND,
        "form": fitted.FORM,
        "method": "Approach 3 as Besiroglu et al. 2024 (arXiv:2404.10102, Sec. 3): Huber (delta 1e-3) on log L, "
                  "L-BFGS-B from the best of a grid of starts; bootstrap errors",
        "constants": {k: c[k] for k in fitted.CONSTANTS},
        "derived": {k: c[k] for k in ("a", "b", "G")},
        "stderr": fit3.stderr,
        "ci95": {k: list(v) for k, v in fit3.ci95.items()},
        "objective": fit3.objective,
        "bootstrap": fit3.bootstrap,
        "approach2": None if fit2 is None else {k: v for k, v in fit2.to_dict().items() if k != "budgets"},
        "n_counts": fit3.n_counts,
        "tokenizer": meta.get("tokenizer"),
        "data": meta.get("data"),
        "seq_len": meta.get("seq_len"),
        "data_constrained": None if not meta.get("unique_train_tokens") else {
            "unique_train_tokens": meta["unique_train_tokens"], "r_star": R_STAR,
            "note": "fitted on effective tokens D' (Muennighoff et al. 2023, Eq. 5) where runs repeated the data"},
        "n_points": fit3.n_points,
        "sweep": None if sweep_path is None else str(sweep_path),
        "lmforge_version": __version__,
    })


def write_law(path: str | os.PathLike, fit3: Approach3Fit, fit2: Approach2Fit | None, meta: dict | None,
              *, sweep_path: str | os.PathLike | None = None) -> Path:
    """Write ``law.json`` atomically (``lmforge.fileio.write_atomic``); return its path.

    The record is checked by reading it back (``fitted.from_record``) before it is written.
    """
    record = law_record(fit3, fit2, meta, sweep_path)
    fitted.from_record(json.loads(json.dumps(record)), str(path))
    return write_atomic(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
