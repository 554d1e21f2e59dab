"""shape_for_params: a valid decoder shape near a parameter count."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.shapes import shape_for_params
from lmforge.plan.specs import ModelSpec, param_counts

log_params = st.floats(min_value=7.0, max_value=13.0).map(lambda e: 10.0**e)


@settings(max_examples=150, deadline=None)
@given(n=log_params, style=st.sampled_from(["llama", "gpt2"]))
def test_count_within_ten_percent_and_spec_valid(n, style):
    """Promised tolerance: total within 10% of the target from 1e7 to 1e13 parameters."""
    spec = shape_for_params(n, style=style)
    total = param_counts(spec).total
    assert abs(total / n - 1) <= 0.10
    assert isinstance(spec, ModelSpec) and spec.family == "decoder" and spec.n_encoder_layers == 0
    assert spec.vocab_size == 32000 and spec.context == 2048
    d = spec.d_model
    assert d % 64 == 0 and spec.n_heads * spec.d_head == d
    assert spec.d_head == (64 if d < 2048 else 128)
    if d >= 4096:
        assert spec.n_heads % 8 == 0  # splits evenly over 8-way tensor parallelism
    if style == "gpt2":
        assert spec.ffn == 4 * d and spec.mlp == "gelu" and spec.tied_embeddings and spec.positions == "learned"
    else:
        assert spec.mlp == "swiglu" and not spec.bias and not spec.tied_embeddings and spec.positions == "rotary"
        assert 8 * d / 3 <= spec.ffn < 8 * d / 3 + 256 and spec.ffn % 64 == 0


@settings(max_examples=60, deadline=None)
@given(n=st.floats(min_value=9.0, max_value=13.0).map(lambda e: 10.0**e), style=st.sampled_from(["llama", "gpt2"]))
def test_large_models_have_a_sensible_aspect_ratio(n, style):
    """Kaplan et al. 2020, Fig. 5: d_model / n_layer between ~20 and ~200 costs little;
    published large models sit near 64-128 (GPT-3 Table 2.1, Chinchilla Table 4)."""
    spec = shape_for_params(n, style=style)
    assert 40 <= spec.d_model / spec.n_decoder_layers <= 200
    assert abs(param_counts(spec).total / n - 1) <= 0.05


@pytest.mark.parametrize("n, low, high", [(7e9, 3072, 5120), (70e9, 7168, 10240), (175e9, 10240, 14336)])
def test_shapes_near_published_models(n, low, high):
    """Widths near Llama-2-7B (4096), Chinchilla 70B (8192) and GPT-3 175B (12288)."""
    assert low <= shape_for_params(n).d_model <= high


def test_bigger_target_bigger_model():
    totals = [param_counts(shape_for_params(10.0**e)).total for e in range(7, 14)]
    assert totals == sorted(totals)


def test_other_vocab_and_context():
    spec = shape_for_params(1e9, style="gpt2", vocab_size=50257, context=1024)
    assert spec.vocab_size == 50257 and spec.context == 1024
    assert abs(param_counts(spec).total / 1e9 - 1) <= 0.05


@pytest.mark.parametrize("bad", [0, -1e9, math.nan, math.inf, 1e16, "7B", None])
def test_bad_counts_are_user_errors(bad):
    with pytest.raises(UserError):
        shape_for_params(bad)


def test_bad_style_suggests():
    with pytest.raises(UserError, match="unknown model style") as exc:
        shape_for_params(1e9, style="lama")
    assert "llama" in str(exc.value)


@pytest.mark.parametrize("field, bad", [("vocab_size", 0), ("vocab_size", 2.5), ("context", -1), ("context", True)])
def test_bad_sizes_are_user_errors(field, bad):
    with pytest.raises(UserError, match=field):
        shape_for_params(1e9, **{field: bad})


def test_too_small_for_the_vocabulary():
    """1M parameters cannot hold a 128k x 64 embedding (8.2M)."""
    with pytest.raises(UserError, match="too small for this vocabulary"):
        shape_for_params(1e6, vocab_size=128256)
