"""Several runs' loss curves on one PNG: against tokens seen, and against wall time.

Each run shows its validation loss (all sources together) where it logged one, else its
training loss (the legend says which). Against tokens, runs of different batch sizes
share an axis (Kaplan et al. 2020, Fig. 2; Hoffmann et al. 2022, Fig. 2); against time,
a faster configuration shows as the curve further left. The curves come from
`lmforge.train.plots`' series helpers (the ones ``plots/loss.png`` is drawn from); the time
of a record from `lmforge.report.run.clock`. matplotlib is imported inside the functions,
through its object-oriented Agg canvas, as in `lmforge.train.plots`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.fileio import save_figure
from lmforge.plan.units import format_count
from lmforge.report.run import RunRecord, clock, is_number

DEFAULT_OUT = "report.png"  # in the current directory
VALIDATION_KEYS = ("val_loss/all", "eval_loss/all", "val_loss", "eval_loss")
MINUTES_FROM = 180.0  # seconds: a longer time axis reads in minutes


@dataclass(frozen=True)
class Curve:
    name: str
    key: str  # the metrics key drawn: a validation loss, else "loss" (training)
    tokens: list[float]
    by_tokens: list[float]
    seconds: list[float]
    by_time: list[float]


def curve_key(metrics: Sequence[dict]) -> str | None:
    """The validation loss key the run logged, else ``"loss"``; None when it logged neither."""
    for key in (*VALIDATION_KEYS, "loss"):
        if any(is_number(r.get(key)) for r in metrics):
            return key
    return None


def run_curve(record: RunRecord) -> Curve | None:
    """The loss curve of ``record`` against tokens and against seconds; None without one."""
    from lmforge.train.plots import _series, loss_curves

    metrics = record.metrics
    key = curve_key(metrics)
    if key is None:
        return None
    curves, axis = loss_curves(metrics)
    label = "train" if key == "loss" else key.replace("_loss", "", 1)  # loss_curves' labels
    tokens, by_tokens = next(((xs, ys) for name, xs, ys in curves if name == label), ([], []))
    if axis is None:  # tokens logged at fewer than two steps: loss_curves' x is the step then
        tokens, by_tokens = _series(metrics, key, lambda r: float(r["tokens"]) if is_number(r.get("tokens")) else None)
    seconds, by_time = _series(metrics, key, clock(metrics))
    return Curve(record.name, key, tokens, by_tokens, seconds, by_time)


def resolve_out(out: str | None, n_runs: int) -> Path | None:
    """Where the overlay goes (``report.png`` in the current directory unless ``--out``);
    None for one run, which has no overlay. An existing PNG is replaced, like
    ``lmforge scaling plot``'s."""
    if n_runs == 1:
        if out is not None:
            raise UserError("--out names the overlay PNG of several runs", out,
                            "drop --out for one run (its loss curve is RUN_DIR/plots/loss.png), or pass more runs")
        return None
    path = Path(out or DEFAULT_OUT)
    if path.is_dir():
        raise UserError("--out is a directory", str(path), f"name a file: --out {path / DEFAULT_OUT}")
    if path.suffix.lower() != ".png":
        raise UserError("--out must name a .png file", str(path), f"pass e.g. --out {path.with_suffix('.png')}")
    return path


def overlay_figure(records: Sequence[RunRecord]):
    """A matplotlib Figure with two panels (loss against tokens, against wall time), one
    curve per run, same color in both, legend by run name."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    curves = [c for c in map(run_curve, records) if c is not None]
    if not curves:
        raise UserError("none of the runs has logged a loss yet", ", ".join(r.name for r in records),
                        "wait for their first log step (train.log_every)")
    longest = max((max(c.seconds) for c in curves if c.seconds), default=0.0)
    minutes = longest > MINUTES_FROM
    scale = 60.0 if minutes else 1.0

    fig = Figure(figsize=(12, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    by_tokens, by_time = fig.subplots(1, 2, sharey=True)
    for index, c in enumerate(curves):
        label = c.name if c.key != "loss" else f"{c.name} (training loss)"
        style = {"color": f"C{index % 10}", "linewidth": 1.5}
        if len(c.tokens) <= 40:  # validation every few hundred steps: mark the points
            style.update(marker="o", markersize=3)
        by_tokens.plot(c.tokens, c.by_tokens, label=label, **style)
        by_time.plot([s / scale for s in c.seconds], c.by_time, label=label, **style)
    by_tokens.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_count(x)))  # 200K, 1.5M
    by_tokens.set_xlabel("tokens seen")
    by_tokens.set_ylabel("loss (nats/token)")
    by_time.set_xlabel(f"wall time ({'min' if minutes else 's'}, estimated from the logged steps)")
    by_tokens.set_title("against tokens seen", fontsize=10)
    by_time.set_title("against wall time", fontsize=10)
    for ax in (by_tokens, by_time):
        ax.grid(True, alpha=0.3)
    by_tokens.legend(loc="upper right", fontsize=9)
    fig.suptitle("validation loss (all sources) where logged, else training loss", fontsize=11)
    fig.tight_layout()
    return fig


def write_overlay(records: Sequence[RunRecord], out: str | os.PathLike) -> Path:
    """The overlay PNG at ``out``, written atomically (`lmforge.fileio.save_figure`)."""
    return save_figure(overlay_figure(records), out)
