"""Memory to store a model: weights at each precision, quantized or not, and the KV cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.plan.storage import PRECISION_BYTES, kv_cache_bytes, weight_bytes, weight_bytes_for_params
from tests.plan.reference_specs import LLAMA2_7B, small


def test_llama_param_count():
    """Llama-2-7B has 6,738,415,616 parameters (Hugging Face model card / safetensors index)."""
    assert param_counts(LLAMA2_7B).total == 6_738_415_616


def test_kv_cache_llama2_7b():
    """Llama-2-7B fp16: 2 * 32 layers * 32 kv heads * 128 * 2 bytes = 524,288 bytes per token."""
    spec = LLAMA2_7B
    assert kv_cache_bytes(spec, 1, 1, "fp16") == 524_288
    assert kv_cache_bytes(spec, 4, 4096, "fp16") == 524_288 * 4 * 4096
    assert kv_cache_bytes(spec, 1, 1, "fp32") == 2 * 524_288
    assert kv_cache_bytes(spec, 1, 3, "int4") == 524_288 * 3 // 4


def test_kv_cache_gqa_encoder_decoder_and_encoder():
    """Llama-2-70B shape (80 layers, 8 kv heads, 128): 2*80*8*128*2 = 327,680 bytes/token.
    Encoder-decoder: decoder self-attention over seq + cross K/V over source. Encoder: 0."""
    gqa = ModelSpec(n_decoder_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, vocab_size=32000, context=4096)
    assert kv_cache_bytes(gqa, 1, 1, "bf16") == 327_680
    t5 = ModelSpec(
        family="encoder-decoder",
        n_encoder_layers=3,
        n_decoder_layers=2,
        d_model=64,
        n_heads=4,
        context=512,
        positions="relative",
    )
    assert kv_cache_bytes(t5, 2, 10, "bf16", source_len=100) == 2 * 2 * 4 * 16 * 2 * (10 + 100) * 2
    assert kv_cache_bytes(t5, 1, 10) == 2 * 2 * 4 * 16 * 2 * 20
    bert = ModelSpec(family="encoder", n_encoder_layers=2, n_decoder_layers=0, d_model=64, n_heads=4)
    assert kv_cache_bytes(bert, 8, 512) == 0


def test_weight_bytes_llama_by_hand():
    """Llama-2-7B, by hand from the shapes: 6,738,149,376 weights in matrices, 266,240 norm
    scales (2 per layer + final, 4096 each). Rows: per layer q,k,v,o 4*4096 + gate,up
    2*11008 + down 4096 = 42,496, times 32, + 2*32000 (embedding, head) = 1,423,872.
    int4 g128 groups: per layer 4*4096*32 + 2*11008*32 + 4096*86 = 1,581,056, times 32,
    + 2*32000*32 = 52,641,792 groups of 4 bytes."""
    spec, matrices, norms = LLAMA2_7B, 6_738_149_376, 266_240
    assert weight_bytes(spec, "fp32") == 4 * 6_738_415_616
    assert weight_bytes(spec, "bf16") == weight_bytes(spec, "fp16") == 2 * 6_738_415_616
    assert weight_bytes(spec, "int8") == matrices + 2 * 1_423_872 + 2 * norms == 6_741_529_600
    assert weight_bytes(spec, "int4") == matrices // 2 + 4 * 52_641_792 + 2 * norms == 3_580_174_336
    # 16-bit embeddings: the two (32000, 4096) tables at 2 bytes instead of 1 + their row scales.
    kept = weight_bytes(spec, "int8", keep_embeddings_16bit=True) - weight_bytes(spec, "int8")
    assert kept == 2 * (32000 * 4096 - 2 * 32000)


def test_weight_bytes_ratios():
    """int8 <= 26% and int4 with groups of 32 <= 16% of fp32 for the Llama-2-7B shape."""
    spec = LLAMA2_7B
    fp32 = weight_bytes(spec, "fp32")
    assert weight_bytes(spec, "int8") <= 0.26 * fp32
    assert weight_bytes(spec, "int4", group_size=32) <= 0.16 * fp32
    assert weight_bytes(spec, "int4", group_size=32) > weight_bytes(spec, "int4", group_size=128)


def test_weight_bytes_int4_partial_groups_by_hand():
    """One GPT layer, d=8, 2 heads, ff 12, vocab 10, context 4, LayerNorm, biases, tied,
    int4 with groups of 5 (partial last groups). Matrices (out, in): 4 x (8, 8) -> 32 data
    + 8*2 groups*4 = 96 bytes each; (12, 8) -> 48 + 12*2*4 = 144; (8, 12) -> 48 + 8*3*4 = 144;
    embedding (10, 8) -> 40 + 10*2*4 = 120: 792. 16-bit: biases 32 + 20, norms 3*16,
    positions 4*8: 132 params, 264 bytes. Total 1056 bytes; 660 params."""
    spec = ModelSpec(n_decoder_layers=1, d_model=8, n_heads=2, d_ff=12, vocab_size=10, context=4)
    assert param_counts(spec).total == 660
    assert weight_bytes(spec, "int4", group_size=5) == 1056


def test_weight_bytes_xl_relative_by_hand():
    """Two Transformer-XL layers (Dai et al. 2019), d=64, 4 heads, ff 256, vocab 100, tied, no
    bias, RMSNorm. Quantized rows per layer: q,k,v,o,W_kR 5*64 + MLP 256 + 64 = 640; two
    layers + embedding 100 = 1380 rows. 16-bit: norms 64*5 + u,v 2*64*2 = 576 params.
    Params 113,472, so 112,896 in matrices: int8 = 112,896 + 2*1380 + 2*576 = 116,808."""
    spec = ModelSpec(
        n_decoder_layers=2, d_model=64, n_heads=4, vocab_size=100, positions="xl-relative", bias=False, norm="rmsnorm"
    )
    assert param_counts(spec).total == 113_472
    assert weight_bytes(spec, "int8") == 116_808


def test_weight_bytes_for_params():
    """Bare counts: int4 g128 = 0.5 + 4/128 bytes/param; int8 1 byte (channel scales neglected)."""
    assert weight_bytes_for_params(7e9, "int4") == pytest.approx(7e9 * 0.53125)
    assert weight_bytes_for_params(7e9, "int4", group_size=32) == pytest.approx(7e9 * 0.625)
    assert weight_bytes_for_params(7e9, "int8") == 7e9
    assert weight_bytes_for_params(7e9, "bf16") == 14e9


@settings(max_examples=80, deadline=None)
@given(p=st.floats(1e3, 1e13), k=st.floats(0.01, 100))
def test_bare_counts_are_linear_in_params(p, k):
    for precision_name in PRECISION_BYTES:
        assert weight_bytes_for_params(k * p, precision_name) == pytest.approx(
            k * weight_bytes_for_params(p, precision_name)
        )


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=0, max_size=12))
def test_unknown_precision_lists_the_choices(name):
    spec = small()
    if name not in PRECISION_BYTES:
        with pytest.raises(UserError, match="choose one of fp32"):
            weight_bytes(spec, name)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: kv_cache_bytes(s, 1, 257),
        lambda s: kv_cache_bytes(s, 0, 16),
        lambda s: kv_cache_bytes(s, 1, 16, "fp8"),
        lambda s: weight_bytes(s, "int4", group_size=0),
        lambda s: weight_bytes_for_params(float("inf"), "fp32"),
        lambda s: weight_bytes_for_params(-1, "fp32"),
    ],
)
def test_bad_inputs_raise_user_error(call):
    with pytest.raises(UserError):
        call(small())
