"""DecoderLM behaviour: causality, GQA, rotary, tying, init, loss, checkpointing, autocast, learning."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import build_model, layers
from lmforge.models.layers import apply_rotary, rotary_cos_sin
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec
from tests.models.overfit import overfit

GPT2 = get_preset("tiny-gpt2").spec  # learned positions, LayerNorm, GELU, biases, tied
LLAMA = get_preset("tiny-llama").spec  # rotary, RMSNorm, SwiGLU, GQA 4:2, no biases, untied
SMALL = dict(n_decoder_layers=2, d_model=64, vocab_size=64, context=32)
STYLES = {"gpt2": GPT2.with_(**SMALL), "llama": LLAMA.with_(**SMALL, d_ff=128)}


def _model(spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec).to(dtype)


@pytest.mark.parametrize("style", STYLES)
def test_causal_mask_does_not_leak(style):
    """Changing tokens after position t changes no logit at or before t (float64), and does
    change later ones (so the test can fail)."""
    spec = STYLES[style]
    model = _model(spec, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, spec.vocab_size, (2, spec.context), generator=gen)
    for t in (0, 7, spec.context - 2):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(0, spec.vocab_size, (2, spec.context - t - 1), generator=gen)
        with torch.no_grad():
            a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-12)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-3


def _gqa_to_mha_state(gqa_state: dict, spec: ModelSpec) -> dict:
    """Expand each kv head to the h / g query heads that read it (head i -> kv head i // (h/g))."""
    h, g, k = spec.n_heads, spec.kv_heads, spec.d_head
    out = dict(gqa_state)
    for name, w in gqa_state.items():
        if name.endswith("attn.qkv.weight"):
            q, kk, v = w.split((h * k, g * k, g * k), dim=0)
            expand = lambda t: t.view(g, k, -1).repeat_interleave(h // g, dim=0).reshape(h * k, -1)  # noqa: E731
            out[name] = torch.cat((q, expand(kk), expand(v)), dim=0)
    return out


def test_gqa_equals_mha_with_repeated_kv_heads(monkeypatch):
    """Ainslie et al. 2023, Sec. 2: GQA is MHA whose kv heads are shared within a group. An MHA
    model holding each kv head repeated for its group gives the same logits, through both the
    ``enable_gqa`` path and the expand-kv path used on torch < 2.5."""
    gqa_spec = LLAMA.with_(**SMALL, d_ff=128, n_heads=4, n_kv_heads=2)
    mha_spec = gqa_spec.with_(n_kv_heads=None)
    gqa = _model(gqa_spec, dtype=torch.float64).eval()
    mha = _model(mha_spec, seed=1, dtype=torch.float64).eval()
    mha.load_state_dict(_gqa_to_mha_state(gqa.state_dict(), gqa_spec))
    assert gqa.num_params() < mha.num_params()
    idx = torch.randint(0, 64, (2, 32))
    with torch.no_grad():
        want = mha(idx)
        torch.testing.assert_close(gqa(idx), want, rtol=0, atol=1e-10)
        monkeypatch.setattr(layers, "SDPA_HAS_GQA", False)
        torch.testing.assert_close(gqa(idx), want, rtol=0, atol=1e-10)
        # the wrong grouping (head i -> kv head i % g) must not match: the check is real
        wrong = dict(gqa.state_dict())
        for name, w in wrong.items():
            if name.endswith("attn.qkv.weight"):
                q, kk, v = w.split((64, 32, 32), dim=0)
                wrong[name] = torch.cat((q, kk.repeat(2, 1), v.repeat(2, 1)), dim=0)
        mha.load_state_dict(wrong)
        assert (mha(idx) - want).abs().max() > 1e-4


def test_rotary_scores_depend_only_on_offset():
    """Su et al. 2021, Eq. 16: <R_m q, R_n k> = g(q, k, m - n); rotations keep norms."""
    torch.manual_seed(0)
    head_dim = 16
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)
    cos, sin = rotary_cos_sin(torch.arange(300), head_dim, dtype=torch.float64)  # (300, 16)

    def score(m: int, n: int) -> float:
        rq = apply_rotary(q, cos[m], sin[m])
        rk = apply_rotary(k, cos[n], sin[n])
        return float(rq @ rk)

    for m, n in [(5, 2), (2, 5), (17, 17), (40, 3)]:
        for shift in (1, 13, 250):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-10)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # a different offset gives a different score
    torch.testing.assert_close(apply_rotary(q, cos[0], sin[0]), q)  # position 0: identity
    assert float(apply_rotary(q, cos[123], sin[123]).norm()) == pytest.approx(float(q.norm()), rel=1e-12)


def test_tied_head_shares_the_embedding_parameter():
    gpt2 = _model(GPT2)
    assert gpt2.lm_head.weight is gpt2.tok_emb.weight
    assert gpt2.lm_head.weight.data_ptr() == gpt2.tok_emb.weight.data_ptr()
    opt = torch.optim.SGD(gpt2.parameters(), lr=0.1)
    idx = torch.randint(0, GPT2.vocab_size, (2, 16))
    gpt2(idx, idx)[1].backward()
    opt.step()
    assert torch.equal(gpt2.lm_head.weight, gpt2.tok_emb.weight)
    llama = _model(LLAMA)
    assert llama.lm_head.weight.data_ptr() != llama.tok_emb.weight.data_ptr()


def test_init_follows_gpt2():
    """Radford et al. 2019, Sec. 2.3: N(0, 0.02), residual projections / sqrt(2 n_layers)."""
    model = _model(GPT2)
    residual = 0.02 / math.sqrt(2 * GPT2.n_decoder_layers)
    block = model.blocks[1]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert block.mlp.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.pos_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(block.attn.qkv.bias) == 0 and torch.count_nonzero(block.norm1.bias) == 0
    assert torch.all(block.norm1.weight == 1) and torch.all(model.final_norm.weight == 1)
    assert torch.all(_model(LLAMA).blocks[0].norm1.weight == 1)


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_untrained_loss_is_about_ln_vocab(spec):
    """At init the logits are nearly uniform: loss ~ ln V (8.318 nats for V = 4096)."""
    model = _model(spec)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, spec.vocab_size, (4, 64), generator=gen)
    targets = torch.randint(0, spec.vocab_size, (4, 64), generator=gen)
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(spec.vocab_size), abs=0.05)


def test_per_token_loss_and_ignore_index():
    model = _model(STYLES["gpt2"])
    idx = torch.randint(0, 64, (2, 16))
    targets = idx.roll(-1, dims=1)
    targets[0, :5] = -100
    with torch.no_grad():
        logits, mean = model(idx, targets)
        _, per_token = model(idx, targets, reduction="none")
        _, total = model(idx, targets, reduction="sum")
    assert per_token.shape == (2, 16) and torch.all(per_token[0, :5] == 0)
    counted = targets != -100
    assert mean.item() == pytest.approx(per_token[counted].mean().item(), rel=1e-6)
    assert total.item() == pytest.approx(per_token.sum().item(), rel=1e-6)
    manual = -torch.log_softmax(logits[1, 3], -1)[targets[1, 3]]
    assert per_token[1, 3].item() == pytest.approx(manual.item(), rel=1e-5)


def test_sequence_longer_than_context_is_a_user_error():
    model = _model(STYLES["llama"])
    assert model(torch.zeros(1, 32, dtype=torch.long)).shape == (1, 32, 64)
    with pytest.raises(UserError, match="longer than the model's context.*at most 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_position_offset_rows_are_skipped():
    """OPT (Zhang et al. 2022) keeps 2 extra rows before position 0: tokens use rows offset..offset+T-1."""
    spec = STYLES["gpt2"].with_(position_offset=2)
    model = _model(spec)
    assert model.pos_emb.weight.shape == (34, 64)
    idx = torch.randint(0, 64, (2, 8))
    model(idx, idx)[1].backward()
    grad_rows = model.pos_emb.weight.grad.abs().sum(-1)
    assert torch.all(grad_rows[:2] == 0) and torch.all(grad_rows[2:10] > 0) and torch.all(grad_rows[10:] == 0)


@pytest.mark.parametrize("style", STYLES)
def test_gradient_checkpointing_gives_the_same_grads(style):
    spec = STYLES[style]
    model = _model(spec)
    calls = []
    mlp_forward = model.blocks[0].mlp.forward

    def counted(x: torch.Tensor) -> torch.Tensor:  # (module hooks do not fire during recomputation)
        calls.append(1)
        return mlp_forward(x)

    model.blocks[0].mlp.forward = counted
    idx = torch.randint(0, 64, (2, 32))

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model.gradient_checkpointing = checkpointing
        model(idx, idx.roll(-1, dims=1))[1].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads(False)
    assert len(calls) == 1
    recomputed = grads(True)
    assert len(calls) == 2  # the block ran again in backward: checkpointing is on
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # no recomputation without grad
        calls.clear()
        model(idx)
        assert len(calls) == 1


@pytest.mark.parametrize("style", STYLES)
def test_bf16_autocast_forward_on_cpu(style):
    model = _model(STYLES[style])
    idx = torch.randint(0, 64, (2, 32))
    targets = idx.roll(-1, dims=1)
    with torch.no_grad():
        _, fp32_loss = model(idx, targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, loss = model(idx, targets)
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(fp32_loss.item(), abs=0.05)


@pytest.mark.parametrize("style", STYLES)
def test_overfits_one_batch(style):
    """A model that can learn drives the loss on one fixed batch of random tokens near zero."""
    spec = STYLES[style]
    model = _model(spec)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, spec.vocab_size, (4, spec.context + 1), generator=gen)
    idx, targets = batch[:, :-1], batch[:, 1:]
    first, last = overfit(model, lambda: model(idx, targets)[1], steps=300)
    assert first > 3.5  # ~ln 64 = 4.16 at init
    assert last < 0.05
