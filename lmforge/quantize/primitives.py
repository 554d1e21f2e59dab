"""Tensor primitives: weight-only int8 and int4 quantization, int4 packing, fake quantization.

The formats are those ``lmforge.plan.storage.weight_bytes`` counts, byte for byte. A
weight matrix W is (out_features, in_features), as ``nn.Linear.weight`` holds it:

- int8, symmetric, per output channel (Jacob et al. 2018, Sec. 2.1 with zero point 0;
  Dettmers et al. 2022, LLM.int8(), Sec. 3.1 "vector-wise"): q = round(W / s) in
  [-127, 127], one fp16 scale s per row; W ~ s q.
- int4, asymmetric, group-wise (Frantar et al. 2022, GPTQ, Sec. 4 "grouping"; Lin et al.
  2023, AWQ): each row is cut into groups of ``group_size`` consecutive input features;
  per group an fp16 scale s and an fp16 zero z, the value code 0 stands for (the group's
  lower end), and codes q in [0, 15]: W ~ s q + z. This is the "float zero-point domain"
  of HQQ (Badri & Shaji 2023) and torchao (``ZeroPointDomain.FLOAT``); the integer zero
  point of Jacob et al. is -z / s.

Scales are rounded to fp16 *outwards* (the scale up, the lower end down), so that every
value inside the quantization range maps to a code without clipping and the error of
quantize -> dequantize is at most half a step, |W - W_hat| <= s / 2 per element (the
bound the tests check). ``scale_method="mse"`` instead searches a clipping ratio per row
(int8) or per group (int4) that minimises the squared error, optionally weighted per
input feature by the mean squared activation E[x_j^2] of calibration text: the diagonal
of the proxy Hessian X^T X of GPTQ (Frantar et al. 2022, Eq. 1-2) and the MSE range
setting of Nagel et al. 2021 ("A White Paper on Neural Network Quantization", Sec. 3.4.1).
Clipped values then err by more than half a step; the total error is smaller.

int4 codes are packed two per byte over the whole flattened tensor, row-major: element
2i in the low nibble, element 2i+1 in the high nibble of byte i (a last odd element
leaves the high nibble 0): ceil(out * in / 2) bytes.

Fake quantization (quantization-aware training) returns W_hat in the forward pass and
passes the gradient straight through to W (Bengio et al. 2013, "straight-through
estimator"; Jacob et al. 2018, Sec. 3).
"""

from __future__ import annotations

import torch

from lmforge.errors import UserError

INT8_MAX = 127  # symmetric: -127..127 (the code -128 is left unused so that the grid is symmetric)
INT4_LEVELS = 15  # codes 0..15
SCALE_METHODS = ("absmax", "mse")
MSE_GRID = 40  # clipping ratios tried by the MSE search, evenly spaced in [MSE_LOWEST, 1]
MSE_LOWEST = 0.5
_F16 = torch.float16
_F16_MAX = torch.finfo(_F16).max


# ---- fp16 rounding with a direction ------------------------------------------------------


def _check_finite(w: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(w.detach()).all()):
        raise UserError(f"{name} holds NaN or infinite values", None, "quantize a model with finite weights")
    if w.numel() and float(w.detach().abs().max()) > _F16_MAX:
        raise UserError(f"{name} holds values beyond fp16's range", float(w.abs().max()),
                        "the fp16 scales of this format cannot hold them; keep this model at bf16")


def fp16_up(x: torch.Tensor) -> torch.Tensor:
    """The smallest fp16 value >= ``x`` (fp32 in, fp16 out)."""
    h = x.to(_F16)
    return torch.where(h.float() < x, torch.nextafter(h, torch.full_like(h, float("inf"))), h)


def fp16_down(x: torch.Tensor) -> torch.Tensor:
    """The largest fp16 value <= ``x``."""
    h = x.to(_F16)
    return torch.where(h.float() > x, torch.nextafter(h, torch.full_like(h, float("-inf"))), h)


# ---- int8, symmetric per output channel ---------------------------------------------------


def int8_from_absmax(w: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (out, in) int8 and fp16 scales (out,) for rows clipped at ``absmax`` (out,)."""
    scale = fp16_up(absmax.float() / INT8_MAX)  # (out,)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero row
    q = torch.round(w.float() / scale.float()[:, None]).clamp_(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scale


def int8_dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W_hat = s q: (out, in) int8 and (out,) scales -> (out, in) in ``dtype``."""
    return q.to(dtype) * scale.to(dtype)[:, None]


def int8_quantize(
    w: torch.Tensor, scale_method: str = "absmax", importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (out, in) weight to int8 codes (out, in) and fp16 scales (out,).

    ``importance`` (in,): per-input-feature weights of the squared error in the MSE
    search (mean squared activations); None weighs every feature alike.
    """
    _check_2d(w)
    _check_finite(w, "the weight")
    check_scale_method(scale_method)
    w = w.detach().float()
    absmax = w.abs().amax(dim=1)  # (out,)
    if scale_method == "absmax":
        return int8_from_absmax(w, absmax)
    best_err = torch.full_like(absmax, float("inf"))
    best_absmax = absmax.clone()
    weights = _importance(importance, w.shape[1])
    for ratio in _ratios():
        q, scale = int8_from_absmax(w, absmax * ratio)
        err = ((int8_dequantize(q, scale) - w).square() * weights).sum(dim=1)  # (out,)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_absmax = torch.where(better, absmax * ratio, best_absmax)
    return int8_from_absmax(w, best_absmax)


# ---- int4, asymmetric group-wise ----------------------------------------------------------


def check_group_size(group_size: int, in_features: int, where: str = "the weight") -> int:
    """``group_size`` if it is a whole number dividing ``in_features``; else a UserError."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise UserError("group size must be a positive whole number", group_size, "pass e.g. --group-size 32")
    if in_features % group_size:
        raise UserError(
            f"group size does not divide the input features of {where}",
            f"group_size={group_size}, in_features={in_features}",
            "pick a group size that divides every layer's input width (e.g. 32)",
        )
    return group_size


def int4_from_range(
    w: torch.Tensor, low: torch.Tensor, high: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (out, in) uint8 in [0, 15], fp16 scales and zeros (out, G) for groups clipped
    to [low, high] (each (out, G))."""
    out, n_in = w.shape
    groups = w.float().view(out, n_in // group_size, group_size)  # (out, G, g)
    zero = fp16_down(low)  # (out, G): the value code 0 stands for
    scale = fp16_up((high - zero.float()).clamp_min(0) / INT4_LEVELS)  # (out, G)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # a constant group: code 0 is exact
    q = torch.round((groups - zero.float()[..., None]) / scale.float()[..., None]).clamp_(0, INT4_LEVELS)
    return q.to(torch.uint8).view(out, n_in), scale, zero


def int4_dequantize(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """W_hat = s q + z: codes (out, in) and per-group scales/zeros (out, G) -> (out, in) in ``dtype``."""
    out, n_in = codes.shape
    groups = scale.shape[1]
    q = codes.to(dtype).view(out, groups, n_in // groups)  # (out, G, g)
    return (q * scale.to(dtype)[..., None] + zero.to(dtype)[..., None]).view(out, n_in)


def int4_quantize(
    w: torch.Tensor, group_size: int, scale_method: str = "absmax", importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize a (out, in) weight to int4 codes (out, in) uint8 and fp16 scales and zeros (out, G).

    ``absmax``: each group's range is its [min, max]; ``mse``: both ends shrunk by the
    ratio (per group) that minimises the (importance-weighted) squared error.
    """
    _check_2d(w)
    _check_finite(w, "the weight")
    check_scale_method(scale_method)
    out, n_in = w.shape
    check_group_size(group_size, n_in)
    w = w.detach().float()
    groups = w.view(out, n_in // group_size, group_size)  # (out, G, g)
    low, high = groups.amin(dim=2), groups.amax(dim=2)  # (out, G)
    if scale_method == "absmax":
        return int4_from_range(w, low, high, group_size)
    weights = _importance(importance, n_in).view(1, n_in // group_size, group_size)
    best_err = torch.full_like(low, float("inf"))
    best_ratio = torch.ones_like(low)
    for ratio in _ratios():
        codes, scale, zero = int4_from_range(w, low * ratio, high * ratio, group_size)
        diff = int4_dequantize(codes, scale, zero).view_as(groups) - groups
        err = (diff.square() * weights).sum(dim=2)  # (out, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(low, ratio), best_ratio)
    return int4_from_range(w, low * best_ratio, high * best_ratio, group_size)


# ---- int4 packing -------------------------------------------------------------------------


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes in [0, 15] (any shape) -> uint8 (ceil(n / 2),): element 2i low nibble, 2i+1 high."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)  # (n/2, 2)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_int4`: uint8 (ceil(numel / 2),) -> codes uint8 (numel,)."""
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 1) // 2:
        raise ValueError(f"packed int4 data must be uint8 ({(numel + 1) // 2},), got {packed.dtype} "
                         f"{tuple(packed.shape)}")
    both = torch.stack([packed & 0xF, packed >> 4], dim=1)  # (n/2, 2)
    return both.reshape(-1)[:numel]


def unpack_int4_rows(packed: torch.Tensor, rows: torch.Tensor, in_features: int) -> torch.Tensor:
    """Codes of the given rows of a packed (out, in) tensor: ``rows`` (...,) -> (..., in) uint8,
    reading only their bytes (an embedding lookup)."""
    pos = rows.long()[..., None] * in_features + torch.arange(in_features, device=packed.device)  # (..., in)
    byte = packed[pos // 2]
    return (byte >> ((pos % 2) * 4).to(torch.uint8)) & 0xF


# ---- fake quantization (QAT) --------------------------------------------------------------


def fake_quantize(w: torch.Tensor, precision: str, group_size: int = 32) -> torch.Tensor:
    """W_hat (same shape and dtype as ``w``) in the forward pass; gradient straight through to ``w``.

    Uses the absmax scales of ``int8_quantize`` / ``int4_quantize``, so that quantizing the
    trained weights afterwards gives exactly the W_hat the training saw. Scales are
    computed without gradient (Jacob et al. 2018, Sec. 3: ranges are statistics, not
    learned).
    """
    with torch.no_grad():
        w32 = w.detach().float()
        if precision == "int8":
            w_hat = int8_dequantize(*int8_from_absmax(w32, w32.abs().amax(dim=1)))
        elif precision == "int4":
            groups = w32.view(w32.shape[0], -1, group_size)  # (out, G, g)
            w_hat = int4_dequantize(*int4_from_range(w32, groups.amin(dim=2), groups.amax(dim=2), group_size))
        else:
            raise UserError("unknown fake-quantization precision", precision, "choose int8 or int4")
    return _StraightThrough.apply(w, w_hat.to(w.dtype))


class _StraightThrough(torch.autograd.Function):
    """Forward: ``w_hat`` exactly (not w + (w_hat - w), which can differ in the last bit);
    backward: the gradient goes to ``w`` unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
        return w_hat

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


# ---- helpers ------------------------------------------------------------------------------


def check_scale_method(method: str) -> str:
    if method not in SCALE_METHODS:
        raise UserError("unknown scale method", method, "choose one of " + ", ".join(SCALE_METHODS))
    return method


def _check_2d(w: torch.Tensor) -> None:
    if w.dim() != 2:
        raise ValueError(f"a weight matrix (out_features, in_features) is needed, got shape {tuple(w.shape)}")


def _ratios() -> list[float]:
    step = (1 - MSE_LOWEST) / (MSE_GRID - 1)
    return [1 - i * step for i in range(MSE_GRID)]


def _importance(importance: torch.Tensor | None, n_in: int) -> torch.Tensor:
    """(in,) non-negative weights, mean 1; ones when None or all zero."""
    if importance is None:
        return torch.ones(n_in)
    imp = importance.detach().float().reshape(-1)
    if imp.numel() != n_in:
        raise ValueError(f"importance has {imp.numel()} entries for {n_in} input features")
    mean = imp.clamp_min(0).mean()
    return imp.clamp_min(0) / mean if mean > 0 else torch.ones(n_in)
