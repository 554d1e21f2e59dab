"""Training metrics: ``metrics.jsonl`` (one JSON object per line) and a progress display.

Record conventions (what ``plots.plot_loss`` and the report read):

- ``step`` (int, always first) and ``time`` (unix seconds, added unless given);
- training lines: ``loss``, ``tokens`` (tokens seen so far), ``lr``, ``tokens_per_s``,
  ``mfu`` (a fraction, 0.41 for 41%), ``grad_norm``, ``peak_memory_bytes`` (so far: the
  process's peak resident memory on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU);
- evaluation: ``val_loss/<source>`` (``val_loss/all`` for the total) and ``val_bpb/<source>``;
  ``eval_loss`` and ``eval_loss/<source>`` are plotted too.

Lines are JSON Lines (https://jsonlines.org): flushed one by one so that a crash loses
at most the line being written, which ``read_metrics`` then skips. Non-finite floats
(a diverged loss) are written as ``null``, since JSON (RFC 8259, Sec. 6) has no NaN.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from lmforge.errors import UserError
from lmforge.fileio import write_atomic

METRICS_FILE = "metrics.jsonl"


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: non-finite floats -> None, 0-d tensors/numpy scalars -> numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar, 0-d tensor or array
        return json_safe(value.item())
    raise TypeError(f"cannot write a {type(value).__name__} to metrics.jsonl: {value!r}")


class MetricsLogger:
    """Appends one JSON object per line to ``run_dir/metrics.jsonl``; a context manager.

    ``resume_step``: when resuming from a checkpoint at that step, lines logged after it
    by the interrupted run are dropped first (atomically), so the file reads as one run.
    A partial last line left by a crash is removed on open. ``sinks`` (TensorBoard, W&B:
    `lmforge.train.loggers`) receive every record as written, and are closed with it.
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None, filename: str = METRICS_FILE,
                 sinks: Sequence[Any] = ()):
        self.sinks = list(sinks)
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            if resume_step is not None:
                kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
                _rewrite(self.path, kept)
            else:
                _drop_partial_last_line(self.path)
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def log(self, step: int, **values: Any) -> dict:
        """Write ``{"step": step, "time": ..., **values}`` as one line and flush it; return the record."""
        if self._file is None:
            raise ValueError("MetricsLogger is closed")
        record = {"step": step, **json_safe(values)}
        record.setdefault("time", round(time.time(), 3))
        self._file.write(json.dumps(record, allow_nan=False, separators=(", ", ": ")) + "\n")
        self._file.flush()
        for sink in self.sinks:
            sink.log(step, record)
        return record

    def close(self, failed: bool = False) -> None:
        """Close the file and the sinks (``failed``: the run ended by an error, which W&B records)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close(failed)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(failed=exc_type is not None)


def read_metrics(path: Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (or of a run directory's), in file order.

    A partial last line (a writer killed mid-line) is skipped; a bad line elsewhere is a
    UserError naming its line number.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("metrics file not found", str(path), "pass a run directory that has trained") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("unreadable metrics file", str(path), f"{type(e).__name__}: {e}") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # no newline after it: a partial last line
                break
            raise UserError("corrupt metrics file", f"{path}:{i}", "fix or delete that line") from None
        if not isinstance(record, dict):
            raise UserError("corrupt metrics file: a line is not a JSON object", f"{path}:{i}", "fix or delete it")
        records.append(record)
    return records


def _drop_partial_last_line(path: Path) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _rewrite(path: Path, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, allow_nan=False, separators=(", ", ": ")) + "\n" for r in records))


# --------------------------------------------------------------------------- progress display


def format_duration(seconds: float | None) -> str:
    """``"1h02m"``, ``"5m12s"``, ``"42s"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _fields(loss: float | None, tokens_per_s: float | None, mfu: float | None, lr: float | None) -> dict[str, str]:
    dash = "-"
    return {
        "loss": dash if loss is None else f"{loss:.4f}",
        "tps": dash if tokens_per_s is None else f"{tokens_per_s:,.0f}",
        "mfu": dash if mfu is None else f"{100 * mfu:.1f}%",
        "lr": dash if lr is None else f"{lr:.2e}",
    }


class Progress:
    """Step / total, loss, tokens/s, MFU, lr and ETA while training; a context manager.

    On a terminal: a live ``rich`` progress bar. When the stream is not a terminal (a
    log file, CI) or ``quiet=True``: one compact line every ``every`` steps (and at the
    last step) instead; ``every=0`` prints nothing at all. ``print`` writes a message
    (an evaluation result) without breaking the bar.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        quiet: bool = False,
        every: int = 10,
        stream: IO[str] | None = None,
        description: str = "train",
        start_step: int = 0,
    ):
        from rich.console import Console

        self.total = total_steps
        self.every = every
        self.description = description
        self._stream = stream if stream is not None else sys.stdout
        self._console = Console(file=self._stream, highlight=False)
        self.live = not quiet and self._console.is_terminal
        self._bar = None
        self._task = None
        self._start_step = start_step
        self._t0: float | None = None  # time of the first update: excludes compile and setup
        self._step0 = start_step
        self.last_line: str | None = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss [cyan]{task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("MFU {task.fields[mfu]}"),
                TextColumn("lr {task.fields[lr]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._bar.start()
            fields = _fields(None, None, None, None)
            self._task = self._bar.add_task(self.description, total=self.total, completed=self._start_step, **fields)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(
        self,
        step: int,
        *,
        loss: float | None = None,
        tokens_per_s: float | None = None,
        mfu: float | None = None,
        lr: float | None = None,
        **extra: Any,
    ) -> None:
        """Show the state after ``step`` optimizer steps (``step`` counts from 1 to ``total``)."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._step0 = now, step
        fields = _fields(
            None if loss is None else float(loss),
            None if tokens_per_s is None else float(tokens_per_s),
            None if mfu is None else float(mfu),
            None if lr is None else float(lr),
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=step, **fields)
            return
        if self.every <= 0 or not (step % self.every == 0 or step >= self.total or step == self._step0):
            return
        done = step - self._step0
        eta = (now - self._t0) / done * (self.total - step) if done > 0 else None
        percent = 100 * step / self.total if self.total else 100.0
        parts = [
            f"{self.description} step {step}/{self.total} ({percent:.0f}%)",
            f"loss {fields['loss']}",
            f"{fields['tps']} tok/s",
            f"MFU {fields['mfu']}",
            f"lr {fields['lr']}",
        ]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()]
        parts.append(f"ETA {format_duration(0.0 if step >= self.total else eta)}")
        self.last_line = " | ".join(parts)
        print(self.last_line, file=self._stream, flush=True)

    def print(self, message: str) -> None:
        """Write a line above the bar (live) or as is (compact)."""
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self._stream, flush=True)
