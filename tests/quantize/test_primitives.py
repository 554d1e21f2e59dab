"""Primitives: quantize -> dequantize within half a step per element, exact int4 packing, STE."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.quantize.primitives import (
    fake_quantize,
    int4_dequantize,
    int4_quantize,
    int8_dequantize,
    int8_quantize,
    pack_int4,
    unpack_int4,
    unpack_int4_rows,
)

# float32 arithmetic in W_hat = s q + z adds at most a few ulps on top of the half step
SLACK = 1e-6


def _weights(seed: int, out: int, n_in: int, spread: float) -> torch.Tensor:
    """Gaussian rows with row scales over ``spread`` decades (outlier channels) and a few spikes."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_in, generator=g) * torch.logspace(-spread, 0, out)[:, None]
    w[0, 0] = 8.0  # an outlier
    return w


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), out=st.integers(1, 40), n_in=st.integers(1, 70), spread=st.floats(0, 4))
def test_int8_error_is_at_most_half_a_step_per_channel(seed, out, n_in, spread):
    """|W - s q| <= s/2 for every element of every row (rounding to the nearest of a grid of
    step s that covers [-absmax, absmax]); codes stay in [-127, 127]; scales are fp16."""
    w = _weights(seed, out, n_in, spread)
    q, s = int8_quantize(w)
    assert q.dtype == torch.int8 and s.dtype == torch.float16 and s.shape == (out,)
    assert int(q.abs().max()) <= 127
    err = (int8_dequantize(q, s) - w).abs()
    bound = s.float()[:, None] / 2
    assert bool((err <= bound * (1 + SLACK) + 1e-30).all()), float((err - bound).max())
    # the scale is the smallest fp16 step covering the row: the largest code is 127 or next to it
    big = w.abs().amax(1) > 1e-3
    assert bool((q.abs().amax(1)[big] >= 126).all())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), out=st.integers(1, 24), groups=st.integers(1, 5),
       group_size=st.sampled_from([2, 8, 32]), spread=st.floats(0, 4), shift=st.floats(-3, 3))
def test_int4_error_is_at_most_half_a_step_per_group(seed, out, groups, group_size, spread, shift):
    """|W - (s q + z)| <= s/2 per group, codes in [0, 15], one fp16 scale and zero per group;
    groups that do not straddle zero (``shift``) are covered too (the asymmetric range)."""
    w = _weights(seed, out, groups * group_size, spread) + shift
    codes, s, z = int4_quantize(w, group_size)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert s.shape == z.shape == (out, groups) and s.dtype == z.dtype == torch.float16
    err = (int4_dequantize(codes, s, z) - w).abs().view(out, groups, group_size)
    bound = s.float()[..., None] / 2
    assert bool((err <= bound * (1 + SLACK) + 1e-6 * w.abs().max()).all()), float((err - bound).max())


def test_int4_uses_the_whole_range_of_a_group():
    """The lowest value of a group decodes from code 0 and the highest from code 15 (asymmetric, min-max)."""
    w = torch.tensor([[0.1, 0.2, 0.35, 0.9, -0.5, -0.4, 0.0, 0.05]])
    codes, s, z = int4_quantize(w, 4)
    assert codes[0, :4].tolist()[0] == 0 and codes[0, 3] == 15
    assert codes[0, 4] == 0 and codes[0, 7] == 15


def test_edge_rows_zero_constant_and_tiny():
    """All-zero rows come back exactly, and int4 constant groups too (code 0 is the group's value);
    subnormal values stay within half a step."""
    w = torch.zeros(3, 8)
    w[1] = 0.375  # exactly representable in fp16
    w[2] = torch.linspace(-1e-7, 1e-7, 8)
    q, s = int8_quantize(w)
    assert int8_dequantize(q, s)[0].equal(w[0])
    assert bool(((int8_dequantize(q, s) - w).abs() <= s.float()[:, None] / 2 + 1e-12).all())
    codes, s4, z4 = int4_quantize(w, 4)
    assert int4_dequantize(codes, s4, z4)[:2].equal(w[:2])


def test_mse_scales_never_lose_to_absmax():
    """The MSE search includes the absmax range (ratio 1), so its (weighted) squared error per
    row or group is never larger; on heavy-tailed int4 groups clipping pays (for int8 the step
    is so fine that clipping an outlier rarely does)."""
    g = torch.Generator().manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((32, 64))  # heavy tails: clipping pays
    importance = torch.rand(64, generator=g) * 3
    for imp in (None, importance):
        weights = torch.ones(64) if imp is None else imp / imp.mean()
        q_a, s_a = int8_quantize(w)
        q_m, s_m = int8_quantize(w, "mse", imp)
        err_a = ((int8_dequantize(q_a, s_a) - w).square() * weights).sum(1)
        err_m = ((int8_dequantize(q_m, s_m) - w).square() * weights).sum(1)
        assert bool((err_m <= err_a * (1 + 1e-5)).all())
        c_a, sa, za = int4_quantize(w, 32)
        c_m, sm, zm = int4_quantize(w, 32, "mse", imp)
        e4_a = ((int4_dequantize(c_a, sa, za) - w).square() * weights).view(32, 2, 32).sum(2)
        e4_m = ((int4_dequantize(c_m, sm, zm) - w).square() * weights).view(32, 2, 32).sum(2)
        assert bool((e4_m <= e4_a * (1 + 1e-5)).all())
        assert float(e4_m.sum()) < 0.99 * float(e4_a.sum())


def test_pack_int4_golden_layout():
    """Element 2i in the low nibble, 2i+1 in the high nibble; an odd tail leaves the high nibble 0
    (the layout lmforge.plan.storage.weight_bytes counts: ceil(n / 2) bytes)."""
    packed = pack_int4(torch.tensor([1, 2, 3], dtype=torch.uint8))
    assert packed.tolist() == [0x21, 0x03]
    assert pack_int4(torch.tensor([[15, 0], [7, 9]], dtype=torch.uint8)).tolist() == [0x0F, 0x97]


@settings(max_examples=50, deadline=None)
@given(codes=st.lists(st.integers(0, 15), min_size=0, max_size=300))
def test_pack_unpack_round_trip_is_exact(codes):
    t = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_int4(t)
    assert packed.dtype == torch.uint8 and packed.numel() == (len(codes) + 1) // 2
    assert unpack_int4(packed, len(codes)).equal(t)


@pytest.mark.parametrize("n_in", [6, 7])
def test_unpack_rows_reads_the_same_codes(n_in):
    """Row lookups (embeddings) read the same codes as a full unpack, odd widths included."""
    codes = torch.randint(0, 16, (9, n_in), dtype=torch.uint8)
    packed = pack_int4(codes)
    rows = torch.tensor([[8, 0], [3, 3]])
    assert unpack_int4_rows(packed, rows, n_in).equal(codes[rows])


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_fake_quant_forward_is_the_quantized_weight_and_gradient_passes_straight(precision):
    """Forward: exactly dequantize(quantize(W)) with absmax scales (what lmforge quantize writes);
    backward: dL/dW = dL/dW_hat (straight-through estimator, Bengio et al. 2013)."""
    w = torch.randn(16, 64, requires_grad=True)
    w_hat = fake_quantize(w, precision, 32)
    if precision == "int8":
        expected = int8_dequantize(*int8_quantize(w.detach()))
    else:
        expected = int4_dequantize(*int4_quantize(w.detach(), 32))
    assert w_hat.detach().equal(expected)
    upstream = torch.randn(16, 64)
    w_hat.backward(upstream)
    assert w.grad.equal(upstream)


def test_bad_inputs_are_user_errors():
    w = torch.randn(4, 48)
    with pytest.raises(UserError, match="does not divide"):
        int4_quantize(w, 32)
    with pytest.raises(UserError, match="scale method"):
        int8_quantize(w, "minmax")
    bad = w.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        int8_quantize(bad)
    with pytest.raises(UserError, match="fp16"):
        int4_quantize(w * 1e6, 16)
