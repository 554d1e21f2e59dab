"""Activation memory (Korthikanti et al. 2022, Table 2 and Sec. 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.activations import RECOMPUTE, activation_bytes, korthikanti_layer_bytes
from lmforge.plan.specs import ModelSpec
from tests.plan.reference_specs import LLAMA2_7B


def gpt(layers: int = 2, d: int = 4096, heads: int = 32, vocab: int = 100, context: int = 2048) -> ModelSpec:
    """A GPT layer as Korthikanti et al. assume it: 4h GELU MLP, MHA, two LayerNorms."""
    return ModelSpec(n_decoder_layers=layers, d_model=d, n_heads=heads, vocab_size=vocab, context=context)


def llama(n_kv_heads: int | None = None) -> ModelSpec:
    """Llama-2-7B (tests/plan/reference_specs.py), with grouped-query attention if asked."""
    return LLAMA2_7B.with_(n_kv_heads=n_kv_heads)


def test_korthikanti_table2_hand_example():
    """Korthikanti et al. 2022, Table 2 (no parallelism), s=2048, b=1, h=4096, a=32, by hand:
    s b h = 8,388,608; 34 s b h = 285,212,672; 5 a s^2 b = 5*32*4,194,304 = 671,088,640;
    none = 956,301,312; selective = 285,212,672; full = 2 s b h = 16,777,216 bytes."""
    assert korthikanti_layer_bytes(2048, 1, 4096, 32, "none") == 956_301_312
    assert korthikanti_layer_bytes(2048, 1, 4096, 32, "selective") == 285_212_672
    assert korthikanti_layer_bytes(2048, 1, 4096, 32, "full") == 16_777_216


@pytest.mark.parametrize("recompute", RECOMPUTE)
def test_spec_layer_reproduces_table2_for_gpt_shape(recompute):
    """Our per-tensor sum for a GPT shape equals Korthikanti Table 2 (hand values above)."""
    expected = {"none": 956_301_312, "selective": 285_212_672, "full": 16_777_216}[recompute]
    assert activation_bytes(gpt(), seq_len=2048, recompute=recompute).decoder_layer == expected


@settings(max_examples=40, deadline=None)
@given(
    heads=st.sampled_from([1, 2, 4, 8]),
    head_dim=st.sampled_from([8, 16, 64]),
    s=st.integers(1, 512),
    b=st.integers(1, 8),
    recompute=st.sampled_from(RECOMPUTE),
)
def test_gpt_shape_matches_formula(heads, head_dim, s, b, recompute):
    """For any GPT shape the generalised sum equals s b h (34 + 5 a s / h) (Table 2)."""
    d = heads * head_dim
    spec = gpt(layers=1, d=d, heads=heads, context=512)
    got = activation_bytes(spec, micro_batch=b, seq_len=s, recompute=recompute).decoder_layer
    assert got == korthikanti_layer_bytes(s, b, d, heads, recompute)


def test_fp32_doubles_elements_not_masks():
    """fp32: 4-byte elements, 1-byte dropout masks: 16e + 2 = 66 s b h and (2e + 1) = 9 a s^2 b."""
    s, b, h, a = 128, 2, 256, 4
    got = activation_bytes(gpt(layers=1, d=h, heads=a, context=128), micro_batch=b, seq_len=s, precision="fp32")
    assert got.decoder_layer == 66 * s * b * h + 9 * a * s * s * b


def test_gqa_and_swiglu_by_hand():
    """Llama-2-7B layer, s=4096, b=1, selective (no scores), by hand:
    attention 2*(d + hk + 2gk + hk)*s + d*s mask; SwiGLU 2*d*s + 4*2*f*s + d*s; 2 RMSNorms 4*d*s."""
    s, d, f = 4096, 4096, 11008
    attention = 2 * (d + d + 2 * d + d) * s + d * s
    mlp = 2 * d * s + 8 * f * s + d * s
    norms = 4 * d * s
    assert activation_bytes(llama(), recompute="selective").decoder_layer == attention + mlp + norms
    # 8 KV heads (GQA) store K and V 8*128 wide instead of 4096: 2 tensors * 2 bytes * s * (4096 - 1024) less.
    gqa = activation_bytes(llama(n_kv_heads=8), recompute="selective").decoder_layer
    assert attention + mlp + norms - gqa == 2 * 2 * s * (4096 - 1024)


def test_outside_layers_and_logits():
    """Sec. 4.3: embedding dropout mask s b h (1 byte), final-norm and output-projection
    inputs 2 s b h each; logits: bf16 projection output + fp32 log-probs + fp32 gradient."""
    spec = gpt(layers=1, d=64, heads=4, vocab=1000, context=32)
    got = activation_bytes(spec, micro_batch=3, seq_len=32)
    assert got.embedding == 3 * 32 * 64
    assert got.output == 2 * 2 * 3 * 32 * 64
    assert got.logits == (2 + 4 + 4) * 3 * 32 * 1000
    assert activation_bytes(spec, micro_batch=3, seq_len=32, precision="fp32").logits == 12 * 3 * 32 * 1000
    assert got.total == got.layers + got.embedding + got.output + got.logits


def test_full_recompute_keeps_inputs_and_one_live_layer():
    """Full recomputation: 2 s b h per layer (Table 2) + one layer's full activations live."""
    spec = gpt(layers=24, d=1024, heads=16, vocab=100, context=1024)
    full = activation_bytes(spec, seq_len=1024, recompute="full")
    none = activation_bytes(spec, seq_len=1024, recompute="none")
    assert full.layers == 24 * 2 * 1024 * 1024
    assert full.recompute_live == none.decoder_layer == korthikanti_layer_bytes(1024, 1, 1024, 16)
    assert full.total < activation_bytes(spec, seq_len=1024, recompute="selective").total < none.total


def test_encoder_decoder_by_hand():
    """Encoder over source_len 5, decoder over 3 with cross-attention; d=8, 2 heads, f=32, V=10, bf16.
    Encoder layer 690 (attention) + 760 (MLP) + 160 (norms) = 1610; decoder layer 354 (self)
    + 478 (cross, scores 5*2*3*5) + 456 (MLP) + 144 (3 norms) = 1432; embedding masks (5+3)*8 = 64; final norms 128
    + encoder output 80 + projection input 48; logits 10*3*10 = 300: total 3662 bytes."""
    spec = ModelSpec(
        family="encoder-decoder",
        n_encoder_layers=1,
        n_decoder_layers=1,
        d_model=8,
        n_heads=2,
        d_ff=32,
        vocab_size=10,
        context=16,
    )
    got = activation_bytes(spec, seq_len=3, source_len=5)
    assert (got.encoder_layer, got.decoder_layer) == (1610, 1432)
    assert (got.embedding, got.output, got.logits) == (64, 256, 300)
    assert got.total == 3662


def test_encoder_without_head_has_no_logits():
    bert = ModelSpec(family="encoder", n_encoder_layers=2, n_decoder_layers=0, d_model=64, n_heads=4, context=128)
    assert activation_bytes(bert, seq_len=128).logits == 0
    with_head = bert.with_(mlm_head=True)
    assert activation_bytes(with_head, seq_len=128).logits == 10 * 128 * bert.vocab_size


@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 16), recompute=st.sampled_from(RECOMPUTE), precision=st.sampled_from(["fp32", "bf16"]))
def test_linear_in_micro_batch(k, recompute, precision):
    spec = llama(n_kv_heads=8).with_(n_decoder_layers=2)
    one = activation_bytes(spec, seq_len=256, recompute=recompute, precision=precision).total
    assert activation_bytes(spec, micro_batch=k, seq_len=256, recompute=recompute, precision=precision).total == k * one


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq_len": 4097},
        {"seq_len": 0},
        {"seq_len": 12.5},
        {"micro_batch": 0},
        {"micro_batch": -1},
        {"micro_batch": True},
        {"precision": "int8"},
        {"recompute": "partial"},
    ],
)
def test_bad_inputs(kwargs):
    with pytest.raises(UserError):
        activation_bytes(llama(), **kwargs)


def test_bad_source_len():
    spec = ModelSpec(family="encoder-decoder", n_encoder_layers=1, n_decoder_layers=1, d_model=8, n_heads=2, context=16)
    with pytest.raises(UserError, match="context"):
        activation_bytes(spec, seq_len=4, source_len=17)
    with pytest.raises(UserError, match="recompute.*choose one of none, selective, full"):
        korthikanti_layer_bytes(1, 1, 1, 1, "everything")
