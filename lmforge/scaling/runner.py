"""Run a list of run configs to completion, resumably: the runner under a sweep or a study.

Each config is one run directory. Run again after being killed at any point (SIGKILL
included), the same list continues where it stood: a finished run (its ``report.json``
says it reached its planned steps) is read back, not trained again; a run with a
complete checkpoint resumes from it (``lmforge train --resume``, bit for bit the run it
would have been); a run killed before its first checkpoint starts afresh. One progress
bar covers the whole list, weighted by each run's planned FLOPs, with an ETA.

A run stopped by SIGINT or SIGTERM saves its checkpoint (as ``lmforge train`` does) and
stops the list: ``run_all`` returns, and the caller exits 130 / 143.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.config import RunConfig


@dataclass(frozen=True)
class Finished:
    """What a finished run measured (from its ``report.json``)."""

    name: str
    run_dir: Path
    steps: int
    tokens: int
    loss: float  # validation, all sources, nats/token
    bits_per_byte: float | None
    seconds: float  # wall-clock of the last invocation that trained it
    skipped: bool  # True: it had finished before this call and was read back
    validation: dict  # every source's figures, as report.json holds them
    predicted_loss: float | None


@dataclass(frozen=True)
class Stopped:
    """The list stopped at a run that a signal interrupted (its checkpoint is saved)."""

    name: str
    exit_code: int


def keep_settings(record: Path, settings: dict, keys: Sequence[str], what: str, section: str | None = None) -> None:
    """A continued list of runs keeps the settings its runs were made with: UserError naming
    the first of ``keys`` whose value in the JSON file ``record`` (under ``section``) differs."""
    if not record.is_file():
        return
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
        old = old.get(section, {}) if section else old
    except (OSError, ValueError, AttributeError):
        return
    for key in keys:
        if key in old and old[key] != settings[key]:
            raise UserError(f"this {what} directory was made with another {key}", f"{old[key]} vs {settings[key]}",
                            f"keep --{key.replace('_', '-')} as it was, or {what} into another --out")


def finished_run(run_dir: Path) -> Finished | None:
    """The run's measurements if it reached its planned steps, else None."""
    path = run_dir / "report.json"
    if not path.is_file() or not (run_dir / "model.safetensors").is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        measured, predicted = report["measured"], report["predicted"]
        if measured["steps"] < predicted["total_steps"]:
            return None
        overall = measured["validation"]["all"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # half-written or foreign: train it again
    return Finished(run_dir.name, run_dir, measured["steps"], measured["tokens"], overall["loss"],
                    overall.get("bits_per_byte"), measured["wall_seconds"], True, measured["validation"],
                    predicted.get("loss"))


def state_of(run_dir: Path) -> str:
    """"finished", "partial" (a complete checkpoint to resume from) or "new"."""
    if finished_run(run_dir) is not None:
        return "finished"
    if latest_checkpoint(run_dir) is not None:
        return "partial"
    return "new"


class _Bar:
    """One rich progress bar over the whole list, in FLOPs; plain lines when not a terminal."""

    def __init__(self, total_flops: float, description: str, quiet: bool, log: Callable[[str], None]):
        from rich.console import Console

        self.total, self.description, self.log = total_flops, description, log
        self.console = Console(highlight=False)
        self.live = not quiet and self.console.is_terminal
        self.done = 0.0
        self.started = time.perf_counter()
        self._last_line = 0.0
        self._bar = self._task = None

    def __enter__(self) -> _Bar:
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[run]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, run="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def show(self, done: float, run: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, run=run)
            return
        now = time.perf_counter()
        if now - self._last_line >= 30 or done >= self.total:
            self._last_line = now
            self.log(self.line(done, run))

    def line(self, done: float, run: str) -> str:
        elapsed = time.perf_counter() - self.started
        share = done / self.total if self.total else 1.0
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        return f"{self.description}: {100 * share:.0f}% of the FLOPs, {run}, {elapsed:.0f} s elapsed, ETA {eta:.0f} s"

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            self.log(text)


def run_all(configs: Sequence[RunConfig], flops: Sequence[float], *, description: str = "sweep",
            on_finished: Callable[[RunConfig, Finished], None] | None = None, quiet: bool = False,
            log: Callable[[str], None] = print,
            init_from: Sequence[Path | None] | None = None) -> list[Finished] | Stopped:
    """Train every config that has not finished, in order; return each run's measurements.

    ``flops``: each run's planned compute (the bar's weights). ``on_finished(config, f)`` is
    called after each run, whether trained now or read back (a sweep rewrites its CSV there).
    ``init_from``: per config, a run directory whose weights a new run starts from
    (continued pretraining; an earlier entry of the list), or None.
    """
    from lmforge.train.loop import silent, train

    total = float(sum(flops))
    results: list[Finished] = []
    with _Bar(total, description, quiet, log) as bar:
        done = 0.0
        starts = list(init_from) if init_from is not None else [None] * len(configs)
        for config, cost, start in zip(configs, flops, starts, strict=True):
            run_dir = config.run_dir
            state = state_of(run_dir)
            if state == "finished":
                finished = finished_run(run_dir)
                assert finished is not None
                bar.message(f"{config.name}: finished before, loss {finished.loss:.4f} (not trained again)")
            else:
                if state == "partial":
                    bar.message(f"{config.name}: resuming from {latest_checkpoint(run_dir).name}")

                def step(i: int, n: int, base=done, cost=cost, name=config.name) -> None:
                    bar.show(base + cost * i / max(1, n), name)

                started = time.perf_counter()
                resume = state == "partial"
                result = train(config, resume=resume, init_from=None if resume else start, quiet=True, log=silent,
                               on_step=step)
                if result.exit_code != 0:
                    bar.message(f"{config.name}: stopped by {result.stopped_by}; the same command continues it")
                    return Stopped(config.name, result.exit_code)
                finished = finished_run(run_dir)
                assert finished is not None, f"{run_dir} finished without a complete report"
                finished = Finished(**{**finished.__dict__, "skipped": False,
                                       "seconds": time.perf_counter() - started})
                bar.message(f"{config.name}: loss {finished.loss:.4f}, {finished.seconds:.0f} s")
            done += cost
            bar.show(done, config.name)
            results.append(finished)
            if on_finished is not None:
                on_finished(config, finished)
    return results
