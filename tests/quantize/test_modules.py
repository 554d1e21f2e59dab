"""Drop-in modules: equal to the dequantized reference; real int8 / packed int4 in memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.quantize.modules import Int4Linear, Int8Linear, QuantizedEmbedding, int8_kernel_fits
from lmforge.quantize.primitives import int4_dequantize, int4_quantize, int8_dequantize, int8_quantize

# bf16 activations: products and sums rounded to 8 significant bits; relative to the output's scale
BF16_TOLERANCE = 2e-2


def _int8(out: int, n_in: int, bias: bool = True) -> tuple[Int8Linear, torch.Tensor]:
    w = torch.randn(out, n_in)
    q, s = int8_quantize(w)
    b = torch.randn(out).to(torch.bfloat16) if bias else None
    return Int8Linear.from_codes(q, s, b), int8_dequantize(q, s)


def _int4(out: int, n_in: int, group: int, bias: bool = True) -> tuple[Int4Linear, torch.Tensor]:
    w = torch.randn(out, n_in)
    codes, s, z = int4_quantize(w, group)
    b = torch.randn(out).to(torch.bfloat16) if bias else None
    return Int4Linear.from_codes(codes, s, z, b), int4_dequantize(codes, s, z)


def _close(y: torch.Tensor, ref: torch.Tensor, tolerance: float) -> None:
    scale = float(ref.abs().max())
    assert float((y.float() - ref).abs().max()) <= tolerance * scale, float((y.float() - ref).abs().max()) / scale


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_equals_the_dequantized_reference(bias):
    """fp32 activations: exactly F.linear with W_hat = s q (the same float operations)."""
    module, w_hat = _int8(48, 64, bias)
    x = torch.randn(2, 5, 64)
    ref = F.linear(x, w_hat, module.bias.float() if bias else None)
    assert module(x).equal(ref)


@pytest.mark.parametrize("shape", [(7, 128), (100, 48), (33, 64), (16, 136), (5, 24), (3, 130)])
def test_int8_bf16_path_matches_the_reference_on_every_shape(shape):
    """bf16 activations use torch._weight_int8pack_mm where in_features % 16 == 0; torch 2.13's
    kernel returns garbage for other widths (24, 136) or crashes (130), so those dequantize instead.
    This test fails if a torch upgrade changes what the kernel accepts."""
    out, n_in = shape
    module, w_hat = _int8(out, n_in)
    assert module.kernel == (n_in % 16 == 0) == int8_kernel_fits(out, n_in)
    x = torch.randn(3, n_in).to(torch.bfloat16)
    ref = F.linear(x.float(), w_hat, module.bias.float())
    _close(module(x), ref, BF16_TOLERANCE)


def test_int8_codes_at_an_unaligned_address_do_not_reach_the_kernel():
    """torch 2.13's int8 kernel segfaults on codes not 64-byte aligned (safetensors hands out such
    tensors; lmforge.tensorfile copies them); the module dequantizes instead."""
    module, w_hat = _int8(384, 128)
    buffer = torch.empty(384 * 128 + 56, dtype=torch.int8)
    unaligned = buffer[56:].view(384, 128)
    unaligned.copy_(module.weight_q)
    module.weight_q = unaligned
    x = torch.randn(256, 128).to(torch.bfloat16)
    _close(module(x), F.linear(x.float(), w_hat, module.bias.float()), BF16_TOLERANCE)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_linear_both_layouts_match_the_reference(group):
    """The plain layout equals the reference exactly in fp32; the CPU-kernel layout (same bytes,
    bf16 scales) within bf16 rounding; both for bf16 and fp32 callers."""
    module, w_hat = _int4(64, 256, group)
    x = torch.randn(4, 256)
    ref = F.linear(x, w_hat, module.bias.float())
    assert module(x).equal(ref)
    n_bytes = sum(b.numel() * b.element_size() for b in module.buffers())
    assert module.to_cpu_kernel_layout() and module.layout == "cpu-int4pack"
    assert sum(b.numel() * b.element_size() for b in module.buffers()) == n_bytes  # same bytes in memory
    _close(module(x.to(torch.bfloat16)), ref, BF16_TOLERANCE)
    _close(module(x), ref, BF16_TOLERANCE)


def test_int4_kernel_layout_is_refused_where_the_kernel_does_not_fit():
    module, w_hat = _int4(40, 64, 32)  # 40 output rows: the kernel needs a multiple of 16
    assert not module.to_cpu_kernel_layout() and module.layout == "plain"
    x = torch.randn(2, 64).to(torch.bfloat16)
    _close(module(x), F.linear(x.float(), w_hat, module.bias.float()), BF16_TOLERANCE)


def test_modules_hold_only_codes_and_fp16_scales():
    """In memory: int8 codes (1 byte per weight) or packed uint8 (half a byte), fp16 scales; no
    float copy of the weight is kept after a forward pass."""
    m8, _ = _int8(32, 64)
    m4, _ = _int4(32, 64, 32)
    for module in (m8, m4):
        module(torch.randn(1, 64))
        module(torch.randn(1, 64).to(torch.bfloat16))
        tensors = [t for t in vars(module).values() if isinstance(t, torch.Tensor)] + list(module.buffers())
        big_float = [t for t in tensors if t.is_floating_point() and t.numel() >= 32 * 64 // 8]
        assert big_float == [], [(t.dtype, tuple(t.shape)) for t in big_float]
    assert m8.weight_q.dtype == torch.int8 and m8.weight_q.numel() == 32 * 64
    assert m4.weight_q.dtype == torch.uint8 and m4.weight_q.numel() == 32 * 64 // 2


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("dim", [64, 96])
def test_quantized_embedding_reads_rows_of_the_dequantized_table(precision, dim):
    """A lookup equals the rows of the full dequantized table; ``weight`` is that table; the
    embedding shares the very buffers of the linear it was made from (a tied head)."""
    table, _ = _int8(50, dim, bias=False) if precision == "int8" else _int4(50, dim, 32, bias=False)
    emb = QuantizedEmbedding(table, dtype=torch.float32)
    idx = torch.tensor([[0, 49, 7], [7, 7, 1]])
    full = table.dequantized_weight(torch.float32)
    assert emb(idx).equal(full[idx])
    assert emb.weight.equal(full)
    assert emb.weight_q is table.weight_q and emb.weight_scale is table.weight_scale
