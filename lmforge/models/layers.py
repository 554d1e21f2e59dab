"""Transformer building blocks: norms, rotary positions, attention (causal, bidirectional, cross), MLPs, layers.

Each block is built from a `ModelSpec` and holds exactly the weights
`lmforge.plan.specs` counts for it (``attention_params``, ``mlp_params``,
``norm_params``). The blocks know nothing about distribution, precision policy, data or
checkpoints.

Sources:
- pre-norm residual layer: Radford et al. 2019 (GPT-2), Sec. 2.3; Xiong et al. 2020;
  post-norm layer and cross-attention: Vaswani et al. 2017, Sec. 3.1-3.2;
- LayerNorm: Ba et al. 2016; RMSNorm: Zhang & Sennrich 2019, Eq. 4 (Llama, Touvron et
  al. 2023a, Sec. 2.2);
- rotary positions: Su et al. 2021 (RoFormer), Sec. 3.4.2, Eq. 34, in the "rotate half"
  layout of GPT-NeoX and Hugging Face Llama;
- grouped-query attention: Ainslie et al. 2023 (GQA), Sec. 2;
- GELU (tanh approximation as in GPT-2): Hendrycks & Gimpel 2016, Sec. 2;
  SwiGLU / GEGLU: Shazeer 2020, Eq. 6.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.kv_cache import LayerKV
from lmforge.plan.specs import GATED_MLPS, ModelSpec

NORM_EPS = 1e-5  # GPT-2 LayerNorm and Llama-2 RMSNorm both use 1e-5 (ModelSpec.norm_eps)
ROTARY_BASE = 10_000.0  # Su et al. 2021, Eq. 15: theta_i = 10000^(-2(i-1)/d) (ModelSpec.rotary_base)


def _torch_at_least(major: int, minor: int) -> bool:
    """True when the running torch is ``major.minor`` or newer ("2.5.0a0+git" counts as 2.5)."""
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)) >= (major, minor)
    except (IndexError, ValueError):
        return False


# ``enable_gqa`` in scaled_dot_product_attention arrived in torch 2.5; older torch expands
# the kv heads instead. Module-level so tests can force either path.
SDPA_HAS_GQA: bool = _torch_at_least(2, 5)


# ---- norms ---------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019, Eq. 4): x / rms(x) * g, scale only, no shift.

    Computed in fp32 and cast back, as the Llama reference does.
    """

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def make_norm(spec: ModelSpec) -> nn.Module:
    """LayerNorm with scale and shift (2d params) or RMSNorm with scale only (d params)."""
    if spec.norm == "rmsnorm":
        return RMSNorm(spec.d_model, spec.norm_eps)
    return nn.LayerNorm(spec.d_model, eps=spec.norm_eps)


# ---- rotary positions ---------------------------------------------------------------------


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, *, base: float = ROTARY_BASE, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles m * theta_i (Su et al. 2021, Eq. 34), (T, head_dim).

    ``positions``: (T,) integer positions m, or (B, T) per row (left-padded batches; then
    cos/sin are (B, T, head_dim): add a head axis before `apply_rotary`). Angles are computed in fp32 (fp64 when
    ``dtype`` is fp64), then cast to ``dtype``. Nothing is cached in buffers, so a model
    built on the meta device needs no re-initialisation of rotary state.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=work) / head_dim))
    angles = positions.to(work)[..., None] * inv_freq  # (T, head_dim/2) or (B, T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, head_dim): "rotate half" layout
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+k/2}) of ``x`` (..., T, k) by the angles in cos/sin (T, k) or (B, 1, T, k)."""
    return x * cos + _rotate_half(x) * sin


# ---- attention ----------------------------------------------------------------------------


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the attention scores will have for activations ``x``: the autocast dtype
    when autocast is on for ``x``'s device, else ``x.dtype``."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def additive_mask(
    key_mask: torch.Tensor | None,
    q_len: int,
    *,
    causal: bool = False,
    bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    k_len: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """One additive attention mask (B|1, h|1, Tq, Tk) from a key padding mask, causality and a bias.

    ``key_mask``: (B, Tk) bool, True = a real token; ``bias``: (1, h, Tq, Tk) added to the
    logits (T5 relative positions). ``k_len`` (with ``device``): the number of keys when
    neither gives it. The queries are the last Tq of Tk positions (Tk > Tq after a KV cache):
    query i sees keys j <= i + Tk - Tq when ``causal``. Blocked entries hold the most negative finite value of
    ``dtype`` (as Hugging Face does), so that a row with no visible key gives a uniform
    average instead of NaN. Returns None when nothing needs masking and there is no bias:
    the caller then passes ``is_causal=causal`` to SDPA (and keeps the flash kernels).
    """
    if key_mask is not None and bool(key_mask.all()):
        key_mask = None  # nothing padded: let SDPA pick its fused kernels
    offset_causal = causal and k_len is not None and k_len > q_len > 1  # SDPA's is_causal aligns top-left
    if key_mask is None and bias is None and not offset_causal:
        return None
    if key_mask is not None:
        k_len, device = key_mask.shape[1], key_mask.device
    elif bias is not None:
        k_len, device = bias.shape[-1], bias.device
    allowed = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)  # (1, 1, Tq, Tk)
    if causal:
        allowed = allowed.tril(diagonal=k_len - q_len)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]  # (B, 1, Tq, Tk)
    base = torch.zeros((), dtype=dtype, device=device) if bias is None else bias.to(dtype)
    return torch.where(allowed, base, torch.finfo(dtype).min)


def _mask_to(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast an additive mask, keeping blocked entries finite in the narrower dtype."""
    if mask.dtype == dtype:
        return mask
    return mask.clamp(min=torch.finfo(dtype).min).to(dtype)


class Attention(nn.Module):
    """Multi-head / grouped-query attention, bidirectional, causal or cross, with an additive mask.

    The only attention class: decoder-only models, encoders and both stacks of an
    encoder-decoder use it, so each layout has one set of weight names. Self-attention
    (``cross=False``) fuses q, k, v in ``qkv`` (rows [q: h*k | k: g*k | v: g*k]; query head
    i reads kv head ``i // (h / g)``, Ainslie et al. 2023, Sec. 2); cross-attention (Vaswani et al. 2017, Sec. 3.2.3:
    queries from the decoder, keys and values from the encoder output) has ``q`` and ``kv``
    (rows [k: g*k | v: g*k]). Both hold exactly ``attention_params(spec)`` weights.
    ``scale``: the factor on q.k; None = 1/sqrt(head_dim) (Vaswani et al. 2017, Eq. 1);
    T5 uses 1.0 (the scaling is folded into the initialisation of q, Raffel et al. 2020).
    """

    def __init__(self, spec: ModelSpec, *, cross: bool = False, scale: float | None = None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = spec.n_heads, spec.kv_heads, spec.d_head
        self.cross, self.scale = cross, scale
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        if cross:
            self.q = nn.Linear(spec.d_model, q_dim, bias=spec.bias)
            self.kv = nn.Linear(spec.d_model, 2 * kv_dim, bias=spec.bias)
        else:
            self.qkv = nn.Linear(spec.d_model, q_dim + 2 * kv_dim, bias=spec.bias)
        self.proj = nn.Linear(q_dim, spec.d_model, bias=spec.bias)  # residual projection

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerKV | None = None,
    ) -> torch.Tensor:
        """``x`` (B, Tq, C); ``memory`` (B, Tk, C) for cross-attention; ``mask`` additive,
        broadcastable to (B, h, Tq, Tk) (see `additive_mask`); ``is_causal`` only without a
        mask; ``rope`` (cos, sin) each (T, head_dim) for rotary self-attention. ``cache``
        (`LayerKV`): self-attention appends its new keys/values and reads all stored ones;
        cross-attention computes them from ``memory`` on the first call only."""
        B, Tq, _ = x.shape
        h, g, k = self.n_heads, self.n_kv_heads, self.head_dim
        if self.cross:
            q = self.q(x).view(B, Tq, h, k).transpose(1, 2)  # (B, h, Tq, k)
            if cache is not None and cache.length:
                kk, v = cache.get()  # (B, g, Tk, k) each, computed on the first call
            else:
                kk, v = self.kv(memory).split((g * k, g * k), dim=-1)
                Tk = kk.shape[1]
                kk = kk.view(B, Tk, g, k).transpose(1, 2)  # (B, g, Tk, k)
                v = v.view(B, Tk, g, k).transpose(1, 2)  # (B, g, Tk, k)
                if cache is not None:
                    kk, v = cache.update(kk, v)
        else:
            q, kk, v = self.qkv(x).split((h * k, g * k, g * k), dim=-1)
            q = q.view(B, Tq, h, k).transpose(1, 2)  # (B, h, Tq, k)
            kk = kk.view(B, Tq, g, k).transpose(1, 2)  # (B, g, Tq, k)
            v = v.view(B, Tq, g, k).transpose(1, 2)  # (B, g, Tq, k)
            if rope is not None:
                cos, sin = (t.to(q.dtype) for t in rope)
                q, kk = apply_rotary(q, cos, sin), apply_rotary(kk, cos, sin)
            if cache is not None:
                kk, v = cache.update(kk, v)  # (B, g, Tk, k) each
        if mask is not None:
            mask = _mask_to(mask, q.dtype)
            is_causal = False
        extra = {}
        if g != h:
            if SDPA_HAS_GQA:
                extra["enable_gqa"] = True
            else:  # torch < 2.5: expand the kv heads to h
                kk, v = kk.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)  # (B, h, Tk, k)
        y = F.scaled_dot_product_attention(q, kk, v, attn_mask=mask, is_causal=is_causal, scale=self.scale, **extra)
        y = y.transpose(1, 2).reshape(B, Tq, h * k)  # (B, Tq, h*k)
        return self.proj(y)  # (B, Tq, C)


def tie_output(embedding: nn.Module, head: nn.Module | None) -> None:
    """Make the output projection ``head`` share the token ``embedding``'s Parameter, when
    both are plain (or fake-quantized) Embedding / Linear modules. A quantized pair
    (``lmforge.quantize``) already shares its buffers and is left alone."""
    if isinstance(embedding, nn.Embedding) and isinstance(head, nn.Linear):
        head.weight = embedding.weight


# ---- MLPs ----------------------------------------------------------------------------------


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # GPT-2's gelu (Hendrycks & Gimpel 2016, Sec. 2)


_ACTIVATIONS = {"gelu": _gelu, "relu": F.relu, "swiglu": F.silu, "geglu": _gelu}


class MLP(nn.Module):
    """Position-wise feed-forward: ``proj(act(fc(x)))``, or gated ``proj(act(a) * b)``
    with ``[a | b] = fc(x)`` for SwiGLU / GEGLU (Shazeer 2020, Eq. 6).

    Gated MLPs fuse the gate and up projections in one ``fc`` of width 2f (rows
    [gate: f | up: f]). Parameters as ``lmforge.plan.specs.mlp_params`` counts.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.gated = spec.mlp in GATED_MLPS
        self.act = _ACTIVATIONS[spec.mlp]
        width = 2 * spec.ffn if self.gated else spec.ffn
        self.fc = nn.Linear(spec.d_model, width, bias=spec.bias)
        self.proj = nn.Linear(spec.ffn, spec.d_model, bias=spec.bias)  # residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        hidden = self.fc(x)  # (B, T, f) or (B, T, 2f)
        if self.gated:
            gate, up = hidden.chunk(2, dim=-1)
            hidden = self.act(gate) * up  # (B, T, f)
        else:
            hidden = self.act(hidden)
        return self.proj(hidden)


# ---- the layer ------------------------------------------------------------------------------


def init_weights(module: nn.Module, n_layers: int, std: float = 0.02, *, scale_residual: bool = True) -> None:
    """GPT-2 initialisation (Radford et al. 2019, Sec. 2.3; nanoGPT): every linear and
    embedding weight ~ N(0, std); the residual projections (attention out, MLP down)
    scaled by 1/sqrt(2 n_layers); biases 0; norm scales 1 (LayerNorm shifts 0).

    ``scale_residual=False``: BERT's initialisation (Devlin et al. 2019, reference code;
    also BART's), everything N(0, std) with no residual scaling (post-LN needs none)."""
    residual_std = std / math.sqrt(2 * n_layers) if scale_residual else std
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            is_residual = name.endswith("attn.proj") or name.endswith("mlp.proj")
            nn.init.normal_(sub.weight, mean=0.0, std=residual_std if is_residual else std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
        elif isinstance(sub, (nn.LayerNorm, RMSNorm)):
            sub.reset_parameters()


class TransformerLayer(nn.Module):
    """The one transformer layer: a decoder-only model's block (``pre_norm=True``, causal),
    an encoder layer, or a decoder layer of an encoder-decoder (``cross=True``):
    self-attention, [cross-attention,] MLP, each a residual sub-layer with its own norm.

    ``pre_norm=False`` (post-LN: original Transformer, Vaswani et al. 2017, Sec. 3.1; BERT,
    Devlin et al. 2019; BART, Lewis et al. 2020): ``x = norm(x + sublayer(x))``.
    ``pre_norm=True`` (GPT-2, Radford et al. 2019, Sec. 2.3; Llama; T5, Raffel et al. 2020,
    Sec. 2.1; Xiong et al. 2020):
    ``x = x + sublayer(norm(x))``. Norms: ``norm1`` (self-attention), ``norm_cross``,
    ``norm2`` (MLP); weights as ``layer_params(spec, cross)`` counts.
    """

    def __init__(self, spec: ModelSpec, *, cross: bool = False, pre_norm: bool = False, scale: float | None = None):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = make_norm(spec)
        self.attn = Attention(spec, scale=scale)
        if cross:
            self.norm_cross = make_norm(spec)
            self.cross = Attention(spec, cross=True, scale=scale)
        else:
            self.norm_cross = self.cross = None
        self.norm2 = make_norm(spec)
        self.mlp = MLP(spec)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
        cache: LayerKV | None = None,
        cross_cache: LayerKV | None = None,
    ) -> torch.Tensor:
        """``x`` (B, T, C); ``mask`` additive self-attention mask (or None with ``is_causal``);
        ``memory`` (B, S, C) and its additive ``memory_mask`` (B, 1, 1, S) for cross-attention;
        ``cache`` / ``cross_cache``: this layer's `LayerKV` for self- and cross-attention."""
        x = self._sublayer(
            x, self.norm1, lambda y: self.attn(y, mask=mask, is_causal=is_causal, rope=rope, cache=cache)
        )
        if self.cross is not None:
            x = self._sublayer(x, self.norm_cross, lambda y: self.cross(y, memory, mask=memory_mask, cache=cross_cache))
        return self._sublayer(x, self.norm2, self.mlp)  # (B, T, C)
