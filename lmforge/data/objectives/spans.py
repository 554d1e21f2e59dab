"""Span corruption (T5): drop random spans, one sentinel per span in the input; spans as the target.

Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", Sec. 3.1.4 and Fig. 2, and the ``random_spans_noise_mask`` /
``noise_span_to_unique_sentinel`` functions of the T5 code (google-research/
text-to-text-transfer-transformer, ``t5/data/preprocessors.py``), followed step by step:

- ``num_noise = round(L * noise_density)``, clipped to [1, L - 1];
  ``num_spans = max(1, round(num_noise / mean_span_length))`` (round half to even, as
  ``tf.math.round``); additionally at most ``L - num_noise`` so that every non-noise
  segment is non-empty (T5's code would fail there; it only binds for extreme settings);
- noise and non-noise tokens are each cut into ``num_spans`` non-empty segments at random
  (every segmentation equally likely) and interleaved starting with non-noise. As in T5,
  a sequence therefore always ends with a noise span;
- input = the non-noise tokens with each noise span replaced by ``sentinel_ids[i]`` for the
  i-th span, then eos; target = for each span its sentinel and its tokens, then eos.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmforge.data.objectives.batch import (
    ObjectiveBatch,
    as_rows,
    check_at_least,
    check_id,
    check_rate,
    check_rng,
    refuse_ids,
    seq2seq_batch,
    unpad,
)
from lmforge.errors import UserError


def span_counts(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> tuple[int, int]:
    """(noise tokens, noise spans) of a row of ``length`` tokens (module docstring)."""
    length = max(int(length), 2)
    num_noise = min(max(int(np.rint(length * noise_density)), 1), length - 1)
    num_spans = max(int(np.rint(num_noise / mean_span_length)), 1)
    return num_noise, min(num_spans, length - num_noise)


def span_corruption_lengths(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> tuple[int, int]:
    """(input length, target length) of a row of ``length`` tokens, eos included in both.

    Input: L - noise + spans + 1; target: noise + spans + 1 (T5 sizes its raw inputs
    so that the corrupted input fits the context: ``random_spans_helper``).
    """
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """(num_segments,) lengths >= 1 summing to ``num_items``: a uniformly random segmentation (T5)."""
    first_in_segment = np.zeros(num_items, dtype=np.int64)  # (num_items,)
    first_in_segment[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
    return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> np.ndarray:
    """(length,) bool, True = noise: T5's ``random_spans_noise_mask`` (no random roll)."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)  # (num_spans,)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)  # (num_spans,)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)  # (2 * num_spans,)
    span_start = np.zeros(length, dtype=np.int64)
    span_start[np.cumsum(interleaved)[:-1]] = 1
    return np.cumsum(span_start) % 2 == 1


def _spans_to_sentinels(row: np.ndarray, mask: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """T5's ``noise_span_to_unique_sentinel``: each run of True in ``mask`` -> the next sentinel."""
    prev = np.concatenate([[False], mask[:-1]])
    first = mask & ~prev
    index = np.cumsum(first) - 1  # which span each position belongs to (valid where first)
    return np.where(first, sentinels[np.maximum(index, 0)], row)[~(mask & prev)]


def span_corruption(
    tokens: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    pad_id: int,
    decoder_start_id: int,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> ObjectiveBatch:
    """T5 span corruption of (B, L) token ids (or rows of any lengths); module docstring.

    Returns input_ids (B, S) with S = the longest corrupted input (``span_corruption_lengths``),
    labels and decoder_input_ids (B, T), padded with pad_id (labels with -100). Refuses
    (UserError) more spans than sentinels and rows that already contain a sentinel.
    """
    check_rng(rng)
    noise_density = check_rate("noise density", noise_density)
    mean_span_length = check_at_least("mean span length", mean_span_length, 1.0)
    eos_id = check_id("eos token", eos_id, "pass tokenizer.eos_id")
    pad_id = check_id("pad token", pad_id, "pass tokenizer.pad_id (or eos_id)")
    decoder_start_id = check_id("decoder start token", decoder_start_id, "pass tokenizer.bos_id")
    rows = as_rows(tokens)
    sentinels = np.asarray(
        [check_id("sentinel token", s, "pass tokenizer.sentinel_ids") for s in sentinel_ids], dtype=np.int64
    )
    longest = max(r.size for r in rows)
    needed = span_counts(longest, noise_density, mean_span_length)[1]
    if needed > sentinels.size:
        raise UserError(
            "more noise spans than sentinel tokens",
            f"{needed} spans in {longest} tokens, {sentinels.size} sentinels",
            "use a tokenizer with more sentinels (lmforge tokenizer train --n-sentinels), shorter sequences "
            "or a longer mean_span_length",
        )
    refuse_ids(rows, sentinels.tolist(), "sentinel token", "sentinels mark the spans; the data must not hold them")
    inputs, targets = [], []
    eos = np.array([eos_id], dtype=np.int64)
    for row in rows:
        noise = random_spans_noise_mask(row.size, rng, noise_density, mean_span_length)  # (L,)
        inputs.append(np.concatenate([_spans_to_sentinels(row, noise, sentinels), eos]))
        targets.append(np.concatenate([_spans_to_sentinels(row, ~noise, sentinels), eos]))
    return seq2seq_batch(inputs, targets, pad_id=pad_id, decoder_start_id=decoder_start_id)


def reconstruct_span_corruption(batch: ObjectiveBatch, sentinel_ids: Sequence[int], eos_id: int) -> list[np.ndarray]:
    """The original rows of a span-corruption batch: each sentinel of the input replaced by its span.

    Raises ValueError when input and target do not fit together (a missing eos, a
    sentinel out of order or without its span).
    """
    position = {int(s): i for i, s in enumerate(sentinel_ids)}
    originals = []
    for inp, tgt in zip(*unpad(batch), strict=True):
        if inp.size == 0 or tgt.size == 0 or inp[-1] != eos_id or tgt[-1] != eos_id:
            raise ValueError("input and target must end with eos")
        inp, tgt = inp[:-1].tolist(), tgt[:-1].tolist()
        spans: list[list[int]] = []
        for t in tgt:  # target: sentinel_0 span_0 sentinel_1 span_1 ...
            if position.get(t) == len(spans):
                spans.append([])
            elif t in position or not spans:
                raise ValueError(f"unexpected sentinel or token {t} in the target")
            else:
                spans[-1].append(t)
        out, used = [], 0
        for t in inp:
            if t in position:
                if position[t] != used or used >= len(spans):
                    raise ValueError(f"sentinel {t} out of order in the input")
                out.extend(spans[used])
                used += 1
            else:
                out.append(t)
        if used != len(spans):
            raise ValueError("the target has spans the input never refers to")
        originals.append(np.asarray(out, dtype=np.int64))
    return originals
