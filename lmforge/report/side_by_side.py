"""Several runs side by side: one row of final numbers each.

A finished run's numbers are ``report.json``'s measurements (the validation at the end,
all sources together); a run without one shows the latest of ``metrics.jsonl`` and says
it is running or unfinished where a finished run says what stopped it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from lmforge.plan.units import format_count, format_duration
from lmforge.report.run import RunRecord, clock, is_number, last_value

COLUMNS = ["run", "model", "parameters", "tokens", "steps", "train loss", "val loss", "val bpb", "tokens/s", "time",
           "stopped by"]


def model_name(plan: dict | None) -> str | None:
    """``"tiny-gpt2 (4 x 128)"``: the preset, its layers x width, from the plan's spec."""
    spec = (plan or {}).get("spec")
    if not isinstance(spec, dict):
        return None
    layers = (spec.get("n_decoder_layers") or 0) + (spec.get("n_encoder_layers") or 0)
    shape = f" ({layers} x {spec['d_model']})" if layers and spec.get("d_model") else ""
    return f"{spec.get('name') or spec.get('family') or '?'}{shape}"


def final_numbers(record: RunRecord) -> dict:
    """The run's final numbers: losses in nats per token, bits per byte, seconds."""
    measured, metrics = record.measured, record.metrics
    steps = measured.get("steps")
    tokens = measured.get("tokens")
    train_loss = measured.get("final_loss")
    overall = (measured.get("validation") or {}).get("all") or {}
    val_loss, val_bpb = overall.get("loss"), overall.get("bits_per_byte")
    rate, seconds = measured.get("tokens_per_second"), measured.get("wall_seconds")
    if not record.finished:
        steps = last_value(metrics, "step")[0]
        tokens, last = last_value(metrics, "tokens")
        train_loss = last_value(metrics, "loss")[0]
        val_loss, at = last_value(metrics, "val_loss/all")
        val_bpb = at.get("val_bpb/all") if at else None
        rates = [r["tokens_per_s"] for r in metrics[1:] if is_number(r.get("tokens_per_s"))]  # after warm-up
        rate = statistics.median(rates) if rates else None
        seconds = clock(metrics)(last) if last else None
    plan = record.plan or {}
    return {
        "name": record.name, "path": str(record.path), "status": record.status,
        "model": model_name(plan), "parameters": record.params if record.params is not None else plan.get("params"),
        "tokens": tokens, "steps": None if steps is None else int(steps), "planned_steps": plan.get("total_steps"),
        "train_loss": train_loss, "val_loss": val_loss, "val_bpb": val_bpb, "tokens_per_second": rate,
        "wall_seconds": seconds,
        "stopped_by": measured.get("stopped_by") if record.finished else record.status,
    }


def _number(value: object, text) -> str:
    return text(value) if is_number(value) else "-"


def table_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    """The cells of the side-by-side table, one row per run, in the order given."""
    rows = []
    for record in records:
        f = final_numbers(record)
        steps = _number(f["steps"], str)
        if not record.finished and f["planned_steps"]:
            steps = f"{steps} of {f['planned_steps']}"
        rows.append([
            f["name"], f["model"] or "-", _number(f["parameters"], format_count), _number(f["tokens"], format_count),
            steps, _number(f["train_loss"], lambda v: f"{v:.3f}"), _number(f["val_loss"], lambda v: f"{v:.3f}"),
            _number(f["val_bpb"], lambda v: f"{v:.3f}"), _number(f["tokens_per_second"], lambda v: f"{v:,.0f}"),
            _number(f["wall_seconds"], format_duration), f["stopped_by"] or "-",
        ])
    return rows


def table(records: Sequence[RunRecord]) -> tuple[str, list[str], list[list[str]], str]:
    """(title, columns, cells, caption) for the CLI."""
    caption = "losses in nats per token, bpb in bits per byte (val: all sources together); time: wall clock"
    return f"{len(records)} runs side by side", COLUMNS, table_rows(records), caption
