"""`lmforge fill-mask`: an encoder's top-k candidates for each ``<mask>`` in a text; and
the same marks (``<mask>``, ``<|sentinel_N|>``) in an encoder-decoder's input.

The text is split at the literal ``<mask>``; the pieces are tokenized and joined with the
tokenizer's mask token. A space just before ``<mask>`` is left to the prediction, as
byte-level BPE attaches spaces to the following word (Radford et al. 2019, Sec. 2.2).
Probabilities are the softmax of the MLM head at each mask position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError, check_whole

MASK_MARK = "<mask>"


@dataclass(frozen=True)
class Candidate:
    token: str
    token_id: int
    probability: float


def masked_ids(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[int]]:
    """(token ids with mask ids, positions of the masks)."""
    if tokenizer.mask_id is None:
        raise UserError("this tokenizer has no mask token", "fill-mask", "use a run trained with objective mlm")
    pieces = text.split(MASK_MARK)
    if len(pieces) < 2:
        raise UserError("the text has no <mask>", text, 'write e.g. "The capital of France is <mask>."')
    ids: list[int] = []
    positions: list[int] = []
    for index, piece in enumerate(pieces):
        if index < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]
        ids.extend(tokenizer.encode(piece) if piece else [])
        if index < len(pieces) - 1:
            positions.append(len(ids))
            ids.append(tokenizer.mask_id)
    return ids, positions


@torch.inference_mode()
def fill_mask(model: torch.nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[list[Candidate]]:
    """For each ``<mask>`` in ``text``, the ``top_k`` most probable tokens."""
    if model.spec.family != "encoder":
        raise UserError("fill-mask needs an encoder (masked LM)", model.spec.family,
                        "train one with --model.preset tiny-bert, or use lmforge generate")
    check_whole("top_k", top_k, upper=model.spec.vocab_size)
    ids, positions = masked_ids(tokenizer, text)
    if len(ids) > model.spec.context:
        raise UserError("the text is longer than the model's context", len(ids), f"at most {model.spec.context} tokens")
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)  # (1, S)
    logits = model(input_ids, torch.ones_like(input_ids, dtype=torch.bool))[0].float()  # (S, V)
    results = []
    for position in positions:
        probs = torch.softmax(logits[position], dim=-1)  # (V,)
        best = torch.topk(probs, top_k)
        results.append([Candidate(tokenizer.decode([int(i)]), int(i), float(p))
                        for p, i in zip(best.values, best.indices, strict=True)])
    return results


SPECIAL_MARK = re.compile(r"(<\|sentinel_\d+\|>|<mask>)")


def encode_with_marks(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` where the literal marks ``<mask>`` and ``<|sentinel_N|>``
    become the tokenizer's mask and sentinel tokens (ordinary text never does)."""
    ids: list[int] = []
    for piece in SPECIAL_MARK.split(text):
        if not piece:
            continue
        if piece == MASK_MARK:
            if tokenizer.mask_id is None:
                raise UserError("this tokenizer has no mask token", piece, "remove <mask> from the text")
            ids.append(tokenizer.mask_id)
        elif SPECIAL_MARK.fullmatch(piece):
            token_id = tokenizer.token_to_id(piece)
            if token_id is None:
                raise UserError("this tokenizer has no such sentinel", piece, "use <|sentinel_0|> ... as trained")
            ids.append(token_id)
        else:
            ids.extend(tokenizer.encode(piece))
    return ids
