"""One run's predictions beside its measurements, with the error of each.

A finished run's rows come from ``report.json`` (its ``compare`` section, and the
``predicted`` record that is ``plan.json``); the parameter count is measured from the
weights file's header (`lmforge.report.run.safetensors_params`). The error of a size or a
speed is relative, (measured - predicted) / predicted; of a loss, the difference in nats
per token (what ``report.json``'s loss ``error`` holds). A run still training (or stopped
before its end) has no ``report.json``: its rows hold what ``metrics.jsonl`` has so far,
and a total (tokens, FLOPs, time) reached part way has no error, only how far it got.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from lmforge.plan.units import format_bytes, format_count, format_duration, format_flops
from lmforge.report.run import RunRecord, clock, is_number, last_value

COLUMNS = ["", "predicted", "measured", "error"]
NO_LAW = "no law prediction"
STATES = ("weights", "gradients", "optimizer_states")


@dataclass(frozen=True)
class Row:
    what: str
    unit: str  # how the values read: count, flops, tokens, rate, fraction, seconds, bytes, nats, text
    predicted: object
    measured: object
    error: float | None  # see error_kind
    error_kind: str  # "relative": (measured - predicted) / predicted; "nats": measured - predicted; "match"; ""
    note: str = ""


def relative_error(predicted: object, measured: object) -> float | None:
    """(measured - predicted) / predicted; None when either is missing or predicted is 0."""
    if not (is_number(predicted) and is_number(measured)) or predicted == 0:
        return None
    return (measured - predicted) / predicted


def _relative(what: str, unit: str, predicted: object, measured: object, note: str = "") -> Row:
    return Row(what, unit, predicted, measured, relative_error(predicted, measured), "relative", note or "")


def _partial(what: str, unit: str, planned: object, so_far: object) -> Row:
    """A total reached part way: no error, how far it got."""
    share = relative_error(planned, so_far)
    note = f"so far: {100 * (1 + share):.0f}% of the plan" if share is not None else "so far"
    return Row(what, unit, planned, so_far, None, "", note)


def comparison_rows(record: RunRecord) -> list[Row]:
    """The rows of ``record``'s predicted-vs-measured table, in print order."""
    plan = record.plan or {}
    where = "model.safetensors" if record.finished else "the latest checkpoint's model.safetensors"
    note = f"measured: the tensor shapes in {where}'s header" if record.weights else "no weights file to count"
    params = _relative("parameters", "count", plan.get("params"), record.params, note)
    return [params, *(_finished_rows(record.compare) if record.finished else _running_rows(record))]


def _finished_rows(compare: dict) -> list[Row]:
    """report.json's ``compare`` section as rows."""

    def part(key: str) -> dict:
        return compare.get(key) if isinstance(compare.get(key), dict) else {}

    def row(what: str, unit: str, key: str, note: str = "") -> Row:
        pair = part(key)
        return _relative(what, unit, pair.get("predicted"), pair.get("measured"), pair.get("note") or note)

    rows = [
        row("FLOPs", "flops", "flops", "measured: FLOPs per token (PaLM's 6N + 12LHQT) x the tokens trained"),
        row("tokens", "tokens", "tokens"),
        row("tokens/s", "rate", "tokens_per_second"),
        row("MFU", "fraction", "mfu"),
        row("time", "seconds", "seconds"),
        row("memory per device", "bytes", "memory_bytes"),
        *_model_state_rows(part("model_states_per_rank")),
    ]
    precision = part("precision")
    if precision:
        same = precision.get("predicted") == precision.get("measured")
        rows.append(Row("precision", "text", precision.get("predicted"), precision.get("measured"), None, "match",
                        "" if same else "the run computed in another precision than planned"))
    loss = part("loss")
    rows.append(_loss_row(loss.get("predicted"), loss.get("measured"), loss.get("note") or "", partial=False))
    return rows


def _model_state_rows(states: dict) -> list[Row]:
    """Weights, gradients and optimizer states one rank holds: the planner's against the
    bytes counted from each rank's tensors (the largest, when there are several ranks)."""
    predicted = states.get("predicted") or {}
    ranks = [r for r in states.get("measured") or [] if all(is_number(r.get(k)) for k in STATES)]
    if not ranks or not all(is_number(predicted.get(k)) for k in STATES):
        return []
    largest = max(ranks, key=lambda r: sum(r[k] for k in STATES))
    label = "model states per rank" if len(ranks) == 1 else f"model states per rank (rank {largest['rank']}, "\
        f"the largest of {len(ranks)})"
    return [_relative(label, "bytes", sum(predicted[k] for k in STATES), sum(largest[k] for k in STATES),
                      "weights + gradients + optimizer states, counted from the rank's tensors")]


def _loss_row(predicted: object, measured: object, note: str, *, partial: bool) -> Row:
    if not is_number(predicted):
        return Row("validation loss", "nats", NO_LAW, measured, None, "", note)
    error = measured - predicted if is_number(measured) and not partial else None
    return Row("validation loss", "nats", predicted, measured, error, "nats" if error is not None else "", note)


def _running_rows(record: RunRecord) -> list[Row]:
    plan, metrics = record.plan or {}, record.metrics
    tokens, last = last_value(metrics, "tokens")
    per_token = plan.get("flops_per_token")
    flops = per_token * tokens if is_number(per_token) and tokens is not None else None
    rates = [r["tokens_per_s"] for r in metrics[1:] if is_number(r.get("tokens_per_s"))]  # after the first: warm-up
    mfus = [r["mfu"] for r in metrics[1:] if is_number(r.get("mfu"))]
    loss, at = last_value(metrics, "val_loss/all")
    latest = f"the latest validation (step {at['step']}); the law predicts the end" if at else "no validation yet"
    loss_note = latest if is_number(plan.get("loss")) else plan.get("loss_source") or ""
    return [
        _partial("FLOPs", "flops", plan.get("total_flops"), flops),
        _partial("tokens", "tokens", plan.get("tokens"), tokens),
        _relative("tokens/s", "rate", plan.get("tokens_per_second"), statistics.median(rates) if rates else None,
                  "measured: the median logged step so far"),
        _relative("MFU", "fraction", plan.get("expected_mfu"), statistics.median(mfus) if mfus else None,
                  "measured: the median logged step so far"),
        _partial("time", "seconds", plan.get("seconds"), clock(metrics)(last) if last else None),
        Row("memory per device", "bytes", plan.get("memory_bytes"), None, None, "",
            "measured when the run finishes (report.json)"),
        _loss_row(plan.get("loss"), loss, loss_note, partial=True),
    ]


def format_value(unit: str, value: object) -> str:
    """A cell of the predicted or measured column, with its unit."""
    if value is None:
        return "-"
    if isinstance(value, str) or not is_number(value):
        return str(value)
    formats = {
        "count": lambda v: f"{int(v):,}",
        "flops": format_flops,
        "tokens": lambda v: format_count(v, "tokens"),
        "rate": lambda v: f"{v:,.0f} tokens/s",
        "fraction": lambda v: f"{100 * v:.1f}%",
        "seconds": format_duration,
        "bytes": format_size,
        "nats": lambda v: f"{v:.3f} nats",
    }
    return formats.get(unit, str)(value)


def format_size(n_bytes: float) -> str:
    """Bytes as GiB (2**30) from 1 GiB up, else as MiB (2**20), the unit printed."""
    return format_bytes(n_bytes, "GiB") if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


def format_error(row: Row) -> str:
    if row.error_kind == "match":
        return "same" if row.predicted == row.measured else "differs"
    if row.error is None:
        return "-"
    if row.error_kind == "nats":
        return f"{row.error:+.3f} nats"
    return "exact" if row.error == 0 else f"{100 * row.error:+.1f}%"


def status_line(record: RunRecord) -> str:
    """What state the run is in, for the table's title."""
    steps, planned = record.measured.get("steps"), (record.plan or {}).get("total_steps")
    if record.finished:
        return f"finished, {steps} steps, stopped by {record.measured.get('stopped_by', '?')}"
    step = next((r["step"] for r in reversed(record.metrics) if is_number(r.get("step"))), 0)
    state = f"running (pid {record.owner_pid})" if record.status == "running" else (
        "unfinished (no process is training it; lmforge train --resume continues it)")
    return f"{state}, step {step} of {planned or '?'}, no report.json yet: what metrics.jsonl holds so far"


def table(record: RunRecord) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, columns, cells, lines under the table: each row's note, then where the loss
    curve is) for the CLI."""
    rows = comparison_rows(record)
    cells = [[r.what, format_value(r.unit, r.predicted), format_value(r.unit, r.measured), format_error(r)]
             for r in rows]
    lines = [f"run: {status_line(record)}",
             "error: (measured - predicted) / predicted; for the loss, measured - predicted in nats per token"]
    lines += [f"{r.what}: {r.note}" for r in rows if r.note]
    if loss_plot(record):
        lines.append(f"loss curve: {loss_plot(record)}")
    return f"{record.path}: predicted against measured", COLUMNS, cells, lines


def to_dict(record: RunRecord) -> dict:
    """``--json`` for one run: its state, final numbers and the rows as numbers."""
    from lmforge.report.side_by_side import final_numbers

    plot = loss_plot(record)
    return {"run": str(record.path), "name": record.name, "status": record.status, "owner_pid": record.owner_pid,
            "final": final_numbers(record), "rows": [asdict(r) for r in comparison_rows(record)],
            "plot": str(plot) if plot else None}


def loss_plot(record: RunRecord) -> Path | None:
    """The run's own loss curve, ``plots/loss.png``, when it has one."""
    plot = record.path / "plots" / "loss.png"
    return plot if plot.is_file() else None
