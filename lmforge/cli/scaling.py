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


def sweep(
    *,
    data: list[str],
    budgets: str,
    out: str,
    sizes: int = 5,
    spread: float = 4.0,
    vocab_size: int = 1024,
    seq_len: int = 128,
    style: Literal["gpt2", "llama"] = "gpt2",
    seed: int = 0,
    quiet: bool = False,
) -> None:
    """Train an IsoFLOP grid of small models on your data (Hoffmann et al. 2022, Approach 2):
    for each compute budget, models spaced evenly in log N around the 20-tokens-per-parameter
    optimum, each trained on exactly that many FLOPs, all on one tokenizer and one set of shards.

    Writes OUT/sweep.csv (run, budget_flops, params, non_embedding_params, tokens, flops, loss,
    bits_per_byte, seconds), OUT/sweep.json and every run directory under OUT/runs. Killed at
    any point, the same command continues: finished runs are skipped, a half-done run resumes
    from its checkpoint. Then: lmforge scaling fit OUT/sweep.csv.

    Args:
        data: sources: PATH, name=PATH or name=PATH:weight; builtin:pydocs
        budgets: training FLOPs per IsoFLOP curve, comma-separated (1e12,3e12,1e13)
        out: the sweep directory
        sizes: model sizes per budget
        spread: the largest size over the 20x optimum (the smallest is the optimum over it)
        vocab_size: the sweep's tokenizer (trained on the data)
        seq_len: tokens per training sequence (and the models' context)
        style: gpt2 (GELU, LayerNorm, learned positions, tied) or llama (SwiGLU, RMSNorm, rotary)
        seed: seed of the data split and of every run
        quiet: no progress bar: a line every 30 s

    Examples:
        lmforge scaling sweep --data builtin:pydocs --budgets 1e11,3e11,1e12,3e12 --out sweeps/pydocs
        lmforge scaling fit sweeps/pydocs/sweep.csv
    """
    import sys

    from lmforge.errors import UserError
    from lmforge.plan.units import parse_count
    from lmforge.scaling.sweep import sweep as run_sweep

    parts = [p for p in str(budgets).replace(" ", "").split(",") if p]
    if not parts:
        raise UserError("--budgets is empty", budgets, "pass e.g. --budgets 1e12,3e12,1e13")
    values = [parse_count(p, "--budgets", upper=1e26) for p in parts]
    result = run_sweep(data, values, out, sizes=sizes, spread=spread, vocab_size=vocab_size, seq_len=seq_len,
                       style=style, seed=seed, quiet=quiet)
    if result.stopped is not None:
        print_lines(f"sweep stopped at {result.stopped.name}; the same command continues it")
        sys.exit(result.exit_code)
    trained = sum(not r.skipped for r in result.runs)
    print_lines(f"sweep: {len(result.runs)} runs finished ({trained} trained now), {result.csv}",
                f"next: lmforge scaling fit {result.csv}")
