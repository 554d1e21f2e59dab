"""A scaling law fitted to your own runs (``law.json`` from ``lmforge scaling fit``).

Same form as Chinchilla's Approach 3, L(N, D) = E + A / N^alpha + B / D^beta
(Hoffmann et al. 2022, Eq. 2), fitted as Besiroglu et al. (2024, Sec. 3) did, so the
compute-optimal split is Eq. 4 of Hoffmann et al. (``ParametricLaw``). Its loss is in
nats per token on YOUR data with YOUR tokenizer (the hashes say which); it is not
comparable with the published laws' losses on MassiveText or WebText2.

Pure Python (``lmforge plan --law`` must not import numpy). ``law.json``::

    {"kind": "fitted", "form": "...", "constants": {"E", "A", "B", "alpha", "beta"},
     "derived": {"a", "b", "G"}, "stderr": {...}, "ci95": {name: [lo, hi]},
     "approach2": {"a", "a_ci95", "b", "b_ci95", ...} | null,
     "n_counts": "params" | "non_embedding_params",
     "tokenizer": {"sha256", "vocab_size"} | null, "data": {"sources", "sha256"} | null,
     "n_points": int, "sweep": str, "lmforge_version": str, ...}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError
from lmforge.plan.laws import ParametricLaw

KIND = "fitted"
FORM = "L(N, D) = E + A / N^alpha + B / D^beta"
CONSTANTS = ("E", "A", "B", "alpha", "beta")
N_COUNTS = ("params", "non_embedding_params")


def loss_dataset(data_sha256: str | None, tokenizer_sha256: str | None) -> str:
    """What a fitted law's loss is measured on: your data and tokenizer, by their hashes."""
    data = f"data sha256 {data_sha256[:12]}" if data_sha256 else "data unrecorded"
    tok = f"tokenizer sha256 {tokenizer_sha256[:12]}" if tokenizer_sha256 else "tokenizer unrecorded"
    return f"your data and tokenizer ({data}, {tok}; nats/token; not comparable to MassiveText)"


@dataclass(frozen=True)
class FittedLaw(ParametricLaw):
    """Your fitted L(N, D) with where it came from and how sure it is.

    ``n_counts`` says whether N is total parameters ("params", as Chinchilla) or
    non-embedding ones ("non_embedding_params", as Kaplan et al. 2020). ``stderr`` and
    ``ci95`` hold bootstrap standard errors and 95% intervals of E, A, B, alpha, beta,
    a, b, G; ``approach2`` the IsoFLOP exponents (Hoffmann et al. 2022, Sec. 3.2).
    """

    path: str | None = None
    n_counts: str = "params"
    tokenizer_sha256: str | None = None
    vocab_size: int | None = None
    data_sha256: str | None = None
    data_sources: tuple[str, ...] = ()
    stderr: dict = field(default_factory=dict)
    ci95: dict = field(default_factory=dict)
    approach2: dict | None = None
    n_points: int | None = None

    @property
    def n_note(self) -> str:
        """How N is counted, in words."""
        return "non-embedding parameters (as Kaplan)" if self.n_counts == "non_embedding_params" else \
            "all parameters (as Chinchilla)"


def _bad(path: str, what: str, fix: str = "refit it with lmforge scaling fit SWEEP.csv") -> UserError:
    return UserError(f"bad law file: {what}", path, fix)


def _positive(path: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, f"constant {name} is not a number ({value!r})")
    if not math.isfinite(value) or value <= 0:
        raise _bad(path, f"constant {name} must be finite and positive ({value!r})")
    return float(value)


def from_record(record: dict, path: str = "law.json") -> FittedLaw:
    """A FittedLaw from the parsed ``law.json`` dict; UserError naming what is wrong."""
    if not isinstance(record, dict):
        raise _bad(path, "not a JSON object")
    if record.get("kind") != KIND:
        raise _bad(path, f"kind is {record.get('kind')!r}, not 'fitted'", "pass the law.json lmforge scaling fit wrote")
    given = record.get("constants")
    if not isinstance(given, dict):
        raise _bad(path, "no constants")
    missing = [name for name in CONSTANTS if name not in given]
    if missing:
        raise _bad(path, f"missing constant(s) {', '.join(missing)}")
    values = {name: _positive(path, name, given[name]) for name in CONSTANTS}
    n_counts = record.get("n_counts", "params")
    if n_counts not in N_COUNTS:
        raise _bad(path, f"n_counts is {n_counts!r}, not one of {', '.join(N_COUNTS)}")
    tokenizer = record.get("tokenizer") or {}
    data = record.get("data") or {}
    if not isinstance(tokenizer, dict) or not isinstance(data, dict):
        raise _bad(path, "tokenizer and data must be JSON objects")
    points = record.get("n_points")
    return FittedLaw(
        name=KIND,
        source=f"your law: {path} (Approach 3 as Besiroglu et al. 2024, Sec. 3, fitted to "
               f"{points if points is not None else 'your'} runs; Hoffmann et al. 2022 Eq. 4 optimum)",
        loss_dataset=loss_dataset(data.get("sha256"), tokenizer.get("sha256")),
        path=path,
        n_counts=n_counts,
        tokenizer_sha256=tokenizer.get("sha256"),
        vocab_size=tokenizer.get("vocab_size"),
        data_sha256=data.get("sha256"),
        data_sources=tuple(data.get("sources") or ()),
        stderr=dict(record.get("stderr") or {}),
        ci95={k: tuple(v) for k, v in (record.get("ci95") or {}).items() if isinstance(v, (list, tuple))},
        approach2=record.get("approach2"),
        n_points=points if isinstance(points, int) else None,
        **values,
    )


def read_law(path: str | os.PathLike) -> FittedLaw:
    """Read ``law.json``; one-line UserError for a missing file, bad JSON, missing or bad constants."""
    file = Path(path)
    if not file.is_file():
        raise UserError("law file not found", str(path), "fit one with lmforge scaling fit SWEEP.csv (writes law.json)")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(str(path), f"not JSON ({type(exc).__name__})") from None
    return from_record(record, str(path))
