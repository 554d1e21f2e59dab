"""ModelSpec validation and the parameter-count conventions (presets are tested apart)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.specs import ModelSpec, attention_params, mlp_params, param_counts

LLAMA_2_7B = dict(
    n_decoder_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab_size=32000, context=4096,
    mlp="swiglu", norm="rmsnorm", positions="rotary", bias=False, tied_embeddings=False,
)


def test_llama_2_7b_split():
    """Llama-2-7B: 6,738,415,616 parameters (Touvron et al. 2023; HF config meta-llama/Llama-2-7b-hf).

    Embedding part = input embedding + untied head = 2 x 32000 x 4096 = 262,144,000.
    """
    counts = param_counts(ModelSpec(**LLAMA_2_7B))
    assert counts.total == 6_738_415_616
    assert counts.embedding == 262_144_000
    assert counts.non_embedding == 6_738_415_616 - 262_144_000


def test_gpt2_split():
    """GPT-2 small: 124,439,808 parameters, 38,597,376 token + 786,432 position embeddings
    (Radford et al. 2019; nanoGPT model.py reports 123.65M without positions)."""
    counts = param_counts(ModelSpec())
    assert counts.total == 124_439_808
    assert counts.token_embedding == 50257 * 768 and counts.positions == 1024 * 768
    assert counts.total - counts.positions == 123_653_376


def test_grouped_query_attention_shrinks_kv():
    """With g kv heads, k and v are d x g x head_dim each: 4096*(4096 + 2*1024 + 4096) for g=8."""
    spec = ModelSpec(**{**LLAMA_2_7B, "n_kv_heads": 8})
    assert attention_params(spec) == 4096 * (4096 + 2 * 8 * 128 + 4096)


def test_gated_mlp_has_three_matrices():
    spec = ModelSpec(**LLAMA_2_7B)
    assert mlp_params(spec) == 3 * 4096 * 11008
    assert mlp_params(spec.with_(mlp="gelu", bias=True)) == 2 * 4096 * 11008 + 11008 + 4096


def test_encoder_has_no_output_head_without_mlm():
    enc = ModelSpec(family="encoder", n_encoder_layers=2, n_decoder_layers=0, tied_embeddings=False)
    assert param_counts(enc).output_head == 0


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(d_model=100, n_heads=12), "d_model is not divisible by the number of heads"),
        (dict(n_kv_heads=5), "n_heads is not divisible by n_kv_heads"),
        (dict(n_heads=0), "n_heads must be positive"),
        (dict(d_model=-8), "d_model must be positive"),
        (dict(vocab_size=2.5), "vocab_size must be a whole number"),
        (dict(mlp="tanh"), "unknown mlp"),
        (dict(family="decoder", n_encoder_layers=2), "a decoder model needs"),
        (dict(family="encoder-decoder", n_encoder_layers=0), "encoder-decoder model needs layers in both"),
        (dict(family="seq2seq"), "unknown model family"),
        (dict(context=10**12), "context is absurdly large"),
    ],
)
def test_bad_specs_are_user_errors(changes, needle):
    with pytest.raises(UserError, match=needle):
        ModelSpec(**changes)


def test_divisibility_error_suggests_a_divisor():
    with pytest.raises(UserError) as exc:
        ModelSpec(d_model=768, n_heads=10)
    assert "e.g. 8" in str(exc.value) or "e.g. 12" in str(exc.value)


@given(layers=st.integers(1, 64), width=st.integers(1, 64).map(lambda k: 64 * k))
def test_count_is_affine_in_layers(layers, width):
    """Each added layer adds exactly one layer's parameters (12 d^2 + 13 d for GPT-2 style)."""
    spec = ModelSpec(n_decoder_layers=layers, d_model=width, n_heads=width // 64)
    more = spec.with_(n_decoder_layers=layers + 1)
    d = width
    assert param_counts(more).total - param_counts(spec).total == 12 * d * d + 13 * d
    assert math.isclose(param_counts(spec).total, param_counts(spec).embedding + param_counts(spec).non_embedding)
