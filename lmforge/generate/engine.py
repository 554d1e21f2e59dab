"""The generation engine: batched, cached decoding of token ids with the full sampling
chain, or beam search; text, stop strings and streaming are `lmforge.generate.text`'s,
per output.

Decoders: all prompts (times ``num_samples``) run as one batch, LEFT-padded to the longest
prompt with an attention mask, so each row sees the positions it would have alone
(``cumsum(mask) - 1``, as Hugging Face transformers' ``generate``). The prompts are
prefilled into the KV cache in one pass (Pope et al. 2022, Sec. 2), then every step feeds
one token per row; a finished row stops growing (it is fed a filler token whose output is
never read). The cache holds ``spec.context`` positions, so a batch makes at most
``context - longest prompt + 1`` new tokens (finish reason "context"), unless
``slide_window``: then, once the cache is full, each step recomputes the last ``context``
tokens of every row (positions 0 .. context - 1 again, as nanoGPT's ``generate``).

Encoder-decoders: one input (and one sample) at a time: the encoder runs once, the
decoder samples from ``tokenizer.bos_id`` with its self- and cross-attention cached, at
most ``context - 1`` new tokens.

Each row draws with its own ``torch.Generator`` seeded ``seed + k`` for its k-th sample,
so a row's tokens do not depend on the other rows of the batch. The logits go through
``LogitsChain`` (repetition penalty over prompt and output, temperature, top-k, top-p,
min-p); `draw` is the one place a token is drawn. ``logprobs[i]`` is the log-probability
of the chosen token under that FILTERED, renormalised distribution (what it was actually
drawn from): 0.0 for every greedy token.

Beam search (``num_beams`` > 1, `lmforge.generate.beam`), either family: one search per
prompt; its ``num_samples`` best hypotheses are the outputs, with the model's own
log-probabilities and the beam's ``score``, and go through the same text layer (stop
strings, streaming once the search has ended).

Each drawn id goes to its output's `TextOutput.add`, which decodes only the new tokens.
While decoding, the weights are stored in the layout a probe measures faster here
(`lmforge.generate.layout`), and put back afterwards.

Finish reasons: "eos" (the tokenizer's eos was drawn; it is not part of the output),
"stop" (a stop string appeared in the output's text: ``text`` ends right before it, and
``ids``/``logprobs`` keep only the tokens whose text lies wholly before it), "length"
(``max_new_tokens`` reached), "context" (the model's context is full before
``max_new_tokens`` and the window does not slide: the output says so).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.generate.beam import beam_hypotheses
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
    context, an encoder (which does not generate), ``slide_window`` for an encoder-decoder."""
    config = config or GenerateConfig()
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise UserError("prompts must be a list of strings", type(prompts).__name__, 'pass e.g. ["Once upon"]')
    spec = getattr(model, "spec", None)
    family = getattr(spec, "family", None)
    if family not in ("decoder", "encoder-decoder"):
        raise UserError("this model does not generate text", family,
                        "use a decoder or an encoder-decoder run (an encoder fills masks: lmforge fill-mask)")
    if config.slide_window and family != "decoder":
        raise UserError("slide_window is for decoders", family, "drop slide_window (the output says when the "
                        "context ended it)")
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
        with torch.inference_mode(), decode_layout(model, *_layout_work(config, len(rows), family)):
            if config.beams:
                _beam_search(model, rows, config, tokenizer)
            elif family == "decoder":
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


def _layout_work(config: GenerateConfig, rows: int, family: str) -> tuple[int, int]:
    """Rows of each decoding step's matmuls and the steps at most (what the layout probe weighs)."""
    if config.beams:
        return config.num_beams, config.max_new_tokens * (rows // config.num_samples)
    if family == "decoder":
        return rows, config.max_new_tokens
    return 1, config.max_new_tokens * rows  # one input at a time


def _budget(config: GenerateConfig, room: int) -> tuple[int, str]:
    """New tokens to make and the finish reason when they run out: ``room`` is what the
    context leaves (unbounded when the window slides)."""
    if config.slide_window or room >= config.max_new_tokens:
        return config.max_new_tokens, "length"
    return room, "context"


def _generators(rows: list[TextOutput], seed: int, device: torch.device) -> list[torch.Generator]:
    gens = []
    for row in rows:
        g = torch.Generator(device=device)
        g.manual_seed(seed + row.result.sample)
        gens.append(g)
    return gens


def draw(chain: LogitsChain, logits: torch.Tensor, history: torch.Tensor | None, gens: list[torch.Generator],
         live: list[int]) -> tuple[list[int], list[float]]:
    """Next token and its log-probability (filtered distribution) for rows ``live`` of
    ``logits`` (B, V) with ``history`` (B, T) (-1 = padding, ignored by the penalty): the
    argmax when the chain is greedy, else one draw per row with that row's generator."""
    logits = logits[live]  # (n, V)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    filtered = chain(logits, None if history is None else history[live])  # (n, V)
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
    context = model.spec.context
    longest = max(len(r.result.prompt_ids) for r in rows)
    budget, end = _budget(config, context - longest + 1)
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
        tokens, logprobs = draw(chain, logits, history, gens, live)
        nxt = torch.full((len(rows), 1), filler, dtype=torch.long, device=device)  # (B, 1)
        for i, token, logprob in zip(live, tokens, logprobs, strict=True):
            rows[i].add(token, logprob, eos_id, last=step == budget - 1, last_reason=end)
            nxt[i, 0] = token
        if all(r.done for r in rows):
            return
        history = torch.cat((history, nxt), dim=1)  # (B, P + step + 1)
        mask = torch.cat((mask, torch.ones_like(nxt, dtype=torch.bool)), dim=1)  # (B, P + step + 1)
        if cache.length < context:
            logits = model(nxt, cache=cache, attention_mask=mask)[:, -1, :]  # (B, V)
        else:  # slide_window: the last `context` tokens again, without the cache
            logits = model(history[:, -context:].clamp(min=0), attention_mask=mask[:, -context:])[:, -1, :]
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
    budget, end = _budget(config, model.spec.context - 1)
    pending = torch.tensor([[tokenizer.bos_id]], dtype=torch.long, device=device)  # (1, 1)
    history = pending
    gens = _generators([row], config.seed, device)
    for step in range(budget):
        logits = model.decode(pending, memory, source_mask, cache=cache)[:, -1, :]  # (1, V)
        (token,), (logprob,) = draw(chain, logits, history, gens, [0])
        row.add(token, logprob, tokenizer.eos_id, last=step == budget - 1, last_reason=end)
        if row.done:
            return
        pending = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
        history = torch.cat((history, pending), dim=1)  # (1, t + 1)
    if not row.done:
        row.finish(end)


def _beam_search(model: nn.Module, rows: list[TextOutput], config: GenerateConfig, tokenizer) -> None:
    """One search per prompt; its ``num_samples`` best hypotheses fill that prompt's rows."""
    decoder = model.spec.family == "decoder"
    for first in range(0, len(rows), config.num_samples):
        prompt_ids = rows[first].result.prompt_ids
        budget, end = _budget(config, model.spec.context - (len(prompt_ids) - 1 if decoder else 1))
        best = beam_hypotheses(model, prompt_ids, num_beams=config.num_beams, max_new_tokens=budget,
                               eos_id=tokenizer.eos_id, decoder_start_id=None if decoder else tokenizer.bos_id,
                               length_penalty=config.length_penalty)
        for k, row in enumerate(rows[first:first + config.num_samples]):
            if k >= len(best):  # fewer hypotheses than outputs: only eos had any probability
                row.finish("eos")
                continue
            hyp = best[k]
            row.result.score = hyp.score
            for token, logprob in zip(hyp.ids, hyp.logprobs, strict=True):
                row.add(token, logprob, None, last=False)
                if row.done:  # a stop string
                    break
            if not row.done:
                row.finish("eos" if hyp.ended else end)
