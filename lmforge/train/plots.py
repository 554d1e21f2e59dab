"""``plots/loss.png``: training and evaluation loss against tokens seen.

Reads the records of ``metrics.jsonl`` (conventions in ``lmforge.train.metrics``):
``loss`` for training, ``eval_loss`` or ``val_loss`` and ``.../<source>`` for evaluation, ``tokens``
(else ``step``) for the x axis. Loss against tokens (not steps) is how scaling-law papers
plot learning curves (Kaplan et al. 2020, Fig. 2; Hoffmann et al. 2022, Fig. 2), so runs
with different batch sizes share an axis. matplotlib is imported inside the function,
through its object-oriented Agg canvas (no pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lmforge.errors import UserError
from lmforge.fileio import save_figure

EVAL_KEYS = ("eval_loss", "val_loss")  # and "<key>/<source>" per source


def _series(metrics: Sequence[Mapping], key: str, x_of: Callable[[Mapping], float | None]) -> tuple[list, list]:
    xs, ys = [], []
    for r in metrics:
        x, y = x_of(r), r.get(key)
        if x is not None and _is_num(y):
            xs.append(x)
            ys.append(float(y))
    return xs, ys


def _step_axis(metrics: Sequence[Mapping]) -> tuple[Callable, Callable] | None:
    """(tokens -> step, step -> tokens) from the records holding both; None when too few.

    Proportional when every step holds the same number of tokens (a straight line
    through 0, so a log axis extrapolates sensibly), else piecewise linear.
    """
    import numpy as np

    pairs = sorted(
        {(float(r["step"]), float(r["tokens"])) for r in metrics if _is_num(r.get("tokens")) and _is_num(r.get("step"))}
    )
    if len(pairs) < 2 or any(b[0] <= a[0] or b[1] <= a[1] for a, b in zip(pairs, pairs[1:], strict=False)):
        return None
    stp, tok = np.array([s for s, _ in pairs]), np.array([t for _, t in pairs])
    if stp[0] > 0 and np.allclose(tok / stp, tok[0] / stp[0], rtol=1e-6):
        k = tok[0] / stp[0]
        return (lambda t: np.asarray(t) / k), (lambda s: np.asarray(s) * k)
    return (lambda t: np.interp(t, tok, stp)), (lambda s: np.interp(s, stp, tok))


def loss_curves(metrics: Sequence[Mapping]) -> tuple[list[tuple[str, list[float], list[float]]], tuple | None]:
    """``([(label, xs, ys), ...], step axis)``: train first, then each evaluation key sorted.

    x is tokens seen when ``tokens`` is logged at two or more steps (the step axis is
    then ``(tokens -> step, step -> tokens)``), else the step (and the axis is None).
    """
    axis = _step_axis(metrics)

    def x_of(r: Mapping) -> float | None:
        """Tokens seen (from the step for eval records without them), else the step."""
        if axis is None:
            return float(r["step"]) if _is_num(r.get("step")) else None
        if _is_num(r.get("tokens")):
            return float(r["tokens"])
        return float(axis[1](float(r["step"]))) if _is_num(r.get("step")) else None

    eval_keys = sorted({k for r in metrics for k in r if k.split("/")[0] in EVAL_KEYS})
    curves = [("train", *_series(metrics, "loss", x_of))]
    curves += [(k.replace("_loss", "", 1), *_series(metrics, k, x_of)) for k in eval_keys]
    return [c for c in curves if c[1]], axis


def plot_loss(
    metrics: Sequence[Mapping],
    out_png: Path,
    *,
    log_x: bool = False,
    title: str | None = None,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Write the loss curves to ``out_png`` atomically (``lmforge.fileio.save_figure``); return the path.

    ``references``: horizontal lines, e.g. ``{"predicted (Chinchilla)": 2.9, "entropy
    rate": 1.21}``. When ``tokens`` is logged (at two or more steps), x is tokens seen
    and the step count is on a top axis; evaluation records without ``tokens`` are
    placed by their step.
    Raises UserError when no record holds a training or evaluation loss.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves, axis = loss_curves(metrics)
    by_tokens = axis is not None
    if not curves:
        raise UserError("no loss to plot in the metrics", f"{len(metrics)} records", "train for at least one log step")

    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, xs, ys in curves:
        style = {"linewidth": 1.2} if label == "train" else {"marker": "o", "markersize": 3, "linewidth": 1.5}
        ax.plot(xs, ys, label=label, **style)
    for label, value in (references or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.annotate(label, (0.99, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("tokens seen" if by_tokens else "step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")

    if by_tokens:
        ax.secondary_xaxis("top", functions=axis).set_xlabel("step")
    final = curves[0][2][-1]
    heading = title or "loss"
    ax.set_title(f"{heading} (last {curves[0][0]} loss {final:.3f})", fontsize=10)
    fig.tight_layout()

    return save_figure(fig, out_png)


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
