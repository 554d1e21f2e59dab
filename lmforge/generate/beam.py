"""Beam search for encoder-decoder models (one source sequence, ``num_beams`` hypotheses).

Standard left-to-right beam search over summed log-probabilities (Sutskever, Vinyals & Le 2014,
"Sequence to Sequence Learning with Neural Networks", Sec. 3.1; Graves 2012): at every step each
of the ``num_beams`` running prefixes is extended by every token, and the ``num_beams`` best
extensions (by total log-probability) that do not end in ``eos`` are kept. An extension ending in
``eos`` that ranks among the best ``num_beams`` becomes a finished hypothesis (Hugging Face
``transformers``' ``BeamSearchScorer`` rule). The search stops once ``num_beams`` hypotheses have
finished (``early_stopping=True`` in ``transformers``) or after ``max_new_tokens`` tokens, when the
running beams join the finished ones; the best by length-normalized score wins.

Length penalty: ``score = sum_logprob / length ** length_penalty`` as in ``transformers``
(``BeamHypotheses.add``), ``length`` counting the generated tokens including ``eos``. 0 ranks by
the raw sum (favours short outputs); 1 by the mean log-probability per token; > 1 favours longer
outputs. (Wu et al. 2016, GNMT, Sec. 7, use ``((5 + length) / 6) ** alpha`` instead.)

The encoder runs once; its output is expanded to ``num_beams`` rows. The decoder's `KVCache` is
reordered with ``cache.reorder(beam_index)`` after each step, so that row ``i`` holds the keys and
values of the prefix that beam ``i`` now extends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.errors import UserError, check_whole


@dataclass(frozen=True)
class Hypothesis:
    """A finished (or cut at ``max_new_tokens``) beam: new ``ids`` without eos, summed ``logprob``
    (eos included when ``ended``), and the length-normalized ``score`` used for ranking."""

    ids: list[int]
    logprob: float
    ended: bool
    score: float


def _normalized(logprob: float, length: int, length_penalty: float) -> float:
    """``logprob / length ** length_penalty`` (``transformers``' rule); length 0 is left as is."""
    return logprob / (max(length, 1) ** length_penalty)


def check_beam_args(num_beams: object, max_new_tokens: object, length_penalty: object) -> None:
    """UserError unless ``num_beams`` >= 1 is whole, ``max_new_tokens`` >= 0 is whole, and
    ``length_penalty`` is a finite number."""
    check_whole("num_beams", num_beams, upper=1024)
    check_whole("max_new_tokens", max_new_tokens, allow_zero=True)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise UserError("length_penalty must be a number", length_penalty, "pass e.g. 1.0 (0 = no normalization)")
    if not math.isfinite(length_penalty):
        raise UserError("length_penalty must be finite", length_penalty, "pass e.g. 1.0 (0 = no normalization)")


@torch.no_grad()
def beam_hypotheses(
    model,
    input_ids: list[int],
    *,
    num_beams: int,
    max_new_tokens: int,
    decoder_start_id: int,
    eos_id: int,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """All hypotheses kept by the search (at most ``num_beams`` finished plus, when cut by
    ``max_new_tokens``, the running ones), best score first. See the module docstring."""
    check_beam_args(num_beams, max_new_tokens, length_penalty)
    if not input_ids:
        raise UserError("beam search needs a non-empty source sequence", input_ids, "pass at least one token")
    context = getattr(getattr(model, "spec", None), "context", None)
    if context is not None and max_new_tokens > context:
        raise UserError("max_new_tokens exceeds the decoder's context", max_new_tokens, f"pass at most {context}")
    if max_new_tokens == 0:
        return [Hypothesis([], 0.0, False, 0.0)]
    K = num_beams
    device = next(model.parameters()).device
    src = torch.tensor([input_ids], dtype=torch.long, device=device)  # (1, S)
    memory = model.encode(src).expand(K, -1, -1).contiguous()  # (K, S, C)
    cache = model.new_cache()
    beams: list[list[int]] = [[] for _ in range(K)]
    scores = torch.full((K,), -math.inf, dtype=torch.float64, device=device)  # (K,) summed log-probs
    scores[0] = 0.0  # all beams start identical: only one may spread, or the top K would be copies
    last = torch.full((K, 1), decoder_start_id, dtype=torch.long, device=device)  # (K, 1)
    finished: list[Hypothesis] = []
    for step in range(max_new_tokens):
        logits = model.decode(last, memory, cache=cache)[:, -1]  # (K, V)
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)  # (K, V)
        V = logp.shape[-1]
        total = (scores[:, None] + logp).view(-1)  # (K * V,)
        top_scores, top_index = total.topk(min(2 * K, total.numel()))  # (2K,) enough to keep K without eos
        next_beams, next_scores, origin, tokens = [], [], [], []
        for rank, (s, flat) in enumerate(zip(top_scores.tolist(), top_index.tolist(), strict=True)):
            if s == -math.inf:
                break
            beam, token = divmod(flat, V)
            if token == eos_id:
                if rank < K:  # an eos outside the best K is not a better hypothesis (transformers' rule)
                    length = len(beams[beam]) + 1
                    finished.append(Hypothesis(beams[beam], s, True, _normalized(s, length, length_penalty)))
                continue
            next_beams.append([*beams[beam], token])
            next_scores.append(s)
            origin.append(beam)
            tokens.append(token)
            if len(next_beams) == K:
                break
        if len(finished) >= K or step == max_new_tokens - 1 or not next_beams:
            break
        n = len(next_beams)
        pad = K - n  # fewer than K live candidates (tiny vocab): fill with dead copies
        beams = next_beams + [next_beams[0]] * pad
        scores = torch.tensor(next_scores + [-math.inf] * pad, dtype=torch.float64, device=device)  # (K,)
        beam_index = torch.tensor(origin + [origin[0]] * pad, dtype=torch.long, device=device)  # (K,)
        cache.reorder(beam_index)
        last = torch.tensor(tokens + [tokens[0]] * pad, dtype=torch.long, device=device)[:, None]  # (K, 1)
    if len(finished) < K:  # cut by max_new_tokens: the running beams compete too
        for ids, s in zip(next_beams, next_scores, strict=True):
            finished.append(Hypothesis(ids, s, False, _normalized(s, len(ids), length_penalty)))
    if not finished:  # no token but eos had any probability
        return [Hypothesis([], 0.0, False, 0.0)]
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[:K]


def beam_search(
    model,
    input_ids: list[int],
    *,
    num_beams: int,
    max_new_tokens: int,
    decoder_start_id: int,
    eos_id: int,
    length_penalty: float = 1.0,
) -> list[int]:
    """The best hypothesis of beam search on ``model`` (an `EncoderDecoderLM`) for the source
    ``input_ids``: at most ``max_new_tokens`` new ids (eos counted, not returned). ``num_beams=1``
    is greedy decoding. ``length_penalty``: exponent of the length normalization (module docstring)."""
    hyps = beam_hypotheses(
        model,
        input_ids,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        decoder_start_id=decoder_start_id,
        eos_id=eos_id,
        length_penalty=length_penalty,
    )
    return list(hyps[0].ids)
