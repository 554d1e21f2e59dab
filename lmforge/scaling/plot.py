"""One PNG of a sweep and its law: IsoFLOP curves, the compute-optimal frontier, residuals.

Panels, as Hoffmann et al. (2022) draw them (Fig. 3 for the IsoFLOP curves and the
frontier; Fig. 4 for the parametric fit) and Besiroglu et al. (2024, Fig. 2) the residuals:

1. loss against N (log axis), one colour per budget, the Approach-2 parabola of each
   budget and its minimum (a star), and the fitted law along the same IsoFLOP line;
2. N_opt(C) and 3. D_opt(C), log-log: your law (Approach 3, Eq. 4 of Hoffmann et al.),
   the Approach-2 power laws with the IsoFLOP minima, and the published laws
   (``lmforge.plan.laws``: chinchilla, epoch, 20x, kaplan) over the same range of C;
4. residuals log L measured - log L predicted by your law, per run.

matplotlib through its object-oriented Agg canvas, imported inside (no pyplot).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from lmforge.errors import UserError
from lmforge.fileio import save_figure
from lmforge.plan.laws import ParametricLaw, get_law
from lmforge.scaling.approach2 import Approach2Fit
from lmforge.scaling.points import SweepPoint

PUBLISHED = ("chinchilla", "epoch", "20x", "kaplan")


def _frontier_axes(ax, which: int, flops: np.ndarray, law: ParametricLaw, two: Approach2Fit | None) -> None:
    """N_opt (which=0) or D_opt (which=1) against C on ``ax``."""
    label = ("N_opt (parameters)", "D_opt (tokens)")[which]
    for name, style, colour in zip(PUBLISHED, (":", "-.", "--", ":"), ("tab:blue", "tab:green", "tab:orange",
                                                                    "tab:purple"), strict=True):
        published = get_law(name)
        values = [published.compute_optimal(c)[which] for c in flops]
        ax.plot(flops, values, linestyle=style, color=colour, linewidth=1.2, label=name)
    values = [law.compute_optimal(c)[which] for c in flops]
    ax.plot(flops, values, color="black", linewidth=2, label="your law (Approach 3)")
    inside = [] if two is None else [p for p in two.profiles if p.n_star is not None and p.inside]
    if len(inside) >= 2:  # a frontier through minima the sweep bracketed (not extrapolated ones)
        power = (two.n_star, two.d_star)[which]
        ax.plot(flops, power.k * flops**power.exponent, color="tab:red", linewidth=1.5,
                label=f"Approach 2 (C^{power.exponent:.2f})")
        minima = [(p.budget_flops, (p.n_star, p.d_star)[which]) for p in two.profiles
                  if p.n_star is not None and p.inside]
        if minima:
            ax.scatter(*zip(*minima, strict=True), color="tab:red", marker="*", s=60, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")


def plot_sweep(points: list[SweepPoint], out_png: str | os.PathLike, *, law: ParametricLaw,
               n_counts: str = "params", approach2: Approach2Fit | None = None, title: str | None = None,
               unique_tokens: float | None = None) -> Path:
    """Write the four panels (module docstring) to ``out_png`` atomically; return its path.

    ``law`` gives the frontier and the residuals; N counts ``n_counts`` ("params" or
    "non_embedding_params"). ``approach2`` None: no parabolas nor Approach-2 frontier.
    ``unique_tokens``: the law sees the effective tokens of repeated data, as the fit did
    (``lmforge.plan.isoflop.effective_tokens``). Minima outside a budget's sizes are not marked.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lmforge.plan.isoflop import effective_tokens

    if not points:
        raise UserError("no runs to plot", 0, "pass a sweep with finished runs")
    n = np.array([p.n(n_counts) for p in points], dtype=float)
    d = np.array([effective_tokens(p.tokens, unique_tokens) for p in points], dtype=float)
    loss = np.array([p.loss for p in points], dtype=float)
    budget = np.array([p.budget_flops for p in points], dtype=float)
    budgets = np.unique(budget)
    colour = {b: colormaps["viridis"](i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}

    fig = Figure(figsize=(12, 9), dpi=110)
    FigureCanvasAgg(fig)
    iso, n_ax, residual_ax, d_ax = (fig.add_subplot(2, 2, i) for i in (1, 2, 3, 4))

    profiles = {p.budget_flops: p for p in (approach2.profiles if approach2 else ())}
    for b in budgets:
        mine = budget == b
        iso.scatter(n[mine], loss[mine], color=colour[b], s=18, label=f"{b:.3g} FLOP", zorder=3)
        grid = np.geomspace(n[mine].min() / 1.5, n[mine].max() * 1.5, 100)
        if mine.sum() >= 2:  # the budget's own tokens at each size: log D linear in log N through its runs
            slope, intercept = np.polyfit(np.log(n[mine]), np.log(d[mine]), 1)
            iso.plot(grid, [law.loss(x, math.exp(intercept + slope * math.log(x))) for x in grid],
                     color=colour[b], linestyle=":", linewidth=1)
        profile = profiles.get(b)
        if profile is not None:
            iso.plot(grid, profile.loss_at(grid), color=colour[b], linewidth=1.2)
            if profile.n_star is not None and profile.inside:
                iso.scatter([profile.n_star], [profile.l_star], color=colour[b], marker="*", s=120,
                            edgecolors="black", zorder=4)
    iso.set_xscale("log")
    iso.set_xlabel("parameters N" + (" (non-embedding)" if n_counts == "non_embedding_params" else ""))
    iso.set_ylabel("validation loss (nats/token)")
    iso.set_title("IsoFLOP curves: parabolas (solid), minima (stars), your law (dotted)", fontsize=9)
    iso.grid(True, alpha=0.3, which="both")
    iso.legend(fontsize=7, title="budget", title_fontsize=7)

    flops = np.geomspace(budgets.min() / 2, budgets.max() * 10, 60)
    _frontier_axes(n_ax, 0, flops, law, approach2)
    n_ax.set_title("compute-optimal model size", fontsize=9)
    _frontier_axes(d_ax, 1, flops, law, approach2)
    d_ax.set_title("compute-optimal training tokens", fontsize=9)

    predicted = np.array([law.loss(x, y) for x, y in zip(n, d, strict=True)])
    residual = np.log(loss) - np.log(predicted)
    for b in budgets:
        mine = budget == b
        residual_ax.scatter(n[mine], residual[mine], color=colour[b], s=18)
    residual_ax.axhline(0.0, color="black", linewidth=1)
    residual_ax.set_xscale("log")
    residual_ax.set_xlabel("parameters N")
    residual_ax.set_ylabel("log L measured - log L predicted")
    residual_ax.set_title(f"residuals of your law (RMS {np.sqrt(np.mean(residual**2)):.4f})", fontsize=9)
    residual_ax.grid(True, alpha=0.3, which="both")

    heading = title or f"L(N, D) = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}"
    fig.suptitle(heading + ("" if approach2 else "   (Approach 2: too few budgets)"), fontsize=10)
    fig.tight_layout()

    return save_figure(fig, out_png)


def plot_sweep_csv(sweep_csv: str | os.PathLike, *, law_path: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None) -> Path:
    """``lmforge scaling plot``: read the sweep, take ``law_path``'s law (or fit Approach 3
    without bootstrap), fit Approach 2 where the budgets allow, write the PNG (default:
    ``plot.png`` beside the CSV); return its path."""
    from lmforge.plan.fitted import from_record, read_law
    from lmforge.plan.isoflop import effective_tokens
    from lmforge.scaling.approach2 import fit_approach2
    from lmforge.scaling.approach3 import fit_approach3
    from lmforge.scaling.fit import law_record, n_of
    from lmforge.scaling.points import read_sweep

    sweep = read_sweep(sweep_csv)
    target = sweep.output(out, "plot.png", "plot", "name a .png file", "plot")
    law = None if law_path is None else read_law(law_path)
    n_counts = "params" if law is None else law.n_counts
    n = n_of(sweep.points, n_counts)
    unique = sweep.unique_tokens
    d = [effective_tokens(p.tokens, unique) for p in sweep.points]
    loss = [p.loss for p in sweep.points]
    if law is None:
        law = from_record(law_record(fit_approach3(n, d, loss, bootstrap=0), None, sweep.meta), str(sweep.path))
    try:
        two = fit_approach2([p.budget_flops for p in sweep.points], n, loss)
    except UserError:
        two = None
    return plot_sweep(sweep.points, target, law=law, n_counts=n_counts, approach2=two, unique_tokens=unique)
