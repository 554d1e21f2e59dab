"""The batch every pretraining objective builds, and the checks and padding they share.

An objective turns rows of token ids (a (B, L) array, or a list of 1-D arrays of any
lengths) into model inputs and targets. Everything here is numpy: deterministic given the
``np.random.Generator`` the caller passes, and free of torch so that the data layer stays
quick to import (DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge.errors import UserError

IGNORE = -100  # label of a position without loss (PyTorch ``cross_entropy``'s default ignore_index)
MIN_LENGTH = 2  # shortest row an objective accepts


@dataclass
class ObjectiveBatch:
    """Model inputs and targets built by an objective.

    ``labels`` holds -100 where there is no loss. Masked LM: T == S and
    ``decoder_input_ids`` is None. Encoder-decoder objectives: ``decoder_input_ids`` is
    ``labels`` shifted right by one, starting with the decoder start id (Raffel et al.
    2020, Sec. 2.1 "teacher forcing"; Lewis et al. 2020, Sec. 2.1), padded with pad_id.
    """

    input_ids: np.ndarray  # (B, S) int64, padded with pad_id
    attention_mask: np.ndarray  # (B, S) bool, True = real token
    labels: np.ndarray  # (B, T) int64, -100 = no loss
    decoder_input_ids: np.ndarray | None  # (B, T) int64 or None (masked LM)


def check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), not {type(rng).__name__}")
    return rng


def check_rate(name: str, value: object) -> float:
    """``value`` if it is a number strictly between 0 and 1, else a UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise UserError(f"{name} must be a fraction strictly between 0 and 1", value, f"pass e.g. 0.15 for {name}")
    return float(value)


def check_share(name: str, value: object) -> float:
    """``value`` if it is a number in [0, 1], else a UserError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"{name} must be a fraction between 0 and 1", value, f"pass e.g. 0.1 for {name}")
    return float(value)


def check_at_least(name: str, value: object, least: float) -> float:
    """``value`` if it is a finite number >= ``least``, else a UserError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= least
    if not ok:
        raise UserError(f"{name} must be a number of at least {least:g}", value, f"pass e.g. 3.0 for {name}")
    return float(value)


def check_id(name: str, value: object, fix: str) -> int:
    """A token id: a non-negative integer (numpy integers too), else a UserError."""
    if value is None:
        raise UserError(f"no {name}", "the tokenizer has none", fix)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"{name} must be a token id (a non-negative integer)", value, fix)
    return int(value)


def as_rows(tokens: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Rows of int64 token ids from a (B, L) array or a sequence of 1-D arrays.

    Refuses (UserError) an empty batch, non-integer ids, negative ids and rows shorter
    than ``MIN_LENGTH`` tokens.
    """
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 2:
            raise UserError(
                "tokens must be a 2-D array (batch, length)",
                f"shape {tokens.shape}",
                "pass a (B, L) array or a list of 1-D arrays",
            )
        rows = list(tokens)
    else:
        rows = [np.asarray(r) for r in tokens]
    if not rows:
        raise UserError("no sequences to build a batch from", 0, "pass at least one row of tokens")
    out = []
    for i, row in enumerate(rows):
        if row.ndim != 1 or not (np.issubdtype(row.dtype, np.integer) or row.size == 0):
            raise UserError(
                "token rows must be 1-D integer arrays",
                f"row {i}: {row.dtype} {row.shape}",
                "pass token ids as integers",
            )
        if row.size < MIN_LENGTH:
            raise UserError(
                "sequence too short for a pretraining objective",
                f"row {i}: {row.size} tokens",
                f"pass rows of at least {MIN_LENGTH} tokens",
            )
        row = row.astype(np.int64, copy=False)
        if row.min() < 0:
            raise UserError("token ids must be non-negative", f"row {i}: {int(row.min())}", "check the token rows")
        out.append(row)
    return out


def refuse_ids(rows: list[np.ndarray], ids: Iterable[int], what: str, why: str) -> None:
    """UserError when a row already contains one of ``ids`` (the corruption would be ambiguous)."""
    ids = np.fromiter(ids, dtype=np.int64)
    for i, row in enumerate(rows):
        hit = row[np.isin(row, ids)]
        if hit.size:
            raise UserError(f"the tokens already contain a {what}", f"row {i}: id {int(hit[0])}", why)


def pad_rows(rows: list[np.ndarray], fill: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, max length) int64 array of the rows padded with ``fill``, and (B, max) bool mask of real tokens."""
    width = max(r.size for r in rows)
    out = np.full((len(rows), width), fill, dtype=np.int64)  # (B, S)
    real = np.zeros((len(rows), width), dtype=bool)  # (B, S)
    for i, r in enumerate(rows):
        out[i, : r.size] = r
        real[i, : r.size] = True
    return out, real


def seq2seq_batch(
    inputs: list[np.ndarray], targets: list[np.ndarray], *, pad_id: int, decoder_start_id: int
) -> ObjectiveBatch:
    """Pad encoder inputs and decoder targets; decoder inputs are the targets shifted right.

    decoder_input_ids[:, 0] = decoder_start_id and decoder_input_ids[:, t] = target[t - 1]
    (teacher forcing); padding: inputs and decoder inputs with pad_id, labels with -100.
    """
    input_ids, attention_mask = pad_rows(inputs, pad_id)  # (B, S)
    labels, real = pad_rows(targets, IGNORE)  # (B, T)
    decoder_input_ids = np.full_like(labels, pad_id)  # (B, T)
    decoder_input_ids[:, 0] = decoder_start_id
    decoder_input_ids[:, 1:] = np.where(real[:, :-1], labels[:, :-1], pad_id)
    return ObjectiveBatch(input_ids, attention_mask, labels, decoder_input_ids)


def unpad(batch: ObjectiveBatch) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per row: the real encoder input tokens and the target tokens (labels other than -100)."""
    inputs = [row[mask] for row, mask in zip(batch.input_ids, batch.attention_mask, strict=True)]
    targets = [row[row != IGNORE] for row in batch.labels]
    return inputs, targets
