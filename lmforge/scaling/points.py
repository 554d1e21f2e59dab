"""``sweep.csv``: one row per training run of a scaling sweep, and ``sweep.json`` beside it.

Columns (``COLUMNS``), one run a row:

- ``run``: the run's name (its directory under the sweep);
- ``budget_flops``: the IsoFLOP budget C the run belongs to (Hoffmann et al. 2022,
  Sec. 3.2: every size of one budget is trained for C FLOPs);
- ``params``, ``non_embedding_params``: total parameters N (as Chinchilla counts them,
  Hoffmann et al. 2022, Sec. 3) and N without the embeddings (as Kaplan et al. 2020,
  Sec. 2.1, count them);
- ``tokens``: training tokens D;
- ``flops``: the run's own training FLOPs, about 6 N D (Kaplan et al. 2020, Eq. 2.1);
- ``loss``: validation loss in nats per token (empty while the run is not finished);
- ``bits_per_byte``: the same loss per byte of text, ``seconds``: wall time.

``budget_flops``, ``params``, ``tokens`` and ``loss`` are required; the others may be
missing or empty (``None``). ``sweep.json`` (written by ``lmforge scaling sweep``) names
the tokenizer and data the losses were measured with:
``{"tokenizer": {"sha256", "vocab_size"}, "data": {"sources", "sha256"}, "seq_len",
"budgets", "sizes"}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import astuple, dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.fileio import write_atomic

COLUMNS = ("run", "budget_flops", "params", "non_embedding_params", "tokens", "flops", "loss", "bits_per_byte",
           "seconds")
REQUIRED = ("budget_flops", "params", "tokens", "loss")
_NUMERIC = COLUMNS[1:]
META_NAME = "sweep.json"


@dataclass(frozen=True)
class SweepPoint:
    """One finished run: N, D, its budget and the validation loss it reached (nats/token)."""

    run: str
    budget_flops: float
    params: float
    non_embedding_params: float | None
    tokens: float
    flops: float | None
    loss: float
    bits_per_byte: float | None = None
    seconds: float | None = None

    def n(self, counts: str = "params") -> float | None:
        """N as ``counts`` says: "params" (total) or "non_embedding_params"."""
        return self.params if counts == "params" else self.non_embedding_params


@dataclass(frozen=True)
class Sweep:
    """What ``read_sweep`` found: the finished runs, how many rows were unfinished, the metadata."""

    path: Path
    points: list[SweepPoint]
    unfinished: int
    meta: dict | None

    @property
    def unique_tokens(self) -> float | None:
        """The sweep's unique training tokens (sweep.json), for the effective tokens of repeats."""
        value = (self.meta or {}).get("unique_train_tokens")
        return float(value) if value else None

    def output(self, out: str | os.PathLike | None, default: str, what: str, fix: str, folder_of: str) -> Path:
        """Where a file made from the sweep goes: ``out``, or ``default`` beside the CSV;
        UserError when it is a directory (``fix``) or its folder does not exist."""
        target = self.path.with_name(default) if out is None else Path(out)
        if target.is_dir():
            raise UserError(f"the {what} path is a directory", str(target), fix)
        if not target.parent.is_dir():
            raise UserError(f"the folder for the {folder_of} does not exist", str(target.parent), "create it first")
        return target


def _cell(value: float | str | None) -> str:
    """'' for None, a whole number without '.0', else the shortest repr of the float."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    number = float(value)  # numpy scalars too
    if number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    return repr(number)


def write_sweep_csv(path: str | os.PathLike, points: list[SweepPoint]) -> Path:
    """Write ``points`` as ``sweep.csv`` (header ``COLUMNS``) atomically; return the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for point in points:
        writer.writerow([_cell(v) for v in astuple(point)])
    return write_atomic(path, buffer.getvalue())


def _resolve(path: str | os.PathLike) -> Path:
    file = Path(path)
    if file.is_dir() and (file / "sweep.csv").is_file():
        return file / "sweep.csv"  # a sweep directory stands for its sweep.csv
    if not file.is_file():
        raise UserError("sweep CSV not found", str(path), "check the path (lmforge scaling sweep writes DIR/sweep.csv)")
    return file


def _number(text: str | None, row: int, column: str, *, optional: bool) -> float | None:
    where = f"row {row}, column {column}"
    if text is None or text.strip() == "":
        if optional:
            return None
        raise UserError(f"empty value in the sweep CSV at {where}", text or "", "fill it in or remove the row")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"not a number in the sweep CSV at {where}", text, "write a plain number like 1e12") from None
    if not math.isfinite(value):
        raise UserError(f"non-finite value in the sweep CSV at {where}", text, "write a finite positive number")
    if value < 0 or (value == 0 and column != "seconds"):
        raise UserError(f"non-positive value in the sweep CSV at {where}", text, "every count and loss must be > 0")
    return value


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8").removeprefix("\ufeff")  # a spreadsheet's byte-order mark
    except UnicodeDecodeError:
        raise UserError("the sweep CSV is not UTF-8 text", str(file), "pass the sweep.csv a sweep wrote") from None


def read_sweep(path: str | os.PathLike) -> Sweep:
    """Read a sweep CSV (or a sweep directory holding ``sweep.csv``) and its ``sweep.json``.

    Rows with an empty ``loss`` (runs not finished) are skipped and counted in
    ``Sweep.unfinished``. Raises UserError, on one line, for a missing file, a file
    that is not a CSV or holds no rows, missing columns (named), and a value that is
    not a number, not finite or not positive (named by row and column; rows count from
    1 after the header).
    """
    file = _resolve(path)
    text = _read_text(file)
    if not text.strip():
        raise UserError("the sweep CSV is empty", str(file), "pass the sweep.csv a sweep wrote")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise UserError("the sweep file is not a CSV", str(file), f"fix it ({exc})") from None
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"the sweep CSV lacks column(s) {', '.join(missing)}", str(file),
                        "its header must hold " + ",".join(COLUMNS))
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise UserError("the sweep CSV holds no rows", str(file), "run lmforge scaling sweep first")
    points, unfinished = [], 0
    for number, cells in enumerate(body, start=1):
        if len(cells) != len(header):
            raise UserError(f"row {number} of the sweep CSV has {len(cells)} fields, the header {len(header)}",
                            str(file), "fix that row")
        record = dict(zip(header, cells, strict=True))
        if not record["loss"].strip():
            unfinished += 1
            continue
        values = {c: _number(record.get(c), number, c, optional=c not in REQUIRED) for c in _NUMERIC}
        points.append(SweepPoint(run=record.get("run", "").strip() or f"row{number}", **values))
    if not points:
        raise UserError("no finished run in the sweep CSV", f"{unfinished} rows without a loss",
                        "let the sweep finish some runs (lmforge scaling sweep resumes where it stopped)")
    return Sweep(file, points, unfinished, read_sweep_meta(file))


def read_sweep_csv(path: str | os.PathLike) -> list[SweepPoint]:
    """The finished runs of a sweep CSV (see ``read_sweep``, which also counts the unfinished)."""
    return read_sweep(path).points


_META_TYPES = {"tokenizer": dict, "data": dict, "seq_len": int, "budgets": list, "sizes": int}


def read_sweep_meta(csv_path: str | os.PathLike) -> dict | None:
    """``sweep.json`` beside ``csv_path`` as a dict, or None when there is none.

    Raises UserError when it is not JSON or a key has the wrong type.
    """
    file = Path(csv_path).with_name(META_NAME)
    if not file.is_file():
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError("sweep.json beside the CSV is not JSON", str(file), f"fix or remove it ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError("sweep.json beside the CSV is not a JSON object", str(file), "fix or remove it")
    for key, kind in _META_TYPES.items():
        if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
            raise UserError(f"sweep.json: {key} must be a {kind.__name__}", str(file), "fix or remove it")
    return meta
