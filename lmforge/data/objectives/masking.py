"""Masked language modelling (BERT): choose tokens, corrupt them 80/10/10, predict the originals.

Devlin et al. 2019, "BERT", Sec. 3.1 ("Task #1: Masked LM") and App. A.1, and Google's
``create_pretraining_data.py`` (``create_masked_lm_predictions``):

- per sequence, exactly ``max(1, round(rate * n))`` of its ``n`` eligible (non-special,
  non-padding) tokens are chosen, uniformly without replacement (BERT's
  ``num_to_predict``; rounding is half-to-even, numpy's ``rint``); a row without eligible
  tokens gets no labels;
- each chosen token independently becomes the mask token with probability ``mask_frac``
  (0.8), a random token with probability ``random_frac`` (0.1), drawn uniformly from the
  non-special ids (it may equal the original, as in BERT), and stays unchanged otherwise
  (0.1);
- labels are the original ids at chosen positions, -100 elsewhere: the loss is only on
  chosen tokens.

Whole-word masking (BERT's ``--do_whole_word_mask``, released May 2019): a word is a token
that begins a word followed by its continuation tokens (``word_starts``, e.g.
``Tokenizer.word_starts``); a special token is always a word of its own, and a row starts
a word. Words are visited in random order and a word is taken whole when it still fits the
budget, skipped when it would overshoot (BERT's ``continue``), until the budget is reached,
so a row may end slightly under budget when only long words remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from lmforge.data.objectives.batch import (
    IGNORE,
    ObjectiveBatch,
    as_rows,
    check_id,
    check_rate,
    check_rng,
    check_share,
    pad_rows,
)
from lmforge.errors import UserError

_MASK_FIX = "train a tokenizer with `lmforge tokenizer train` (it adds <|mask|>) or add a <mask> token"


def _special_lookup(special_ids: Iterable[int], vocab_size: int) -> np.ndarray:
    """(vocab_size,) bool: True for the special ids (ids outside the vocabulary are ignored)."""
    ids = np.fromiter((int(i) for i in special_ids), dtype=np.int64)
    lookup = np.zeros(vocab_size, dtype=bool)
    lookup[ids[(ids >= 0) & (ids < vocab_size)]] = True
    return lookup


def _budget(n_eligible: np.ndarray, rate: float) -> np.ndarray:
    """BERT's num_to_predict per row: max(1, round(rate * n)) when n > 0, else 0."""
    return np.where(n_eligible > 0, np.maximum(1, np.rint(rate * n_eligible)), 0).astype(np.int64)


def _choose_tokens(eligible: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(B, S) bool: exactly the budget of eligible positions per row, uniformly without replacement."""
    keys = np.where(eligible, rng.random(eligible.shape), np.inf)  # (B, S)
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")  # (B, S)
    return ranks < _budget(eligible.sum(axis=1), rate)[:, None]


def _choose_words(
    ids: np.ndarray,
    real: np.ndarray,
    special: np.ndarray,
    word_starts: np.ndarray,
    rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, S) bool: whole words, visited in random order, taken while they fit the budget."""
    chosen = np.zeros(ids.shape, dtype=bool)  # (B, S)
    for b in range(ids.shape[0]):
        row = ids[b, real[b]]  # (L,)
        is_special = special[row]  # (L,)
        starts = word_starts[row] | is_special  # (L,)
        starts[0] = True
        starts[1:] |= is_special[:-1]  # the token after a special token starts a word
        word = np.cumsum(starts) - 1  # (L,) word index of each token
        length = np.bincount(word)  # (W,)
        candidates = np.flatnonzero(~np.bincount(word, weights=is_special).astype(bool))  # non-special words
        budget = int(_budget(np.array([length[candidates].sum()]), rate)[0])
        taken, total = [], 0
        for w in rng.permutation(candidates).tolist():
            if total >= budget:
                break
            if total + length[w] > budget:
                continue  # BERT: a whole word that would overshoot is skipped
            taken.append(w)
            total += int(length[w])
        chosen[b, : row.size] = np.isin(word, taken)
    return chosen


def mask_tokens(
    tokens: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_id: int | None,
    special_ids: Iterable[int],
    rate: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
    word_starts: np.ndarray | None = None,
    pad_id: int | None = None,
) -> ObjectiveBatch:
    """BERT's masked-LM batch from (B, L) token ids (or a list of rows of any lengths).

    Module docstring for the procedure. ``special_ids`` are never chosen nor drawn as
    random replacements; ``word_starts`` ((vocab_size,) bool, True where a token begins a
    word) turns on whole-word masking; ``pad_id`` pads rows of unequal length (default
    ``mask_id``; padded positions have attention_mask False and label -100). Returns input_ids
    and labels of shape (B, S), S the longest row, and ``decoder_input_ids`` None.
    """
    check_rng(rng)
    mask_id = check_id("mask token", mask_id, _MASK_FIX)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise UserError("vocab_size must be a positive integer", vocab_size, "pass tokenizer.vocab_size")
    if mask_id >= vocab_size:
        raise UserError("mask token id outside the vocabulary", mask_id, f"use an id below vocab_size {vocab_size}")
    rate = check_rate("mask rate", rate)
    mask_frac = check_share("mask token fraction", mask_frac)
    random_frac = check_share("random token fraction", random_frac)
    if mask_frac + random_frac > 1 + 1e-12:
        raise UserError(
            "mask and random token fractions add up to more than 1",
            mask_frac + random_frac,
            "lower them (BERT: 0.8 mask, 0.1 random, 0.1 unchanged)",
        )
    rows = as_rows(tokens)
    top = max(int(r.max()) for r in rows)
    if top >= vocab_size:
        raise UserError("token id outside the vocabulary", top, f"token ids must be below vocab_size {vocab_size}")
    special = _special_lookup(special_ids, vocab_size)  # (V,)
    pool = np.flatnonzero(~special)  # ids a random replacement is drawn from
    if pool.size == 0:
        raise UserError("every token id is special", vocab_size, "pass the special ids only")
    ids, real = pad_rows(rows, mask_id if pad_id is None else check_id("pad token", pad_id, "pass a pad id"))
    if word_starts is None:
        chosen = _choose_tokens(real & ~special[ids], rate, rng)  # (B, S)
    else:
        word_starts = np.asarray(word_starts, dtype=bool)
        if word_starts.shape != (vocab_size,):
            raise UserError(
                "word_starts must hold one flag per vocabulary id",
                f"shape {word_starts.shape}",
                "pass tokenizer.word_starts()",
            )
        chosen = _choose_words(ids, real, special, word_starts, rate, rng)
    u = rng.random(ids.shape)  # (B, S) one draw per position decides mask / random / keep
    to_mask = chosen & (u < mask_frac)
    to_random = chosen & (u >= mask_frac) & (u < mask_frac + random_frac)
    input_ids = ids.copy()
    input_ids[to_mask] = mask_id
    input_ids[to_random] = pool[rng.integers(0, pool.size, size=int(to_random.sum()))]
    labels = np.where(chosen, ids, IGNORE)  # (B, S)
    return ObjectiveBatch(input_ids, real, labels, None)


def reconstruct_masked(batch: ObjectiveBatch) -> list[np.ndarray]:
    """The original rows of a masked-LM batch: the input with the labels written back."""
    filled = np.where(batch.labels != IGNORE, batch.labels, batch.input_ids)  # (B, S)
    return [row[mask] for row, mask in zip(filled, batch.attention_mask, strict=True)]
