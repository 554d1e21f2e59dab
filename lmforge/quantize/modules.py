"""Drop-in quantized modules: `Int8Linear`, `Int4Linear` and `QuantizedEmbedding`.

They hold the real int8 codes / packed int4 codes and fp16 scales (the formats of
`lmforge.quantize.primitives`) as buffers, and no dequantized copy between calls:

- with bf16 activations on a CPU (and, for `Int8Linear`, fp32 activations when
  ``fp32_kernel_dtype`` is set: `lmforge.quantize.paths` sets it where that is the
  fastest path on this machine) they call PyTorch's fused weight-only kernels,
  ``torch._weight_int8pack_mm`` (int8 codes, one scale per output channel) and
  ``torch._weight_int4pack_mm_for_cpu`` (int4 codes in PyTorch's blocked layout, bf16
  scale and zero per group): the kernels gpt-fast and torchao's CPU layouts call;
- otherwise (fp32 or fp16 activations, a GPU, or a shape the kernels refuse) they
  dequantize the weight for the call and use ``F.linear``; the copy is freed after.

`Int4Linear` holds its codes in one of two layouts with the same bytes:
``"plain"`` (the file's: two codes per byte over the whole tensor, fp16 scale and zero
per group; any activation dtype) and ``"cpu-int4pack"`` (made at load time for the bf16
CPU kernel: ``torch._convert_weight_to_int4pack_for_cpu``'s blocked layout and one bf16
(scale, zero + 8 scale) pair per group, since the kernel computes (q - 8) s + z').
Only the plain layout is written to disk.

A token embedding quantized with its tied output head (GPT-2) shares one set of buffers
with the head's `Int8Linear` / `Int4Linear` (plain layout, so rows can be looked up).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.quantize.primitives import (
    int4_dequantize,
    int8_dequantize,
    pack_int4,
    unpack_int4,
    unpack_int4_rows,
)

INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # group sizes torch._weight_int4pack_mm_for_cpu accepts
KERNEL_ALIGNMENT = 64  # bytes: the int8 kernel crashes on codes at other offsets (torch 2.13, AVX-512)
_HAS_INT8_KERNEL = hasattr(torch, "_weight_int8pack_mm")
_HAS_INT4_KERNEL = hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(
    torch, "_convert_weight_to_int4pack_for_cpu"
)


def int8_kernel_fits(out_features: int, in_features: int) -> bool:
    """Shapes ``torch._weight_int8pack_mm`` computes correctly (in_features a multiple of 16;
    other widths give wrong results or crash in torch 2.13, see tests/quantize/test_modules.py)."""
    return _HAS_INT8_KERNEL and in_features % 16 == 0 and out_features >= 1


def int4_kernel_fits(out_features: int, in_features: int, group_size: int) -> bool:
    """Shapes the CPU int4 kernel takes: out_features % 16 == 0, a supported group size."""
    return (_HAS_INT4_KERNEL and out_features % 16 == 0 and group_size in INT4_KERNEL_GROUPS
            and in_features % group_size == 0)


class Int8Linear(nn.Module):
    """``y = x (s * q)^T + b`` with int8 codes q (out, in), fp16 scales s (out,) and a 16-bit bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 bias_dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_q", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=torch.float16, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None)
        self.kernel = int8_kernel_fits(out_features, in_features)
        self.fp32_kernel_dtype: torch.dtype | None = None  # fp32 callers: None dequantizes (exact)

    @classmethod
    def from_codes(cls, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> Int8Linear:
        """Wrap int8 codes (out, in), fp16 scales (out,) and a bias (kept in its dtype)."""
        out, n_in = q.shape
        module = cls(n_in, out, bias is not None, bias_dtype=bias.dtype if bias is not None else torch.bfloat16,
                     device="meta")
        module.weight_q, module.weight_scale = q, scale
        module.bias = bias.detach() if bias is not None else None
        return module

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return int8_dequantize(self.weight_q, self.weight_scale, dtype)  # (out, in)

    def _kernel_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype to call the kernel in for ``x``, or None to dequantize."""
        if not self.kernel or x.device.type != "cpu" or self.weight_q.data_ptr() % KERNEL_ALIGNMENT:
            return None
        if x.dtype == torch.bfloat16:
            return x.dtype
        return self.fp32_kernel_dtype if x.dtype == torch.float32 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        kernel_dtype = self._kernel_dtype(x)
        if kernel_dtype is not None:
            flat = x.reshape(-1, self.in_features).to(kernel_dtype).contiguous()  # (M, in)
            y = torch._weight_int8pack_mm(flat, self.weight_q, self.weight_scale.to(kernel_dtype))
            y = y.view(*x.shape[:-1], self.out_features).to(x.dtype)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        bias = self.bias.to(dtype) if self.bias is not None else None
        return F.linear(x, self.dequantized_weight(dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(nn.Module):
    """``y = x W_hat^T + b`` with W_hat = s q + z per group of ``group_size`` input features."""

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool = True, *,
                 bias_dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.layout = "plain"
        groups = in_features // group_size
        n_bytes = (out_features * in_features + 1) // 2
        self.register_buffer("weight_q", torch.empty(n_bytes, dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, groups, dtype=torch.float16, device=device))
        self.register_buffer("weight_zero", torch.empty(out_features, groups, dtype=torch.float16, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   bias: torch.Tensor | None) -> Int4Linear:
        """Pack codes (out, in) in [0, 15] with fp16 scales and zeros (out, G) and a bias."""
        out, n_in = codes.shape
        module = cls(n_in, out, n_in // scale.shape[1], bias is not None,
                     bias_dtype=bias.dtype if bias is not None else torch.bfloat16, device="meta")
        module.weight_q, module.weight_scale, module.weight_zero = pack_int4(codes), scale, zero
        module.bias = bias.detach() if bias is not None else None
        return module

    def codes(self) -> torch.Tensor:
        """The int4 codes (out, in) uint8 (plain layout only)."""
        self._need_plain()
        return unpack_int4(self.weight_q, self.out_features * self.in_features).view(
            self.out_features, self.in_features)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return int4_dequantize(self.codes(), self.weight_scale, self.weight_zero, dtype)  # (out, in)

    def to_cpu_kernel_layout(self) -> bool:
        """Re-lay the codes for the bf16 CPU kernel (same bytes); False where it does not fit."""
        if self.layout != "plain" or not int4_kernel_fits(self.out_features, self.in_features, self.group_size):
            return False
        codes = self.codes().to(torch.int32)  # (out, in): a transient 4-byte copy while converting
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)  # (out, in/2) uint8, blocked
        scale = self.weight_scale.float()
        # the kernel computes (q - 8) s + z'; the file's W = q s + z, so z' = z + 8 s
        pair = torch.stack([scale, self.weight_zero.float() + 8 * scale], dim=-1)  # (out, G, 2)
        self.weight_q = packed
        self.weight_scale = pair.transpose(0, 1).contiguous().to(torch.bfloat16)  # (G, out, 2)
        self.weight_zero = None
        self.layout = "cpu-int4pack"
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self.layout == "cpu-int4pack":  # the kernel takes bf16 activations only
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (M, in)
            y = torch._weight_int4pack_mm_for_cpu(flat, self.weight_q, self.group_size, self.weight_scale)
            y = y.view(*x.shape[:-1], self.out_features)
            y = y if self.bias is None else y + self.bias.to(y.dtype)
            return y.to(x.dtype) if x.is_floating_point() else y
        dtype = x.dtype if x.is_floating_point() else torch.float32
        bias = self.bias.to(dtype) if self.bias is not None else None
        return F.linear(x, self.dequantized_weight(dtype), bias)

    def _need_plain(self) -> None:
        if self.layout != "plain":
            raise RuntimeError("this Int4Linear holds the CPU kernel layout; its codes are not in the file's layout")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"bias={self.bias is not None}, layout={self.layout}")


class QuantizedEmbedding(nn.Module):
    """A token embedding (num_embeddings, dim) held as int8 rows or int4 groups; a lookup
    dequantizes only the rows it reads, into ``dtype``.

    ``weight`` (a property) dequantizes the whole table: for code that reads
    ``embedding.weight`` (an output projection tied to it, a dtype check).
    """

    def __init__(self, linear: Int8Linear | Int4Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if isinstance(linear, Int4Linear):
            linear._need_plain()
        self.precision = "int8" if isinstance(linear, Int8Linear) else "int4"
        self.num_embeddings, self.embedding_dim = linear.out_features, linear.in_features
        self.group_size = getattr(linear, "group_size", None)
        self.dtype = dtype
        # the very tensors of ``linear``: shared with a tied output head
        self.register_buffer("weight_q", linear.weight_q)
        self.register_buffer("weight_scale", linear.weight_scale)
        self.register_buffer("weight_zero", linear.weight_zero if self.precision == "int4" else None)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (...,) ids -> (..., dim)
        if self.precision == "int8":
            rows = self.weight_q[idx].to(self.dtype)  # (..., dim)
            return rows * self.weight_scale[idx].to(self.dtype)[..., None]
        codes = unpack_int4_rows(self.weight_q, idx, self.embedding_dim).to(self.dtype)  # (..., dim)
        groups = codes.view(*idx.shape, -1, self.group_size)  # (..., G, g)
        scale = self.weight_scale[idx].to(self.dtype)[..., None]  # (..., G, 1)
        zero = self.weight_zero[idx].to(self.dtype)[..., None]
        return (groups * scale + zero).view(*idx.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        if self.precision == "int8":
            return int8_dequantize(self.weight_q, self.weight_scale, self.dtype)
        codes = unpack_int4(self.weight_q, self.num_embeddings * self.embedding_dim)
        return int4_dequantize(codes.view(self.num_embeddings, -1), self.weight_scale, self.weight_zero, self.dtype)

    def extra_repr(self) -> str:
        extra = f", group_size={self.group_size}" if self.group_size else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, precision={self.precision}{extra}, dtype={self.dtype}"
