"""`ModelSpec`: the shape of a transformer, for planning and for building it.

One dataclass describes the three families (DESIGN.md):

- ``decoder``: a causal stack only (GPT-2, Llama, GPT-3, BLOOM, ...);
- ``encoder``: a bidirectional stack only (BERT);
- ``encoder-decoder``: an encoder, then a decoder with cross-attention (T5, BART).

Parameter counts are exact: every weight and bias a reference implementation of the
spec holds is counted, embeddings and non-embeddings apart. The torch model built from
a spec (``lmforge.models``) must hold exactly ``param_counts(spec).total`` parameters.

Counting conventions (per layer, d = d_model, h = heads, g = kv heads, k = head_dim,
f = d_ff, V = vocab):

- attention: q d*h*k, k and v d*g*k each, out h*k*d; with biases + h*k + 2*g*k + d;
- MLP: ungated (GELU, ReLU) 2*d*f (+ f + d biases); gated (SwiGLU, GEGLU) 3*d*f
  (+ 2f + d biases);
- norm: LayerNorm 2d (scale and shift), RMSNorm d (scale only);
- a decoder layer of an encoder-decoder adds cross-attention and a third norm;
- ``positions == "xl-relative"`` (Transformer-XL, Dai et al. 2019, Sec. 3.3; used by
  Gopher and Chinchilla) adds per self-attention block the relative-position key
  projection W_{k,R} (d*h*k) and the biases u, v (h*k each, one pair per layer).

"Embedding" parameters, which Kaplan et al. (2020, Sec. 2.1) leave out of N, are the
token embedding, position tables, token-type table and an untied output projection.
Everything else is non-embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from lmforge.errors import UserError, check_choice, check_whole

Family = Literal["decoder", "encoder", "encoder-decoder"]
FAMILIES: tuple[str, ...] = ("decoder", "encoder", "encoder-decoder")
MLP_KINDS: tuple[str, ...] = ("gelu", "relu", "swiglu", "geglu")
GATED_MLPS: tuple[str, ...] = ("swiglu", "geglu")
NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")
POSITIONS: tuple[str, ...] = ("learned", "rotary", "relative", "alibi", "xl-relative")


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a transformer language model.

    Layers are given per stack: a decoder-only model has ``n_encoder_layers == 0``,
    an encoder-only model ``n_decoder_layers == 0``.
    """

    family: Family = "decoder"
    n_decoder_layers: int = 12
    n_encoder_layers: int = 0
    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None  # None: multi-head attention (== n_heads)
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int | None = None  # None: 4 * d_model
    vocab_size: int = 50257
    context: int = 1024  # maximum sequence length
    mlp: str = "gelu"  # gelu | relu | swiglu | geglu
    norm: str = "layernorm"  # layernorm | rmsnorm
    positions: str = "learned"  # learned | rotary | relative | alibi | xl-relative
    bias: bool = True  # biases in attention and MLP linears
    tied_embeddings: bool = True  # output projection shares the token embedding
    final_norm: bool = True  # a norm after the last layer of each stack
    embedding_norm: bool = False  # a norm after the embeddings (BERT, BLOOM, BART)
    position_offset: int = 0  # extra rows in a learned position table (BART, OPT: 2)
    n_token_types: int = 0  # token-type (segment) embeddings (BERT: 2)
    relative_buckets: int = 32  # T5 relative attention buckets (positions == relative)
    mlm_head: bool = False  # BERT MLM head: dense d->d + norm + output bias
    pooler: bool = False  # BERT pooler: dense d->d on the first token
    norm_eps: float = 1e-5  # epsilon of every norm (GPT-2 and Llama-2: 1e-5; BERT 1e-12, T5 1e-6)
    rotary_base: float = 10_000.0  # rotary base theta (Su et al. 2021, Eq. 15; Llama 3: 500,000)
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        validate(self)

    # ---- derived shape -------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def d_attn(self) -> int:
        """Width of the attention (heads x head_dim), Kaplan's d_attn."""
        return self.n_heads * self.d_head

    @property
    def ffn(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    @property
    def n_layers(self) -> int:
        """All transformer layers, both stacks together."""
        return self.n_encoder_layers + self.n_decoder_layers

    @property
    def has_encoder(self) -> bool:
        return self.n_encoder_layers > 0

    @property
    def has_decoder(self) -> bool:
        return self.n_decoder_layers > 0

    @property
    def n_stacks(self) -> int:
        return int(self.has_encoder) + int(self.has_decoder)

    def with_(self, **changes: object) -> ModelSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def validate(spec: ModelSpec) -> None:
    """Raise UserError naming the first field that makes ``spec`` impossible."""
    check_choice("model family", spec.family, FAMILIES)
    for name in ("d_model", "n_heads", "vocab_size", "context"):
        check_whole(name, getattr(spec, name))
    for name in ("n_kv_heads", "head_dim", "d_ff"):
        if getattr(spec, name) is not None:
            check_whole(name, getattr(spec, name))
    for name in ("n_decoder_layers", "n_encoder_layers", "position_offset", "n_token_types"):
        check_whole(name, getattr(spec, name), allow_zero=True)
    if spec.family == "decoder" and (spec.n_decoder_layers == 0 or spec.n_encoder_layers):
        raise UserError(
            "a decoder model needs decoder layers and no encoder layers",
            f"encoder={spec.n_encoder_layers}, decoder={spec.n_decoder_layers}",
            "set n_decoder_layers > 0 and n_encoder_layers = 0",
        )
    if spec.family == "encoder" and (spec.n_encoder_layers == 0 or spec.n_decoder_layers):
        raise UserError(
            "an encoder model needs encoder layers and no decoder layers",
            f"encoder={spec.n_encoder_layers}, decoder={spec.n_decoder_layers}",
            "set n_encoder_layers > 0 and n_decoder_layers = 0",
        )
    if spec.family == "encoder-decoder" and (spec.n_encoder_layers == 0 or spec.n_decoder_layers == 0):
        raise UserError(
            "an encoder-decoder model needs layers in both stacks",
            f"encoder={spec.n_encoder_layers}, decoder={spec.n_decoder_layers}",
            "set n_encoder_layers > 0 and n_decoder_layers > 0",
        )
    if spec.head_dim is None and spec.d_model % spec.n_heads:
        raise UserError(
            "d_model is not divisible by the number of heads",
            f"d_model={spec.d_model}, n_heads={spec.n_heads}",
            f"pick heads that divide {spec.d_model} (e.g. {_divisor_near(spec.d_model, spec.n_heads)}) or set head_dim",
        )
    if spec.n_kv_heads is not None and spec.n_heads % spec.n_kv_heads:
        raise UserError(
            "n_heads is not divisible by n_kv_heads",
            f"n_heads={spec.n_heads}, n_kv_heads={spec.n_kv_heads}",
            "grouped-query attention needs n_kv_heads to divide n_heads",
        )
    for name in ("norm_eps", "rotary_base"):
        value = getattr(spec, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{name} must be a positive number", value, f"set {name} to e.g. "
                            + ("1e-5" if name == "norm_eps" else "10000"))
    check_choice("mlp", spec.mlp, MLP_KINDS)
    check_choice("norm", spec.norm, NORMS)
    check_choice("positions", spec.positions, POSITIONS)
    if spec.positions == "relative":
        check_whole("relative_buckets", spec.relative_buckets)
    if spec.mlm_head and spec.family != "encoder":
        raise UserError("an MLM head belongs to an encoder model", spec.family, "set mlm_head only for family=encoder")


def check_spec(spec: object) -> ModelSpec:
    """Return ``spec`` if it is a ModelSpec; else a UserError naming what was passed."""
    if not isinstance(spec, ModelSpec):
        raise UserError("expected a ModelSpec", type(spec).__name__, "build one with lmforge.plan.specs.ModelSpec")
    return spec


def check_seq_len(spec: ModelSpec, name: str, value: int | None, default: int) -> int:
    """A sequence length in [1, spec.context]; ``None`` means ``default``."""
    if value is None:
        return default
    check_whole(name, value)
    if value > spec.context:
        raise UserError(
            f"{name} is longer than the model's context", value, f"use at most {spec.context} or raise the context"
        )
    return value


def _divisor_near(n: int, target: int) -> int:
    divisors = [k for k in range(1, min(n, 4 * target) + 1) if n % k == 0]
    return min(divisors, key=lambda k: abs(k - target))


# ---- parameter counts ------------------------------------------------------------


@dataclass(frozen=True)
class ParamCounts:
    """Exact parameter counts of a spec, split the way the planner needs them.

    ``embedding`` = token + positions + token types + untied output projection
    (Kaplan et al. 2020, Sec. 2.1 leave these out of N); ``non_embedding`` is the rest.
    ``positions`` is kept apart too: nanoGPT's MFU (and PaLM's 6N) uses
    N = total - positions when the output projection is tied.
    """

    token_embedding: int
    positions: int  # learned position tables (0 for rotary / relative / ALiBi)
    token_types: int
    output_head: int  # untied output projection V*d (0 when tied)
    embedding_norms: int
    encoder_layers: int  # all encoder layers, including T5 relative-position tables
    decoder_layers: int  # all decoder layers, including T5 relative-position tables
    final_norms: int
    extra_head: int  # BERT MLM transform + output bias, pooler

    @property
    def embedding(self) -> int:
        return self.token_embedding + self.positions + self.token_types + self.output_head

    @property
    def total(self) -> int:
        return (
            self.embedding
            + self.embedding_norms
            + self.encoder_layers
            + self.decoder_layers
            + self.final_norms
            + self.extra_head
        )

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(embedding=self.embedding, non_embedding=self.non_embedding, total=self.total)
        return out


def norm_params(spec: ModelSpec) -> int:
    """Parameters of one norm over d_model: LayerNorm 2d, RMSNorm d."""
    return 2 * spec.d_model if spec.norm == "layernorm" else spec.d_model


def attention_params(spec: ModelSpec) -> int:
    """One attention block (self or cross): q, k, v, out projections (+ biases)."""
    d, h, g, k = spec.d_model, spec.n_heads, spec.kv_heads, spec.d_head
    weights = d * h * k + 2 * d * g * k + h * k * d
    biases = h * k + 2 * g * k + d if spec.bias else 0
    return weights + biases


def mlp_params(spec: ModelSpec) -> int:
    """One MLP: 2 d f ungated, 3 d f gated (SwiGLU / GEGLU), with biases if any."""
    d, f = spec.d_model, spec.ffn
    if spec.mlp in GATED_MLPS:
        return 3 * d * f + (2 * f + d if spec.bias else 0)
    return 2 * d * f + (f + d if spec.bias else 0)


def xl_relative_params(spec: ModelSpec) -> int:
    """Transformer-XL relative positions in one self-attention block (Dai et al. 2019,
    Sec. 3.3): key projection of the sinusoid table W_{k,R} (d*h*k) and biases u, v
    (h*k each, one pair per layer); 0 for any other ``positions``."""
    if spec.positions != "xl-relative":
        return 0
    return spec.d_model * spec.d_attn + 2 * spec.d_attn


def layer_params(spec: ModelSpec, cross_attention: bool = False) -> int:
    """One transformer layer; ``cross_attention`` for a decoder layer of an enc-dec."""
    n_norms = 3 if cross_attention else 2
    n_attention = 2 if cross_attention else 1
    return (
        n_attention * attention_params(spec)
        + xl_relative_params(spec)
        + mlp_params(spec)
        + n_norms * norm_params(spec)
    )


def param_counts(spec: ModelSpec) -> ParamCounts:
    """Exact parameter counts of ``spec`` (see the module docstring for conventions)."""
    d, V = spec.d_model, spec.vocab_size
    stacks = spec.n_stacks
    cross = spec.family == "encoder-decoder"
    relative = spec.relative_buckets * spec.n_heads if spec.positions == "relative" else 0
    encoder = spec.n_encoder_layers * layer_params(spec) + (relative if spec.has_encoder else 0)
    decoder = spec.n_decoder_layers * layer_params(spec, cross_attention=cross) + (relative if spec.has_decoder else 0)
    positions = stacks * (spec.context + spec.position_offset) * d if spec.positions == "learned" else 0
    # An encoder's output is not a vocabulary projection unless it has an MLM head.
    predicts_tokens = spec.has_decoder or spec.mlm_head
    extra = 0
    if spec.mlm_head:
        extra += d * d + d + norm_params(spec) + V  # transform dense, its norm, output bias
    if spec.pooler:
        extra += d * d + d
    return ParamCounts(
        token_embedding=V * d,
        positions=positions,
        token_types=spec.n_token_types * d,
        output_head=0 if spec.tied_embeddings or not predicts_tokens else V * d,
        embedding_norms=stacks * norm_params(spec) if spec.embedding_norm else 0,
        encoder_layers=encoder,
        decoder_layers=decoder,
        final_norms=stacks * norm_params(spec) if spec.final_norm else 0,
        extra_head=extra,
    )
