"""KV cache (lmforge.models.kv_cache): prefill + one token per step gives, at every step, the
logits of a full forward pass over the whole sequence (float64) for GPT-2 style (learned
positions), Llama style (rotary, grouped-query attention) and both encoder-decoder styles
(T5 relative buckets, BART learned positions, cross-attention keys/values computed once);
left-padded batches give each row's logits alone; outputs without a cache are unchanged."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import build_model
from lmforge.models.kv_cache import KVCache, positions_from_mask
from lmforge.plan.presets import get_preset

SMALL_DEC = dict(n_decoder_layers=2, d_model=64, n_heads=4, vocab_size=64, context=32)
DECODERS = {
    "gpt2": get_preset("tiny-gpt2").spec.with_(**SMALL_DEC),
    "llama": get_preset("tiny-llama").spec.with_(**SMALL_DEC, n_kv_heads=2, d_ff=96),
}
SMALL_ED = dict(n_encoder_layers=2, n_decoder_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=64, context=32)
ENC_DECS = {"t5": get_preset("tiny-t5").spec.with_(**SMALL_ED), "bart": get_preset("tiny-bart").spec.with_(**SMALL_ED)}
V, TOL = 64, dict(rtol=1e-9, atol=1e-9)


def _model(spec, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(spec).to(torch.float64).eval()


def _ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def _stepwise(call, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits (B, T, V) from ``call(chunk)``: the first ``prefill`` tokens in one pass, then one per step."""
    chunks = [call(ids[:, :prefill])] + [call(ids[:, t : t + 1]) for t in range(prefill, ids.shape[1])]
    return torch.cat(chunks, dim=1)


@pytest.mark.parametrize("style", list(DECODERS))
@torch.no_grad()
def test_decoder_cache_matches_full_forward(style):
    model = _model(DECODERS[style])
    if style == "llama":
        assert model.spec.kv_heads < model.spec.n_heads  # grouped-query attention is exercised
    ids = _ids(3, 20)
    full = model(ids)  # (B, T, V)
    cache = model.new_cache()
    got = _stepwise(lambda chunk: model(chunk, cache=cache), ids, prefill=7)
    assert cache.length == 20
    torch.testing.assert_close(got, full, **TOL)
    # several tokens after a cache (chunked prefill) need the offset causal mask
    cache = model.new_cache()
    got = torch.cat([model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 12), (12, 20))], dim=1)
    torch.testing.assert_close(got, full, **TOL)


@pytest.mark.parametrize("style", list(DECODERS))
@torch.no_grad()
def test_left_padded_batch_matches_each_prompt_alone(style):
    model = _model(DECODERS[style], seed=1)
    lengths, steps, width = [9, 4, 6], 5, 9
    prompts = [_ids(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    follow = _ids(3, steps, seed=3)  # the tokens fed after each prompt (teacher forcing)
    batch = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :], mask[i, width - len(p) :] = p, True
    cache = model.new_cache()
    logits = [model(batch, cache=cache, attention_mask=mask)[:, -1]]  # (B, V) at each row's last prompt token
    for t in range(steps):
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
        logits.append(model(follow[:, t : t + 1], cache=cache, attention_mask=mask)[:, -1])
    got = torch.stack(logits, dim=1)  # (B, steps + 1, V)
    for i, p in enumerate(prompts):
        alone = model(torch.cat([p, follow[i]])[None])[0, len(p) - 1 :]  # (steps + 1, V)
        torch.testing.assert_close(got[i], alone, **TOL)
    # the same mask without a cache (one padded forward) agrees at the real positions too
    padded = model(torch.cat([batch, follow], 1), attention_mask=mask)  # (B, width + steps, V)
    torch.testing.assert_close(padded[:, width - 1 :], got, **TOL)


@pytest.mark.parametrize("style", list(ENC_DECS))
@torch.no_grad()
def test_encoder_decoder_cache_matches_full_decode(style):
    model = _model(ENC_DECS[style], seed=2)
    src, tgt = _ids(2, 11, seed=4), _ids(2, 15, seed=5)
    src_mask = torch.ones(2, 11, dtype=torch.bool)
    src_mask[1, 7:] = False  # padded memory positions stay masked in cross-attention
    memory = model.encode(src, src_mask)
    full = model.decode(tgt, memory, src_mask)  # (B, T, V)
    cache = model.new_cache()
    got = _stepwise(lambda chunk: model.decode(chunk, memory, src_mask, cache=cache), tgt, prefill=1)
    torch.testing.assert_close(got, full, **TOL)
    assert all(layer.length == 11 for layer in cache.cross)  # cross keys/values: computed once, from memory
    # after the first call cross-attention reads the cache, not the memory passed again
    cache = model.new_cache()
    model.decode(tgt[:, :3], memory, src_mask, cache=cache)
    step = model.decode(tgt[:, 3:4], torch.zeros_like(memory), src_mask, cache=cache)
    torch.testing.assert_close(step, full[:, 3:4], **TOL)


@torch.no_grad()
def test_cache_unused_changes_nothing_and_reorder_keeps_rows():
    spec = DECODERS["llama"]
    model = _model(spec, seed=3)
    ids = _ids(2, 12, seed=6)
    before = model(ids)
    model(ids[:, :4], cache=model.new_cache())  # a cache used elsewhere leaves no state in the model
    assert torch.equal(model(ids), before)
    cache = model.new_cache()
    model(ids[:, :6], cache=cache)
    cache.reorder(torch.tensor([1, 1]))  # beam search: keep row 1 twice
    step = model(ids[1:, 6:8].expand(2, 2), cache=cache)
    torch.testing.assert_close(step, before[1:, 6:8].expand(2, -1, -1), **TOL)


def test_positions_from_mask_and_errors():
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    assert positions_from_mask(mask, 2).tolist() == [[0, 1], [2, 3]]
    model = _model(DECODERS["gpt2"])
    cache = model.new_cache()
    with torch.no_grad():
        model(_ids(1, 30), cache=cache)
        with pytest.raises(UserError, match="longer than the model's context"):
            model(_ids(1, 3), cache=cache)
        with pytest.raises(UserError, match="attention_mask must cover"):
            model(_ids(1, 1), cache=cache, attention_mask=torch.ones(1, 1, dtype=torch.bool))
        with pytest.raises(UserError, match="batch size changed"):
            model(_ids(2, 1), cache=cache)
    assert isinstance(cache, KVCache) and cache.length == 30
