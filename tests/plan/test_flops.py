"""FLOPs per token (Kaplan Table 1, PaLM App. B), 6ND and MFU."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest

from lmforge.errors import UserError
from lmforge.plan.flops import (
    flops_per_token,
    forward_flops_per_token,
    matmul_params,
    mfu,
    palm_flops_per_token,
    training_flops,
    training_flops_per_token,
)
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec

GPT2 = get_preset("gpt2").spec


def test_palm_gpt2_small_golden():
    """nanoGPT estimate_mfu (Karpathy, model.py) after PaLM App. B: GPT-2 small at T=1024,
    N = 123,653,376 (all parameters less the 1024x768 position table) ->
    6N + 12 L H Q T = 741,920,256 + 12*12*12*64*1024 = 855,166,464 FLOPs per token."""
    assert matmul_params(GPT2) == 123_653_376
    assert palm_flops_per_token(GPT2, 1024) == 855_166_464
    assert palm_flops_per_token(GPT2) == 855_166_464  # default: the spec's context


def test_palm_llama_2_7b_untied_head():
    """Llama-2-7B at T=4096: N = 6,738,415,616 - 32000*4096 (input embedding only; the
    untied head is a matmul) = 6,607,343,616; 6N + 12*32*32*128*4096 = 46,086,512,640."""
    assert palm_flops_per_token(get_preset("llama-2-7b").spec) == 46_086_512_640


def test_kaplan_forward_gpt2_small():
    """Kaplan et al. 2020, Table 1 at n_ctx=1024: 2N + 2 n_layer n_ctx d_attn with N =
    85,056,000 non-embedding -> 170,112,000 + 18,874,368 = 188,986,368; with the
    de-embedding row 2 d V = 77,194,752 added -> 266,181,120."""
    assert forward_flops_per_token(GPT2, 1024, include_embedding_matmul=False) == 188_986_368
    assert forward_flops_per_token(GPT2, 1024) == 266_181_120


def test_kaplan_dense_is_about_24_layer_d_squared():
    """Kaplan Table 1 / Eq. 2.1: N ~ 2 d_model n_layer (2 d_attn + d_ff) = 12 n_layer d^2."""
    spec = get_preset("gpt3-175b").spec
    dense = flops_per_token(spec, include_embedding_matmul=False).dense
    assert dense == pytest.approx(2 * 12 * 96 * 12288**2, rel=0.001)


def test_training_is_three_forwards():
    """Backward ~ 2x forward (Kaplan et al. 2020, Sec. 2.1)."""
    for spec in (GPT2, get_preset("t5-small").spec, get_preset("bert-base").spec):
        assert training_flops_per_token(spec, 512) == 3 * forward_flops_per_token(spec, 512)


def test_attention_term_linear_in_context():
    """Only the 2 n_layer n_ctx d_attn term depends on the context, linearly."""
    f = [flops_per_token(GPT2, c) for c in (256, 512, 768, 1024)]
    assert len({x.dense for x in f}) == 1
    steps = [b.forward - a.forward for a, b in pairwise(f)]
    assert steps[0] == steps[1] == steps[2] == 2 * 12 * 256 * 768
    assert f[1].attention == 2 * f[0].attention


def test_six_n_d():
    """C = 6ND (Kaplan et al. 2020, Eq. 2.1): Chinchilla 70B x 1.4T tokens = 5.88e23."""
    assert training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    assert training_flops(1, 1) == 6


def test_encoder_decoder_costs_more_than_decoder_of_same_stack():
    """A 12+12 encoder-decoder per token processed > a 12-layer decoder of the same width:
    the decoder stack adds cross-attention parameters and cross-attention scores."""
    enc_dec = get_preset("t5-base").spec
    dec = ModelSpec(
        n_decoder_layers=12, d_model=768, n_heads=12, d_ff=3072, vocab_size=32128, context=512,
        mlp="relu", norm="rmsnorm", positions="relative", bias=False,
    )
    for f in (forward_flops_per_token, training_flops_per_token, palm_flops_per_token):
        assert f(enc_dec) > f(dec)
    assert flops_per_token(enc_dec).attention > flops_per_token(dec).attention


def test_encoder_decoder_by_hand():
    """tiny-t5 (d=128, 2+2 layers, V=4096), 64 source and 32 target tokens, Kaplan:
    encoder params 393,856, decoder 525,440, head V d = 524,288;
    dense 2 (64*393,856 + 32*(525,440 + 524,288)) = 117,596,160;
    attention 2*128*(2*64*64 + 2*32*32 + 2*32*64) = 3,670,016; per token / 96."""
    spec = get_preset("tiny-t5").spec
    got = flops_per_token(spec, source_len=64, target_len=32)
    assert got.dense * 96 == pytest.approx(117_596_160)
    assert got.attention * 96 == pytest.approx(3_670_016)
    assert (got.source_len, got.target_len) == (64, 32)


def test_cross_attention_spans_the_source():
    spec = get_preset("t5-small").spec
    short = flops_per_token(spec, source_len=128, target_len=128)
    long = flops_per_token(spec, source_len=256, target_len=128)
    # per example: encoder self-attention and cross-attention grow with the source
    assert long.attention * 384 > short.attention * 256


def test_encoder_only_counts_mlm_head():
    """BERT-base with MLM head: dense = 2 (non-embedding + V d) per token."""
    spec = get_preset("bert-base").spec
    no_head = spec.with_(mlm_head=False)
    diff = flops_per_token(spec).dense - flops_per_token(no_head).dense
    # MLM transform d*d + d, LayerNorm 2d, output bias V, plus the V x d projection
    assert diff == 2 * (768 * 768 + 768 + 2 * 768 + 30522 + 30522 * 768)


def test_mfu_golden():
    """GPT-2 small at 100k tokens/s on one A100 (312 TFLOP/s bf16):
    1e5 x 855,166,464 / 312e12 = 0.27409..."""
    assert mfu(1e5, GPT2, 312e12, 1024) == pytest.approx(0.2740918153846154)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "7B", True])
def test_bad_numbers_are_user_errors(bad):
    with pytest.raises(UserError):
        training_flops(bad, 1e9)
    with pytest.raises(UserError):
        training_flops(1e9, bad)
    with pytest.raises(UserError):
        mfu(bad, GPT2, 1e15)
    with pytest.raises(UserError):
        mfu(1e5, GPT2, bad)


@pytest.mark.parametrize("bad", [0, -5, 2.5, math.nan, 10**12])
def test_bad_lengths_are_user_errors(bad):
    with pytest.raises(UserError):
        forward_flops_per_token(GPT2, bad)
    with pytest.raises(UserError):
        flops_per_token(get_preset("t5-small").spec, source_len=bad)


def test_source_len_rejected_for_decoder_and_bad_convention():
    with pytest.raises(UserError, match="encoder-decoder models only"):
        forward_flops_per_token(GPT2, source_len=128)
    with pytest.raises(UserError, match="unknown FLOPs convention"):
        flops_per_token(GPT2, convention="chinchilla")


def test_to_dict_is_json():
    out = json.loads(json.dumps(flops_per_token(GPT2, 1024, convention="palm").to_dict()))
    assert out["training"] == 855_166_464 and out["convention"] == "palm"
    assert out["forward"] == out["dense"] + out["attention"]
