"""Beam search for decoders and encoder-decoders (one prompt or source, ``num_beams`` hypotheses).

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

A decoder's prompt is prefilled once into the `KVCache` and the cache expanded to ``num_beams``
rows; an encoder-decoder's encoder runs once and its output is expanded to ``num_beams`` rows,
the decoder starting from ``decoder_start_id``. After each step ``cache.reorder(beam_index)``
makes row ``i`` hold the keys and values of the prefix that beam ``i`` now extends.

The settings are validated by `GenerateConfig`, the prompt and the length budget by the engine
(`lmforge.generate.engine`), which is how users reach this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Hypothesis:
    """A finished (or cut at ``max_new_tokens``) beam: new ``ids`` without eos, their per-token
    ``logprobs``, the summed ``logprob`` (eos included when ``ended``), and the length-normalized
    ``score`` used for ranking."""

    ids: list[int]
    logprobs: list[float]
    logprob: float
    ended: bool
    score: float


def _normalized(logprob: float, length: int, length_penalty: float) -> float:
    """``logprob / length ** length_penalty`` (``transformers``' rule); length 0 is left as is."""
    return logprob / (max(length, 1) ** length_penalty)


def _start(model, input_ids: list[int], beams: int, decoder_start_id: int | None
           ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], None]]:
    """First next-token logits (K, V), ``step(last (K, 1)) -> logits (K, V)`` and ``reorder(index (K,))``."""
    device = next(model.parameters()).device
    cache = model.new_cache()
    source = torch.tensor([input_ids], dtype=torch.long, device=device)  # (1, S)
    if model.spec.family == "decoder":
        first = model(source, cache=cache)[:, -1].expand(beams, -1)  # (K, V): the prompt's, for every beam
        cache.reorder(torch.zeros(beams, dtype=torch.long, device=device))  # K copies of the prompt's keys

        def step(last: torch.Tensor) -> torch.Tensor:
            return model(last, cache=cache)[:, -1]  # (K, V)
    else:
        memory = model.encode(source).expand(beams, -1, -1).contiguous()  # (K, S, C)

        def step(last: torch.Tensor) -> torch.Tensor:
            return model.decode(last, memory, cache=cache)[:, -1]  # (K, V)

        first = step(torch.full((beams, 1), decoder_start_id, dtype=torch.long, device=device))
    return first, step, cache.reorder


@torch.no_grad()
def beam_hypotheses(
    model,
    input_ids: list[int],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int | None,
    decoder_start_id: int | None = None,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """All hypotheses kept by the search (at most ``num_beams`` finished plus, when cut by
    ``max_new_tokens``, the running ones), best score first. ``input_ids``: a decoder's prompt
    or an encoder-decoder's source (whose decoder starts from ``decoder_start_id``); the caller
    keeps ``max_new_tokens`` within the model's context. See the module docstring."""
    if max_new_tokens == 0:
        return [Hypothesis([], [], 0.0, False, 0.0)]
    K = num_beams
    logits, step_model, reorder = _start(model, input_ids, K, decoder_start_id)  # (K, V)
    device = logits.device
    beams: list[tuple[list[int], list[float]]] = [([], []) for _ in range(K)]  # (ids, per-token logprobs)
    scores = torch.full((K,), -math.inf, dtype=torch.float64, device=device)  # (K,) summed log-probs
    scores[0] = 0.0  # all beams start identical: only one may spread, or the top K would be copies
    finished: list[Hypothesis] = []
    for step in range(max_new_tokens):
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)  # (K, V)
        V = logp.shape[-1]
        total = (scores[:, None] + logp).view(-1)  # (K * V,)
        top_scores, top_index = total.topk(min(2 * K, total.numel()))  # (2K,) enough to keep K without eos
        next_beams, next_scores, origin, tokens = [], [], [], []
        for rank, (s, flat) in enumerate(zip(top_scores.tolist(), top_index.tolist(), strict=True)):
            if s == -math.inf:
                break
            beam, token = divmod(flat, V)
            ids, logprobs = beams[beam]
            if token == eos_id:
                if rank < K:  # an eos outside the best K is not a better hypothesis (transformers' rule)
                    finished.append(Hypothesis(ids, logprobs, s, True, _normalized(s, len(ids) + 1, length_penalty)))
                continue
            next_beams.append(([*ids, token], [*logprobs, float(logp[beam, token])]))
            next_scores.append(s)
            origin.append(beam)
            tokens.append(token)
            if len(next_beams) == K:
                break
        if len(finished) >= K or step == max_new_tokens - 1 or not next_beams:
            break
        pad = K - len(next_beams)  # fewer than K live candidates (tiny vocab): fill with dead copies
        beams = next_beams + [next_beams[0]] * pad
        scores = torch.tensor(next_scores + [-math.inf] * pad, dtype=torch.float64, device=device)  # (K,)
        reorder(torch.tensor(origin + [origin[0]] * pad, dtype=torch.long, device=device))  # (K,)
        logits = step_model(torch.tensor(tokens + [tokens[0]] * pad, dtype=torch.long, device=device)[:, None])
    if len(finished) < K:  # cut by max_new_tokens: the running beams compete too
        for (ids, logprobs), s in zip(next_beams, next_scores, strict=True):
            finished.append(Hypothesis(ids, logprobs, s, False, _normalized(s, len(ids), length_penalty)))
    if not finished:  # no token but eos had any probability
        return [Hypothesis([], [], 0.0, False, 0.0)]
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[:K]
