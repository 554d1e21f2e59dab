"""A runnable decoder shape for a parameter count (e.g. the planner's N_opt).

Kaplan et al. (2020, Sec. 3.1 and Fig. 5) find the loss depends only weakly on the
shape at fixed non-embedding N: aspect ratios d_model / n_layer from about 20 to 200
cost only a few percent. Published models sit near 64 (GPT-3 125M, 768/12) to 128
(GPT-3 175B 12288/96, Llama-2-7B 4096/32; Chinchilla 70B 8192/80 = 102, Hoffmann et al.
2022, Table 4). We aim at a ratio rising log-linearly from 64 at 100M to 128 at 10B
parameters, with d_model a multiple of 64 (of 256 from 1024, of 1024 from 4096, so that
heads split evenly for tensor parallelism), head_dim 64 below d_model 2048 and 128 from
there (under 1e7 parameters also d_model 32, 48 and multiples of 32, and heads of 16 or 32 below d_model 512), and:

- ``style="llama"``: SwiGLU with d_ff = 8/3 d_model rounded up to a multiple of 256
  (64 below d_model 1024), RMSNorm, rotary, no biases, untied head (Touvron et al.
  2023a, Sec. 2.2), multi-head attention;
- ``style="gpt2"``: GELU with d_ff = 4 d_model, LayerNorm, learned positions, biases,
  tied embeddings (Radford et al. 2019).
"""

from __future__ import annotations

import math

from lmforge.errors import UserError, check_positive, check_whole, unknown_name
from lmforge.plan.specs import ModelSpec, layer_params, param_counts
from lmforge.plan.units import format_count

STYLES: tuple[str, ...] = ("llama", "gpt2")
TOLERANCE = 0.10  # promised relative error of the total count for n_params >= 1e7
_TARGET_ERROR = 0.05  # shapes within this are preferred; among them the best aspect ratio
_SMALL_TARGET_ERROR = 0.25  # under 1e7 parameters the aspect ratio matters more than the exact count
_MIN_LAYERS = 4  # shallower shapes only when no deeper one fits


def shape_for_params(
    n_params: float, *, style: str = "llama", vocab_size: int = 32000, context: int = 2048
) -> ModelSpec:
    """A decoder `ModelSpec` whose total parameter count is near ``n_params``.

    The total (embeddings included) is within 10% of ``n_params`` for n_params >= 1e7
    at the default vocabulary (within 4% on a fine sweep of 1e7..1e13 for both styles). Every d_model on the grid (see
    the module docstring) gets the number of layers that best fits the count; among the
    shapes within 5% with at least 4 layers we take the one whose d_model / n_layer is
    nearest the target ratio (Kaplan et al. 2020, Sec. 3.1, Fig. 5). Small targets are
    embedding-dominated and get narrow ratios. Raises UserError when even the narrowest
    one-layer shape has more parameters than asked for (vocabulary too large for it).
    """
    check_positive("parameter count", n_params, upper=1e15)
    if style not in STYLES:
        raise unknown_name("model style", str(style), STYLES)
    check_whole("vocab_size", vocab_size, upper=10**8)
    check_whole("context", context, upper=10**8)

    target_ratio = _target_ratio(n_params)
    small = n_params < 1e7
    tolerance = _SMALL_TARGET_ERROR if small else _TARGET_ERROR
    min_layers = 2 if small else _MIN_LAYERS
    best: tuple[tuple, int, int] | None = None
    for d_model in _widths(n_params):
        one = _spec(style, d_model, 1, vocab_size, context, small=small)
        base = param_counts(one).total
        per_layer = layer_params(one)
        n_layers = max(1, round((n_params - base) / per_layer) + 1)
        if n_layers > 10_000:
            continue
        total = base + (n_layers - 1) * per_layer
        error = abs(total / n_params - 1)
        ratio_miss = abs(math.log(d_model / n_layers / target_ratio))
        key = (error > tolerance, n_layers < min_layers, ratio_miss if error <= tolerance else error)
        if best is None or key < best[0]:
            best = (key, d_model, n_layers)
        if base > n_params * (1 + tolerance):
            break  # wider shapes only overshoot more
    assert best is not None
    _, d_model, n_layers = best
    spec = _spec(style, d_model, n_layers, vocab_size, context, name=f"{style}-{format_count(n_params)}", small=small)
    total = param_counts(spec).total
    if total > n_params * (1 + TOLERANCE) and n_layers == 1:
        raise UserError(
            "parameter count too small for this vocabulary",
            f"{format_count(n_params)} asked, the narrowest shape has {format_count(total)}",
            f"ask for more parameters or a smaller vocabulary than {vocab_size}",
        )
    return spec


def _target_ratio(n_params: float) -> float:
    """d_model / n_layer: 16 up to 1e5 parameters, 64 from 1e7 to 1e8, 128 from 1e10,
    log-linear between. Below 1e7 narrower ratios keep a few layers: nanoGPT's CPU recipe is
    4 x 128 (ratio 32) at 0.8M parameters."""
    if n_params < 1e7:
        t = min(1.0, max(0.0, (math.log10(n_params) - 5.0) / 2.0))
        return 16.0 * 4.0**t
    t = min(1.0, max(0.0, (math.log10(n_params) - 8.0) / 2.0))
    return 64.0 * 2.0**t


def _widths(n_params: float) -> list[int]:
    """Candidate d_model: 32, 48 and odd multiples of 32 below 512 for models under 1e7
    parameters, multiples of 64 below
    1024, of 256 below 4096, of 1024 above (so the heads split evenly 4 or 8 ways for
    tensor parallelism), up to the width a ratio of 512 would give (N ~ 12 L d^2, so
    d ~ (512 N / 12)^(1/3))."""
    top = max(512.0, (512.0 * n_params / 12.0) ** (1.0 / 3.0))
    small = [32, 48] + list(range(96, 512, 64)) if n_params < 1e7 else []  # and multiples of 32 to 480
    widths = sorted(small + list(range(64, 1024, 64))) + list(range(1024, 4096, 256))
    widths += list(range(4096, int(top) + 1024, 1024))
    return [w for w in widths if w <= top + 1024]


def _head_dim(d_model: int, small: bool) -> int:
    """64 below d_model 2048, 128 from there; models under 1e7 parameters (``small``) use
    16 below d_model 64 and 32 below 512 (nanoGPT's CPU recipe: 128 wide, 4 heads of 32)."""
    if small and d_model < 512:
        return 16 if d_model < 64 else 32
    return 64 if d_model < 2048 else 128


def _spec(style: str, d_model: int, n_layers: int, vocab_size: int, context: int, name: str = "custom",
          small: bool = False) -> ModelSpec:
    head_dim = _head_dim(d_model, small)
    common = dict(
        family="decoder", n_decoder_layers=n_layers, d_model=d_model, n_heads=d_model // head_dim,
        vocab_size=vocab_size, context=context, name=name,
    )
    if style == "gpt2":
        return ModelSpec(**common, d_ff=4 * d_model)
    multiple = 256 if d_model >= 1024 else 64
    d_ff = multiple * math.ceil(8 * d_model / 3 / multiple)
    return ModelSpec(
        **common, d_ff=d_ff, mlp="swiglu", norm="rmsnorm", positions="rotary", bias=False, tied_embeddings=False
    )
