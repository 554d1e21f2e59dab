"""``build_objective_batch``: one call for the training loop, options defaulted from the tokenizer.

Names: ``mlm`` (BERT masked LM, ``masking``), ``span`` (T5 span corruption, ``spans``),
``infill`` (BART text infilling, ``infilling``). Defaults taken from the tokenizer:
mask_id, sentinel_ids, eos_id, pad_id (eos when the tokenizer has no pad token),
decoder_start_id = bos_id (eos when the tokenizer has no bos), special ids = every special
token. Any keyword of the builder can be overridden through ``options``; ``mlm`` also takes
``whole_word=True`` for whole-word masking with ``Tokenizer.word_starts()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.data.objectives.batch import ObjectiveBatch
from lmforge.data.objectives.infilling import text_infilling
from lmforge.data.objectives.masking import mask_tokens
from lmforge.data.objectives.spans import span_corruption
from lmforge.errors import UserError, check_choice

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

OBJECTIVES = ("mlm", "span", "infill")
_OPTIONS = {
    "mlm": (
        "rate",
        "mask_frac",
        "random_frac",
        "whole_word",
        "word_starts",
        "vocab_size",
        "mask_id",
        "special_ids",
        "pad_id",
    ),
    "span": ("noise_density", "mean_span_length", "sentinel_ids", "eos_id", "pad_id", "decoder_start_id"),
    "infill": ("mask_ratio", "poisson_lambda", "mask_id", "eos_id", "pad_id", "decoder_start_id"),
}


def special_token_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Every special token id: the tokenizer's added special tokens and its eos, bos, pad, mask and sentinels."""
    ids = {tid for tid, added in tokenizer.inner.get_added_tokens_decoder().items() if added.special}
    ids |= {tokenizer.eos_id, tokenizer.bos_id, *tokenizer.sentinel_ids}
    ids |= {t for t in (tokenizer.pad_id, tokenizer.mask_id) if t is not None}
    return frozenset(ids)


def build_objective_batch(
    name: str,
    tokens: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    tokenizer: Tokenizer,
    **options: Any,
) -> ObjectiveBatch:
    """The ``name`` objective's batch from (B, L) token ids (module docstring for the defaults).

    Refuses (UserError) an unknown name, an unknown option, a tokenizer without the mask
    token (mlm, infill) or without sentinels (span).
    """
    check_choice("objective", name, OBJECTIVES)
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise UserError(
            f"unknown option for objective {name}", ", ".join(unknown), "choose from " + ", ".join(_OPTIONS[name])
        )
    pad_id = tokenizer.eos_id if tokenizer.pad_id is None else tokenizer.pad_id
    if name == "mlm":
        whole_word = options.pop("whole_word", False)
        kwargs: dict[str, Any] = dict(
            vocab_size=tokenizer.vocab_size,
            mask_id=tokenizer.mask_id,
            special_ids=special_token_ids(tokenizer),
            pad_id=pad_id,
        )
        if whole_word:
            kwargs["word_starts"] = tokenizer.word_starts()
        return mask_tokens(tokens, rng, **{**kwargs, **options})
    if name == "span":
        kwargs = dict(
            sentinel_ids=tokenizer.sentinel_ids,
            eos_id=tokenizer.eos_id,
            pad_id=pad_id,
            decoder_start_id=tokenizer.bos_id,
        )
        kwargs.update(options)
        if not kwargs["sentinel_ids"]:
            raise UserError(
                "objective span needs sentinel tokens",
                "the tokenizer has none",
                "train a tokenizer with `lmforge tokenizer train` (it adds 100 sentinels)",
            )
        return span_corruption(tokens, rng, **kwargs)
    kwargs = dict(mask_id=tokenizer.mask_id, eos_id=tokenizer.eos_id, pad_id=pad_id, decoder_start_id=tokenizer.bos_id)
    return text_infilling(tokens, rng, **{**kwargs, **options})
