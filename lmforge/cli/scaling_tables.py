"""Tables for the scaling verbs: presentation only, every number with its unit."""

from __future__ import annotations

import math

from lmforge.cli.output import print_lines, print_table
from lmforge.plan.units import format_count, format_flops

_LABELS = {"E": "E (nats/token)", "A": "A", "B": "B", "alpha": "alpha (N exponent)", "beta": "beta (D exponent)",
           "a": "a = beta/(alpha+beta)", "b": "b = alpha/(alpha+beta)", "G": "G"}


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _interval(pair, digits: int = 4) -> str:
    if pair is None or any(v is None or not math.isfinite(v) for v in pair):
        return "n/a"
    return f"[{_num(pair[0], digits)}, {_num(pair[1], digits)}]"


def fit(report) -> None:
    three, two = report.fit.approach3, report.fit.approach2
    n_words = "non-embedding parameters" if report.fit.n_counts == "non_embedding_params" else "total parameters"
    skipped = f" ({report.sweep.unfinished} unfinished skipped)" if report.sweep.unfinished else ""
    print_lines(f"[bold]sweep[/bold]: {report.sweep.path}, {three.n_points} runs{skipped}, "
                f"{len(report.fit.budgets)} budgets; N = {n_words}")
    print_table(
        "Approach 3: L(N, D) = E + A / N^alpha + B / D^beta",
        ["constant", "value", "std. error", "95% interval"],
        [[_LABELS[k], _num(three.constants[k]), _num(three.stderr[k], 2), _interval(three.ci95[k])]
         for k in _LABELS],
    )
    print_lines(f"Huber (delta 1e-3) on log L, L-BFGS-B from the {three.polished} best of {three.starts:,} grid "
                f"starts: objective {three.objective:.4g}; errors from {three.bootstrap} bootstrap resamples; "
                f"{three.seconds:.1f} s")
    rows = []
    for row in report.optimal:
        where = "in the sweep" if row["flops"] in report.fit.budgets else "extrapolated"
        rows.append([format_flops(row["flops"]), format_count(row["n_opt"]), format_count(row["d_opt"]),
                     f"{row['tokens_per_param']:.1f}", f"{row['loss']:.3f}",
                     "n/a" if row["n_opt_ci95"] is None else
                     f"[{format_count(row['n_opt_ci95'][0])}, {format_count(row['n_opt_ci95'][1])}]", where])
    print_table(
        "Compute-optimal under your law",
        ["compute", "N_opt", "D_opt", "tokens/param", "loss nats/tok", "N_opt 95% interval", "budget"],
        rows,
        caption="N_opt = G (C/6)^a, D_opt = C / (6 N_opt) (Hoffmann et al. 2022, Eq. 4); loss on your data and "
        "tokenizer; the interval from the bootstrap",
    )
    print_table(
        "Approach 2: IsoFLOP minima (a parabola in log N per budget)",
        ["budget", "sizes", "N*", "D*", "L* nats/tok", "note"],
        [[format_flops(p.budget_flops), str(p.n_sizes),
          "" if p.n_star is None else format_count(p.n_star), "" if p.d_star is None else format_count(p.d_star),
          "" if p.l_star is None else f"{p.l_star:.3f}",
          "no minimum" if p.n_star is None else ("" if p.inside else "outside the sizes")] for p in two.profiles],
    )
    lines = []
    for name, power in (("a", two.n_star), ("b", two.d_star)):
        what = "N* ~ C^a" if name == "a" else "D* ~ C^b"
        error = "" if power.stderr is None else f" (std. error {power.stderr:.3f}, 95% {_interval(power.ci95, 3)})"
        lines.append(f"Approach 2: {what}, {name} = {power.exponent:.3f}{error}; Approach 3: "
                     f"{name} = {three.constants[name]:.3f}")
    if two.n_star.stderr is None:
        lines.append("note: two budgets give a line with no residual: no error for the exponents (sweep 3+ budgets)")
    lines += [f"note: {n}" for n in two.notes]
    lines.append(f"wrote {report.law_path}; plan with it: lmforge plan --law {report.law_path} --flops 1e18")
    print_lines(*lines)
