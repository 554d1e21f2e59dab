"""A simple single-prompt temperature / top-k sampler for decoders, with a KV cache.

The prompt is prefilled into the model's KV cache in one pass, then each step feeds one
token (past the context the window slides, and each step recomputes the last
``spec.context`` ids). The last position's logits go through the processor chain of
``lmforge.generate.processors``: divided by the temperature (Ackley et al. 1985; Hinton
et al. 2015, Sec. 2), the ``top_k`` largest kept (Fan et al. 2018, Sec. 5.4), then a draw
from the softmax with a seeded ``torch.Generator``; temperature 0 is greedy (argmax).
Batched prompts, encoder-decoders, stop strings, streaming and the other settings are in
``lmforge.generate.engine``; beam search in ``lmforge.generate.beam``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.errors import UserError, check_whole
from lmforge.generate.processors import LogitsChain


def _check_args(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    eos_id: int | None,
) -> int:
    """Validate the arguments; return the model's vocabulary size."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise UserError(
            "sample needs a model built by lmforge (with .spec)",
            type(model).__name__,
            "build it with lmforge.models.build_model",
        )
    vocab = spec.vocab_size
    if not isinstance(prompt_ids, (list, tuple)) or not prompt_ids:
        raise UserError("the prompt is empty", prompt_ids, "pass at least one token id (e.g. the tokenizer's bos id)")
    bad = [t for t in prompt_ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
    if bad:
        raise UserError(
            "prompt token id outside the model's vocabulary",
            bad[0],
            f"ids must lie in [0, {vocab}); is the tokenizer the one the model was trained with?",
        )
    check_whole("max_new_tokens", max_new_tokens, allow_zero=True)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise UserError("temperature must be a finite number >= 0", temperature, "pass e.g. 0.8, or 0 for greedy")
    if top_k is not None:
        check_whole("top_k", top_k)
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int)):
        raise UserError("eos_id must be a token id", eos_id, "pass the tokenizer's eos id or None")
    return vocab


def sample(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
    eos_id: int | None = None,
) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` ids; return the new ids only.

    ``temperature`` 0 is greedy; ``top_k`` None keeps the whole vocabulary; ``seed``
    seeds a private ``torch.Generator`` (the global RNG is untouched), so equal
    arguments give equal output on the same device. Stops early after ``eos_id``, which
    is not included in the result. The model runs in eval mode under
    ``torch.inference_mode()`` and is put back in its previous mode afterwards.
    """
    _check_args(model, prompt_ids, max_new_tokens, temperature, top_k, eos_id)
    context = model.spec.context
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    new: list[int] = []
    was_training = model.training
    model.eval()
    # The KV cache holds at most the context; past it, the window slides and each step
    # recomputes the last ``context`` tokens instead.
    cache = model.new_cache() if hasattr(model, "new_cache") and len(prompt_ids) + max_new_tokens <= context else None
    try:
        with torch.inference_mode():
            pending = ids  # (1, t): what the model has not seen yet
            for _ in range(max_new_tokens):
                if cache is not None:
                    logits = model(pending, cache=cache)[:, -1, :].float()  # (1, V)
                else:
                    logits = model(ids[:, -context:])[:, -1, :].float()  # (1, V)
                next_id = _next_token(logits, temperature, top_k, generator)  # (1, 1)
                pending = next_id
                token = int(next_id.item())
                if eos_id is not None and token == eos_id:
                    break
                new.append(token)
                ids = torch.cat((ids, next_id), dim=1)
    finally:
        model.train(was_training)
    return new


def _next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """(1, V) logits -> (1, 1) next id: argmax at temperature 0, else top-k sampling,
    through the processor chain (``lmforge.generate.processors``; top_k >= vocab keeps all)."""
    chain = LogitsChain.from_settings(temperature=temperature, top_k=top_k)
    return chain.next_token(logits, None, generator)
