"""The generation engine: batched, cached decoding of token ids with the full sampling
chain; text, stop strings and streaming are `lmforge.generate.text`'s, per output.

Decoders: all prompts (times ``num_samples``) run as one batch, LEFT-padded to the longest
prompt with an attention mask, so each row sees the positions it would have alone
(``cumsum(mask) - 1``, as Hugging Face transformers' ``generate``). The prompts are
prefilled into the KV cache in one pass (Pope et al. 2022, Sec. 2), then every step feeds
one token per row; a finished row stops growing (it is fed a filler token whose output is
never read). The cache holds ``spec.context`` positions, so a batch makes at most
``context - longest prompt + 1`` new tokens (finish reason "context"); no sliding window.

Encoder-decoders: one input (and one sample) at a time: the encoder runs once, the
decoder samples from ``tokenizer.bos_id`` with its self- and cross-attention cached, at
most ``context - 1`` new tokens.

Each row draws with its own ``torch.Generator`` seeded ``seed + k`` for its k-th sample,
so a row's tokens do not depend on the other rows of the batch. The logits go through
``LogitsChain`` (repetition penalty over prompt and output, temperature, top-k, top-p,
min-p). ``logprobs[i]`` is the log-probability of the chosen token under that FILTERED,
renormalised distribution (what it was actually drawn from): 0.0 for every greedy token.

Each drawn id goes to its output's `TextOutput.add`, which decodes only the new tokens.
While decoding, the weights are stored in the layout a probe measures faster here
(`lmforge.generate.layout`), and put back afterwards.

Finish reasons: "eos" (the tokenizer's eos was drawn; it is not part of the output),
"stop" (a stop string appeared in the output's text: ``text`` ends right before it, and
``ids``/``logprobs`` keep only the tokens whose text lies wholly before it), "length"
(``max_new_tokens`` reached), "context" (the model's context is full before
``max_new_tokens``: no window slides, and the output says so).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.generate.config import GenerateConfig
from lmforge.generate.layout import decode_layout
from lmforge.generate.processors import LogitsChain
from lmforge.generate.text import GenerationResult, OnToken, TextOutput

__all__ = ["generate", "GenerationResult", "OnToken"]


def generate(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    config: GenerateConfig | None = None,
    on_token: OnToken | None = None,
) -> list[GenerationResult]:
    """Outputs for ``prompts`` (``num_samples`` per prompt, in prompt order then sample
    order); ``on_token(row, piece)`` receives each output's text as it grows.

    UserError: a prompt that is not a string, an empty prompt, a prompt longer than the
    context, an encoder (which does not generate)."""
    config = config or GenerateConfig()
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise UserError("prompts must be a list of strings", type(prompts).__name__, 'pass e.g. ["Once upon"]')
    spec = getattr(model, "spec", None)
    family = getattr(spec, "family", None)
    if family not in ("decoder", "encoder-decoder"):
        raise UserError("this model does not generate text", family, "use a decoder or an encoder-decoder run")
    encoded = [_encode(tokenizer, p, family) for p in prompts]
    for text, ids in zip(prompts, encoded, strict=True):
        if not ids:
            raise UserError("the prompt is empty", text, "give the model at least one token to continue")
        if len(ids) > spec.context:
            raise UserError("the prompt is longer than the model's context", f"{len(ids)} tokens",
                            f"give at most {spec.context} tokens")
    results = [GenerationResult(p, ids, sample=k) for p, ids in zip(prompts, encoded, strict=True)
               for k in range(config.num_samples)]
    rows = [TextOutput(r, i, tokenizer, config.stop, on_token) for i, r in enumerate(results)]
    if config.max_new_tokens == 0 or not rows:
        return results
    chain = LogitsChain.from_settings(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                                      min_p=config.min_p, repetition_penalty=config.repetition_penalty)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), decode_layout(model, len(rows) if family == "decoder" else 1):
            if family == "decoder":
                _decode_batch(model, rows, chain, config, tokenizer.eos_id)
            else:
                for row in rows:
                    _decode_seq2seq(model, row, chain, config, tokenizer)
    finally:
        model.train(was_training)
    return results


def _encode(tokenizer, text: str, family: str) -> list[int]:
    if family == "encoder-decoder":
        from lmforge.generate.fill_mask import encode_with_marks

        return encode_with_marks(tokenizer, text)
    return tokenizer.encode(text)


def _generators(rows: list[TextOutput], seed: int, device: torch.device) -> list[torch.Generator]:
    gens = []
    for row in rows:
        g = torch.Generator(device=device)
        g.manual_seed(seed + row.result.sample)
        gens.append(g)
    return gens


def _draw(chain: LogitsChain, logits: torch.Tensor, history: torch.Tensor, gens: list[torch.Generator],
          live: list[int]) -> tuple[list[int], list[float]]:
    """Next token and its log-probability (filtered distribution) for rows ``live`` of
    ``logits`` (B, V) with ``history`` (B, T) (-1 = padding, ignored by the penalty)."""
    logits = logits[live]  # (n, V)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    filtered = chain(logits, history[live])  # (n, V)
    logp = torch.log_softmax(filtered, dim=-1)  # (n, V)
    if chain.greedy:
        tokens = filtered.argmax(dim=-1)  # (n,)
    else:
        probs = logp.exp()
        tokens = torch.cat([torch.multinomial(probs[j : j + 1], 1, generator=gens[r]).view(1)
                            for j, r in enumerate(live)])  # (n,)
    chosen = logp.gather(1, tokens.view(-1, 1)).view(-1)  # (n,)
    return tokens.tolist(), chosen.tolist()


def _decode_batch(model: nn.Module, rows: list[TextOutput], chain: LogitsChain, config: GenerateConfig,
                  eos_id: int | None) -> None:
    """Left-padded batched decoding with the KV cache (see the module docstring)."""
    device = next(model.parameters()).device
    longest = max(len(r.result.prompt_ids) for r in rows)
    budget = min(config.max_new_tokens, model.spec.context - longest + 1)
    end = "context" if budget < config.max_new_tokens else "length"
    history = torch.full((len(rows), longest), -1, dtype=torch.long, device=device)  # (B, P)
    for i, r in enumerate(rows):
        ids = r.result.prompt_ids
        history[i, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
    mask = history >= 0  # (B, P), True = real token
    filler = 0 if eos_id is None else eos_id
    cache = model.new_cache()
    logits = model(history.clamp(min=0), cache=cache, attention_mask=mask)[:, -1, :]  # (B, V)
    gens = _generators(rows, config.seed, device)
    for step in range(budget):
        live = [i for i, r in enumerate(rows) if not r.done]
        tokens, logprobs = _draw(chain, logits, history, gens, live)
        nxt = torch.full((len(rows), 1), filler, dtype=torch.long, device=device)  # (B, 1)
        for i, token, logprob in zip(live, tokens, logprobs, strict=True):
            rows[i].add(token, logprob, eos_id, last=step == budget - 1, last_reason=end)
            nxt[i, 0] = token
        if all(r.done for r in rows):
            return
        history = torch.cat((history, nxt), dim=1)  # (B, P + step + 1)
        mask = torch.cat((mask, torch.ones_like(nxt, dtype=torch.bool)), dim=1)  # (B, P + step + 1)
        logits = model(nxt, cache=cache, attention_mask=mask)[:, -1, :]  # (B, V)
    for r in rows:
        if not r.done:
            r.finish(end)


def _decode_seq2seq(model: nn.Module, row: TextOutput, chain: LogitsChain, config: GenerateConfig, tokenizer) -> None:
    """One encoder-decoder output: encode once, then decode with the cache."""
    device = next(model.parameters()).device
    source = torch.tensor([row.result.prompt_ids], dtype=torch.long, device=device)  # (1, S)
    source_mask = torch.ones_like(source, dtype=torch.bool)  # (1, S)
    memory = model.encode(source, source_mask)  # (1, S, C)
    cache = model.new_cache()
    budget = min(config.max_new_tokens, model.spec.context - 1)
    end = "context" if budget < config.max_new_tokens else "length"
    pending = torch.tensor([[tokenizer.bos_id]], dtype=torch.long, device=device)  # (1, 1)
    history = pending
    gens = _generators([row], config.seed, device)
    for step in range(budget):
        logits = model.decode(pending, memory, source_mask, cache=cache)[:, -1, :]  # (1, V)
        (token,), (logprob,) = _draw(chain, logits, history, gens, [0])
        row.add(token, logprob, tokenizer.eos_id, last=step == budget - 1, last_reason=end)
        if row.done:
            return
        pending = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
        history = torch.cat((history, pending), dim=1)  # (1, t + 1)
    if not row.done:
        row.finish(end)
