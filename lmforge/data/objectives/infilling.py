"""Text infilling (BART): Poisson-length spans, each replaced by one mask token; the original as target.

Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training", Sec. 2.2 ("Text
Infilling": span lengths from Poisson(lambda = 3); each span replaced with a single
[MASK] token; 0-length spans insert a [MASK]), following fairseq's ``DenoisingDataset.
add_whole_word_mask`` for the budget:

- ``num_to_mask = ceil(L * mask_ratio)`` tokens (fairseq: ``ceil(words * p)``, every token a
  word here);
- span lengths are drawn from Poisson(poisson_lambda) until they add up to at least the
  budget, and the last one is cut so that they add up to it exactly; zero-length spans
  among them are insertions;
- input = the sequence with every span replaced by one mask token, then eos;
  target = the original sequence, then eos (sentence permutation is not applied).

One deliberate difference: fairseq starts spans at independent random positions, so spans
can overlap and merge (masking less than the budget in longer runs). Here the drawn spans,
in random order, are placed apart from one another, at least one kept token between two
spans, every such arrangement equally likely: exactly ``num_to_mask`` tokens are masked,
in exactly the drawn spans, and every mask token of the input stands for one drawn span.
When there are too few kept tokens to separate the spans (a ratio near 1 on a short row),
zero-length spans are dropped first, then neighbouring spans merged; zero-length spans are
also dropped so that the input is never longer than the target (spans <= masked tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lmforge.data.objectives.batch import (
    ObjectiveBatch,
    as_rows,
    check_id,
    check_rate,
    check_rng,
    refuse_ids,
    seq2seq_batch,
    unpad,
)
from lmforge.errors import check_positive

_MASK_FIX = "train a tokenizer with `lmforge tokenizer train` (it adds <|mask|>) or add a <mask> token"


def _span_lengths(num_to_mask: int, poisson_lambda: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson lengths adding up to ``num_to_mask`` (the last one cut), zeros kept (fairseq)."""
    lengths = rng.poisson(poisson_lambda, size=num_to_mask)
    while lengths.sum() < num_to_mask:
        lengths = np.concatenate([lengths, rng.poisson(poisson_lambda, size=num_to_mask)])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, num_to_mask))  # first span reaching the budget
    lengths = lengths[: last + 1].copy()
    lengths[last] = num_to_mask - (cum[last - 1] if last else 0)
    return lengths


def _fit(lengths: np.ndarray, num_kept: int) -> np.ndarray:
    """Drop zero-length spans, then merge neighbouring spans, until k - 1 <= kept tokens and k <= masked tokens."""
    limit = min(num_kept + 1, int(lengths.sum()))
    excess = lengths.size - limit
    if excess <= 0:
        return lengths
    zeros = np.flatnonzero(lengths == 0)
    lengths = np.delete(lengths, zeros[zeros.size - min(excess, zeros.size) :])
    if lengths.size > limit:  # merge runs of neighbouring spans into ``limit`` spans of similar counts
        lengths = np.add.reduceat(lengths, (np.arange(limit) * lengths.size) // limit)
    return lengths


def infilling_spans(
    length: int, rng: np.random.Generator, mask_ratio: float = 0.3, poisson_lambda: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the spans masked in a row of ``length`` tokens, by increasing start.

    A span covers original positions [start, start + length); a zero-length span inserts a
    mask before position ``start`` (``start == length``: at the end). Module docstring.
    """
    num_to_mask = min(math.ceil(length * mask_ratio - 1e-9), length)
    num_kept = length - num_to_mask
    lengths = _fit(_span_lengths(num_to_mask, poisson_lambda, rng), num_kept)
    lengths = rng.permutation(lengths)  # the cut span anywhere, not always last
    k = lengths.size
    free = num_kept - (k - 1)  # kept tokens beyond the one required between neighbouring spans
    bars = np.sort(rng.choice(free + k, size=k, replace=False))  # stars and bars: uniform composition
    gaps = np.diff(np.concatenate([[-1], bars, [free + k]])) - 1  # (k + 1,) >= 0, sum free
    gaps[1:-1] += 1
    starts = np.cumsum(gaps[:-1]) + np.concatenate([[0], np.cumsum(lengths[:-1])])
    return starts.astype(np.int64), lengths.astype(np.int64)


def _infill_row(row: np.ndarray, starts: np.ndarray, lengths: np.ndarray, mask_id: int) -> np.ndarray:
    covered = np.zeros(row.size + 1, dtype=np.int64)
    np.add.at(covered, starts, 1)
    np.add.at(covered, starts + lengths, -1)
    kept = row[np.cumsum(covered)[:-1] == 0]
    at = starts - np.concatenate([[0], np.cumsum(lengths[:-1])])  # each span's position among kept tokens
    return np.insert(kept, at, mask_id)


def text_infilling(
    tokens: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    mask_id: int | None,
    eos_id: int,
    pad_id: int,
    decoder_start_id: int,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> ObjectiveBatch:
    """BART text infilling of (B, L) token ids (or rows of any lengths); module docstring.

    Returns input_ids (B, S), S <= L + 1 (the longest corrupted input, eos included),
    labels and decoder_input_ids (B, L + 1) (the longest row + eos), padded with pad_id
    (labels with -100). Refuses (UserError) rows that already contain the mask token.
    """
    check_rng(rng)
    mask_id = check_id("mask token", mask_id, _MASK_FIX)
    eos_id = check_id("eos token", eos_id, "pass tokenizer.eos_id")
    pad_id = check_id("pad token", pad_id, "pass tokenizer.pad_id (or eos_id)")
    decoder_start_id = check_id("decoder start token", decoder_start_id, "pass tokenizer.bos_id")
    mask_ratio = check_rate("mask ratio", mask_ratio)
    poisson_lambda = float(check_positive("poisson lambda", poisson_lambda, upper=1e6))
    rows = as_rows(tokens)
    refuse_ids(rows, [mask_id], "mask token", "the mask token marks the spans; the data must not hold it")
    inputs, targets = [], []
    eos = np.array([eos_id], dtype=np.int64)
    for row in rows:
        starts, lengths = infilling_spans(row.size, rng, mask_ratio, poisson_lambda)
        inputs.append(np.concatenate([_infill_row(row, starts, lengths, mask_id), eos]))
        targets.append(np.concatenate([row, eos]))
    return seq2seq_batch(inputs, targets, pad_id=pad_id, decoder_start_id=decoder_start_id)


def infilling_alignment(corrupted: np.ndarray, original: np.ndarray, mask_id: int) -> list[tuple[int, int]]:
    """(start, length) in ``original`` of the span each mask of ``corrupted`` stands for.

    Glob matching with each mask a wildcard for zero or more tokens (greedy with
    backtracking to the last wildcard, which finds a match whenever one exists); the
    spans are unique when the original's tokens are distinct. Raises ValueError when
    ``corrupted`` is not ``original`` with spans replaced by masks.
    """
    p, s = np.asarray(corrupted).tolist(), np.asarray(original).tolist()
    i = j = 0
    star, mark = -1, 0
    begin: dict[int, int] = {}  # pattern index of a mask -> where its span starts in s
    while j < len(s):
        if i < len(p) and p[i] == mask_id:
            star, mark = i, j
            begin[i] = j
            i += 1
        elif i < len(p) and p[i] == s[j]:
            i += 1
            j += 1
        elif star >= 0:
            mark += 1
            i, j = star + 1, mark
        else:
            raise ValueError("the corrupted sequence is not the original with spans masked")
    while i < len(p) and p[i] == mask_id:
        begin[i] = j
        i += 1
    if i != len(p):
        raise ValueError("the corrupted sequence is not the original with spans masked")
    masks = sorted(begin)
    spans = []
    for n, m in enumerate(masks):  # a span ends where the literal tokens after it begin
        following = masks[n + 1] if n + 1 < len(masks) else len(p)
        end = (begin[following] if following < len(p) else len(s)) - (following - m - 1)
        spans.append((begin[m], end - begin[m]))
    return spans


def reconstruct_infilling(batch: ObjectiveBatch, mask_id: int, eos_id: int) -> list[np.ndarray]:
    """The original rows of a text-infilling batch: each mask of the input replaced by its span of the target.

    Raises ValueError when an input is not its target with spans replaced by single masks.
    """
    originals = []
    for inp, tgt in zip(*unpad(batch), strict=True):
        if inp.size == 0 or tgt.size == 0 or inp[-1] != eos_id or tgt[-1] != eos_id:
            raise ValueError("input and target must end with eos")
        inp, tgt = inp[:-1], tgt[:-1]
        spans = iter(infilling_alignment(inp, tgt, mask_id))
        out: list[int] = []
        for t in inp.tolist():
            if t == mask_id:
                start, length = next(spans)
                out.extend(tgt[start : start + length].tolist())
            else:
                out.append(t)
        originals.append(np.asarray(out, dtype=np.int64))
    return originals
