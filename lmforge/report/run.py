"""A run directory as one `RunRecord`: what ``lmforge train`` wrote, read as JSON.

A trained run holds ``plan.json`` (the predictions, written before step 1),
``metrics.jsonl`` (one record per logged step, `lmforge.train.metrics`) and, once it has
finished, ``report.json`` (each prediction beside its measurement,
`lmforge.train.preflight.write_report`). A run without ``report.json`` is still training
when a process holds its ``.lock`` (`lmforge.dirlock`), else it stopped before its end.
The parameter count is measured from the weights file's safetensors header (an 8-byte
little-endian length, then JSON naming each tensor's shape), so torch is never imported.
A quantized or imported run has no training of its own to report: it is refused, saying
what to do instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.train.metrics import METRICS_FILE, read_metrics

PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
WEIGHTS_FILE = "model.safetensors"
RUN_FILES = (PLAN_FILE, REPORT_FILE, METRICS_FILE)
HEADER_LIMIT = 100 * 2**20  # safetensors' own cap on the JSON header
REPORT_FIX = "train the run again (or delete report.json to report what metrics.jsonl holds)"


@dataclass
class RunRecord:
    path: Path
    name: str
    status: str  # "finished" (report.json), "running" (a process holds its lock) or "unfinished"
    plan: dict | None  # the predictions: report.json's "predicted" when finished, else plan.json
    report: dict | None  # report.json
    metrics: list[dict]  # metrics.jsonl's records
    params: int | None  # counted from the weights file's header
    weights: Path | None  # that file: model.safetensors, else the latest checkpoint's
    owner_pid: int | None = None  # the process training it, when running

    @property
    def finished(self) -> bool:
        return self.report is not None

    @property
    def measured(self) -> dict:
        return self.report["measured"] if self.report else {}

    @property
    def compare(self) -> dict:
        return self.report["compare"] if self.report else {}


def read_runs(paths: Sequence[str | os.PathLike]) -> list[RunRecord]:
    """Each path as a `RunRecord`, all read before anything is printed; the same run twice is
    refused. Names are the directories' names, or the paths as given where two names clash."""
    records = [read_run(p) for p in paths]
    seen: dict[Path, str] = {}
    for path, record in zip(paths, records, strict=True):
        resolved = record.path.resolve()
        if resolved in seen:
            raise UserError("the same run is given twice", f"{seen[resolved]} and {path}", "pass each run once")
        seen[resolved] = str(path)
    names = [r.name for r in records]
    for path, record in zip(paths, records, strict=True):
        if names.count(record.name) > 1:
            record.name = str(path)
    return records


def read_run(path: str | os.PathLike) -> RunRecord:
    """The run directory at ``path``; UserError for anything that is not a trained run."""
    path = Path(path)
    if not path.exists():
        raise UserError("run directory not found", str(path),
                        "pass a RUN_DIR that lmforge train wrote (out_dir/name, e.g. runs/quickstart)")
    if not path.is_dir():
        fix = (f"pass its directory: lmforge report {path.parent}" if path.name in (*RUN_FILES, WEIGHTS_FILE)
               else "pass a run directory (out_dir/name), not a file")
        raise UserError("not a directory", str(path), fix)
    present = {name for name in RUN_FILES if (path / name).is_file()}
    if not present:
        _refuse_non_run(path)
    report = _read_report(path / REPORT_FILE) if REPORT_FILE in present else None
    plan = report["predicted"] if report else _read_plan(path / PLAN_FILE) if PLAN_FILE in present else None
    metrics = read_metrics(path / METRICS_FILE) if METRICS_FILE in present else []
    owner = None if report else lock_owner(path)
    status = "finished" if report else "running" if owner else "unfinished"
    weights = weights_file(path, final=report is not None)
    params = safetensors_params(weights) if weights else None
    return RunRecord(path, path.resolve().name, status, plan, report, metrics, params, weights, owner)


def _refuse_non_run(path: Path) -> None:
    if (path / "quantization.json").is_file():
        source = _source_of_quantized(path)
        raise UserError("a quantized run has no training of its own to report", str(path),
                        f"report the run it was quantized from (lmforge report {source}); lmforge quantize "
                        "printed the size and quality before and after")
    if (path / "import.json").is_file():
        raise UserError("an imported checkpoint has no training of its own to report", str(path),
                        f"measure it with lmforge eval {path} --data FILE, or report a run trained from it "
                        "(lmforge train --init-from)")
    if (path / "config.yaml").is_file():
        raise UserError("the run has not reached its first step (no plan.json or metrics.jsonl yet)", str(path),
                        "wait for lmforge train to start training, or train it")
    runs = sorted(str(p) for p in path.iterdir() if p.is_dir() and any((p / n).is_file() for n in RUN_FILES))
    if runs:
        raise UserError("not a run directory, but it holds runs", str(path),
                        f"pass them: lmforge report {' '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}")
    raise UserError("not a run directory (no plan.json, metrics.jsonl or report.json)", str(path),
                    "pass a directory written by lmforge train (out_dir/name)")


def _source_of_quantized(path: Path) -> str:
    try:
        source = json.loads((path / "quantization.json").read_text(encoding="utf-8"))["source"]["run_dir"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "SOURCE_RUN"
    return str(source)


def _read_json(path: Path, fix: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"unreadable {path.name} ({type(e).__name__}: {e})", str(path), fix) from None
    if not isinstance(data, dict):
        raise UserError(f"{path.name} is not a JSON object", str(path), fix)
    return data


def _read_report(path: Path) -> dict:
    report = _read_json(path, REPORT_FIX)
    for section in ("predicted", "measured", "compare"):
        if not isinstance(report.get(section), dict):
            raise UserError(f"report.json lacks its {section!r} section", str(path), REPORT_FIX)
    return report


def _read_plan(path: Path) -> dict:
    return _read_json(path, "plan.json is written before step 1: train the run again")


def lock_owner(run_dir: Path) -> int | None:
    """The pid of the process holding ``run_dir/.lock`` (`lmforge.dirlock`'s flock), read from
    Linux's ``/proc/locks`` without touching the lock; None when none holds it, or elsewhere."""
    try:
        stat = (Path(run_dir) / ".lock").stat()
        table = Path("/proc/locks").read_text(encoding="utf-8")
    except OSError:
        return None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in table.splitlines():
        fields = line.split()  # "2: FLOCK  ADVISORY  WRITE 5720 fe:00:2228282 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    return None


def weights_file(run_dir: Path, *, final: bool) -> Path | None:
    """``model.safetensors`` (a finished run's), else the weights of the checkpoint ``latest``
    names, else of the newest checkpoint; None when there are none."""
    candidates = [run_dir / WEIGHTS_FILE]
    if not final:
        try:
            named = (run_dir / "latest").read_text(encoding="utf-8").strip()
            candidates.append(run_dir / named / WEIGHTS_FILE)
        except (OSError, UnicodeDecodeError):
            pass
        candidates += sorted((run_dir / "checkpoints").glob(f"step-*/{WEIGHTS_FILE}"), reverse=True)
    return next((p for p in candidates if p.is_file()), None)


def safetensors_params(path: Path) -> int:
    """The number of elements of the tensors in a safetensors file, from its header alone
    (https://huggingface.co/docs/safetensors: u64 little-endian N, then N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``). lmforge writes
    tied tensors once, so this is the model's parameter count."""
    fix = "the weights file is damaged: train the run again, or restore the file"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > min(size - 8, HEADER_LIMIT):
                raise ValueError(f"a header of {length:,} bytes in a file of {size:,}")
            header = json.loads(f.read(length))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"unreadable safetensors header ({e})", str(path), fix) from None
    if not isinstance(header, dict):
        raise UserError("the safetensors header is not a JSON object", str(path), fix)
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise UserError("a tensor in the safetensors header has no shape", f"{path}: {name}", fix)
        total += math.prod(shape)
    return total


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def clock(metrics: Sequence[Mapping]) -> Callable[[Mapping], float | None]:
    """record -> seconds since training began, from the records' ``time`` (unix seconds).

    The start is not logged: it is estimated as the first timed record's time less the
    time its tokens take at its logged tokens/s. A resumed run's clock runs on through the
    pause between its invocations.
    """
    timed = [r for r in metrics if is_number(r.get("time"))]
    if not timed:
        return lambda record: None
    first = timed[0]
    rate, tokens = first.get("tokens_per_s"), first.get("tokens")
    lead = tokens / rate if is_number(rate) and rate > 0 and is_number(tokens) else 0.0
    origin = first["time"] - lead
    return lambda record: record["time"] - origin if is_number(record.get("time")) else None


def last_value(metrics: Sequence[Mapping], key: str) -> tuple[float | None, Mapping | None]:
    """The last logged value of ``key`` and its record (None, None when never logged)."""
    for record in reversed(metrics):
        if is_number(record.get(key)):
            return float(record[key]), record
    return None, None
