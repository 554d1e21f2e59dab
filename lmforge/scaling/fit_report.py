"""``lmforge scaling fit``: read a sweep, fit both ways, write ``law.json``, and say what it means.

The report holds the fits, the compute-optimal N_opt, D_opt and tokens per parameter at
the sweep's budgets and at a few larger ones (Hoffmann et al. 2022, Eq. 4), and where
``law.json`` went.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError, check_whole
from lmforge.scaling.fit import PARAMS_FLAG, SweepFit, fit_points, optimal_points, write_law
from lmforge.scaling.points import Sweep, read_sweep

LARGER = (1e15, 1e18, 1e21, 1e24)  # budgets beyond the sweep to extrapolate to (at most three shown)


@dataclass(frozen=True)
class FitReport:
    sweep: Sweep
    fit: SweepFit
    optimal: list[dict]
    law_path: Path

    def to_dict(self) -> dict:
        return {
            "sweep": str(self.sweep.path), "runs": len(self.sweep.points), "unfinished": self.sweep.unfinished,
            "n_counts": self.fit.n_counts, "approach3": self.fit.approach3.to_dict(),
            "approach2": self.fit.approach2.to_dict(), "optimal": self.optimal, "law": str(self.law_path),
        }


def report_budgets(budgets: tuple[float, ...]) -> list[float]:
    """The sweep's budgets, then up to three of ``LARGER`` above the largest."""
    return list(budgets) + [c for c in LARGER if c > max(budgets)][:3]


def fit_sweep_csv(sweep_csv: str | os.PathLike, *, bootstrap: int = 200, out: str | os.PathLike | None = None,
                  params: str = "total", seed: int = 0) -> FitReport:
    """Fit the sweep at ``sweep_csv`` and write ``law.json`` (default: beside the CSV)."""
    check_whole("--bootstrap", bootstrap, upper=100_000, allow_zero=True)
    check_whole("--seed", seed, upper=2**63 - 1, allow_zero=True)
    if params not in PARAMS_FLAG:
        raise UserError("unknown --params", params, "choose total or non-embedding")
    sweep = read_sweep(sweep_csv)
    target = sweep.output(out, "law.json", "law", "name a file, e.g. law.json", "law file")
    fit = fit_points(sweep.points, n_counts=PARAMS_FLAG[params], bootstrap=bootstrap, seed=seed,
                     unique_tokens=sweep.unique_tokens)
    path = write_law(target, fit.approach3, fit.approach2, sweep.meta, sweep_path=sweep.path)
    return FitReport(sweep, fit, optimal_points(fit.approach3, report_budgets(fit.budgets)), path)
