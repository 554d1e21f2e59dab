"""The scaling verbs: fit a law to a sweep's runs, plot it (the sweep itself: ``sweep``).

Logic lives in ``lmforge.scaling``; these functions read flags and print
(``lmforge.cli.scaling_tables``) or write JSON.
"""

from __future__ import annotations

from typing import Literal

from lmforge.cli.output import print_json, print_lines


def fit(
    sweep_csv: str,
    /,
    *,
    bootstrap: int = 200,
    out: str | None = None,
    params: Literal["total", "non-embedding"] = "total",
    seed: int = 0,
    json: bool = False,
) -> None:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to a sweep's runs, and the IsoFLOP exponents.

    Approach 3 as Besiroglu et al. 2024 did it: Huber loss (delta 1e-3) on log loss,
    L-BFGS-B from the best starts of a 4,500-point grid, bootstrap standard errors and 95%
    intervals. Approach 2 (Hoffmann et al. 2022): a parabola in log N per budget, its
    minimum, then N* ~ C^a and D* ~ C^b. Prints the constants, N_opt, D_opt and tokens
    per parameter at the sweep's budgets and beyond, and writes law.json for
    lmforge plan --law.

    Args:
        sweep_csv: the sweep's sweep.csv (or its directory): run, budget_flops, params,
            non_embedding_params, tokens, flops, loss, bits_per_byte, seconds
        bootstrap: bootstrap resamples for the errors (0: none)
        out: where to write the law (default: law.json beside the CSV)
        params: what N counts: total parameters (as Chinchilla) or non-embedding (as Kaplan)
        seed: seed of the bootstrap resampling
        json: print JSON instead of tables

    Examples:
        lmforge scaling fit runs/sweep/sweep.csv
        lmforge scaling fit runs/sweep/sweep.csv --bootstrap 1000 --out my-law.json
        lmforge plan --flops 1e18 --law runs/sweep/law.json
    """
    from lmforge.cli import scaling_tables
    from lmforge.scaling.fit_report import fit_sweep_csv

    report = fit_sweep_csv(sweep_csv, bootstrap=bootstrap, out=out, params=params, seed=seed)
    print_json(report.to_dict()) if json else scaling_tables.fit(report)


def plot(
    sweep_csv: str,
    /,
    *,
    law: str | None = None,
    out: str | None = None,
) -> None:
    """PNG of a sweep: IsoFLOP curves with their parabolas and minima, the compute-optimal
    frontier N_opt(C) and D_opt(C) of your law and of Approach 2 beside the published laws,
    and the residuals of your law.

    Args:
        sweep_csv: the sweep's sweep.csv (or its directory)
        law: a law.json from lmforge scaling fit (default: fit Approach 3 here, without bootstrap)
        out: the PNG to write (default: plot.png beside the CSV)

    Examples:
        lmforge scaling plot runs/sweep/sweep.csv --law runs/sweep/law.json
    """
    from lmforge.scaling.plot import plot_sweep_csv

    path = plot_sweep_csv(sweep_csv, law_path=law, out=out)
    print_lines(f"wrote {path}")
