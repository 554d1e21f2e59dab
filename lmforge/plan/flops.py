"""Floating-point operations of a transformer: per token, per run, and MFU.

Two conventions, both per token, with a multiply-add counted as 2 FLOPs:

- Kaplan et al. (2020), Table 1 and Sec. 2.1: forward ~ 2N + 2 n_layer n_ctx d_attn,
  with N the non-embedding parameters; the backward pass costs about twice the forward,
  so training ~ 3 x forward (Eq. 2.1-2.2: C ~ 6N per token, C = 6ND for a run). Table 1
  lists the de-embedding 2 d_model n_vocab but leaves it out of its total; we add it by
  default (``include_embedding_matmul``), since the output projection is a real matmul.
- Chowdhery et al. (2022, PaLM), App. B: training = 6N + 12 L H Q T per token, with N
  the matmul parameters (non-embedding plus the output projection V x d, which for a
  tied GPT-2 equals all parameters less the position table: nanoGPT's ``estimate_mfu``)
  and 12 L H Q T the attention scores and weighted sum, forward and backward, without a
  causal discount. This is the count MFU is defined with.

Encoder-decoder models (T5, BART) process ``source_len`` tokens in the encoder and
``target_len`` in the decoder; we count one example through both stacks and divide by
``source_len + target_len``, i.e. FLOPs per token processed (the accounting of Raffel et
al. 2020, Sec. 3.2.4, where an L+L encoder-decoder costs about as much per token as an
L-layer decoder). Encoder self-attention spans the source, decoder self-attention the
target and cross-attention the source. Both lengths default to the context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lmforge.errors import UserError, check_positive
from lmforge.plan.specs import ModelSpec, param_counts

_MAX_FLOPS = 1e40  # anything larger is a typo


@dataclass(frozen=True)
class FlopsPerToken:
    """FLOPs per token of one spec at one sequence length, split by kind.

    ``dense`` = 2 x the matmul parameters a token passes through; ``attention`` = the
    attention scores and weighted sum (grows linearly with the context); both forward.
    """

    convention: str  # "kaplan" (Table 1) or "palm" (App. B)
    dense: float  # forward FLOPs of weight matmuls per token
    attention: float  # forward FLOPs of attention over the context per token
    source_len: int  # context of the (encoder or decoder-only) self-attention
    target_len: int | None  # decoder length of an encoder-decoder, else None

    @property
    def forward(self) -> float:
        return self.dense + self.attention

    @property
    def training(self) -> float:
        """Forward + backward: backward ~ 2 x forward (Kaplan et al. 2020, Sec. 2.1)."""
        return 3.0 * self.forward

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(forward=self.forward, training=self.training)
        return out


def training_flops(n_params: float, n_tokens: float) -> float:
    """C = 6 N D: training compute of N parameters over D tokens (Kaplan et al. 2020,
    Eq. 2.1 and Sec. 2.1; Hoffmann et al. 2022, Sec. 3)."""
    check_positive("parameter count", n_params, upper=1e16)
    check_positive("token count", n_tokens, upper=1e18)
    return 6.0 * n_params * n_tokens


def matmul_params(spec: ModelSpec, include_embedding_matmul: bool = True) -> int:
    """N of the FLOPs formulas: non-embedding parameters (Kaplan et al. 2020, Sec. 2.1),
    plus the output projection V x d when the model predicts tokens and
    ``include_embedding_matmul`` (PaLM App. B; nanoGPT: total - positions if tied)."""
    counts = param_counts(spec)
    return counts.non_embedding + (_output_matmul(spec) if include_embedding_matmul else 0)


def flops_per_token(
    spec: ModelSpec,
    context: int | None = None,
    *,
    convention: str = "kaplan",
    include_embedding_matmul: bool = True,
    source_len: int | None = None,
    target_len: int | None = None,
) -> FlopsPerToken:
    """Forward FLOPs per token, dense and attention apart (see the module docstring).

    ``convention="kaplan"``: attention 2 n_layer n_ctx d_attn (Kaplan et al. 2020,
    Table 1, "Attention: Mask"); ``"palm"``: 4 n_layer n_ctx d_attn, so that training
    = 3 x forward = 6N + 12 L H Q T (Chowdhery et al. 2022, App. B). ``context`` is
    n_ctx (default ``spec.context``); for an encoder-decoder it is the default of both
    ``source_len`` and ``target_len``.
    """
    if convention not in ("kaplan", "palm"):
        raise UserError("unknown FLOPs convention", convention, "choose kaplan or palm")
    ctx = spec.context if context is None else _check_len("context", context)
    attn_factor = 2.0 if convention == "kaplan" else 4.0
    d_attn = spec.d_attn
    head = _output_matmul(spec) if include_embedding_matmul else 0
    counts = param_counts(spec)
    if spec.family != "encoder-decoder":
        if source_len is not None or target_len is not None:
            raise UserError(
                "source_len and target_len apply to encoder-decoder models only",
                spec.family,
                "pass context (the sequence length) instead",
            )
        dense = 2.0 * (counts.non_embedding + head)
        attention = attn_factor * spec.n_layers * ctx * d_attn
        return FlopsPerToken(convention, dense, attention, ctx, None)

    src = ctx if source_len is None else _check_len("source_len", source_len)
    tgt = ctx if target_len is None else _check_len("target_len", target_len)
    enc_params = counts.encoder_layers
    dec_params = counts.non_embedding - enc_params  # decoder layers, norms
    # One example: src tokens through the encoder, tgt tokens through the decoder.
    dense = 2.0 * (src * enc_params + tgt * (dec_params + head))
    attention = attn_factor * d_attn * (
        spec.n_encoder_layers * src * src  # encoder self-attention over the source
        + spec.n_decoder_layers * tgt * tgt  # decoder self-attention over the target
        + spec.n_decoder_layers * tgt * src  # cross-attention over the source
    )
    tokens = src + tgt
    return FlopsPerToken(convention, dense / tokens, attention / tokens, src, tgt)


def forward_flops_per_token(
    spec: ModelSpec,
    context: int | None = None,
    *,
    include_embedding_matmul: bool = True,
    source_len: int | None = None,
    target_len: int | None = None,
) -> float:
    """Kaplan et al. (2020), Table 1: C_forward ~ 2N + 2 n_layer n_ctx d_attn per token,
    N non-embedding, plus 2 d V for the output projection when the model predicts
    tokens and ``include_embedding_matmul`` (Table 1's "De-embed" row; its total omits
    it: pass False for Kaplan's number). Encoder-decoders: see the module docstring."""
    return flops_per_token(
        spec, context, include_embedding_matmul=include_embedding_matmul,
        source_len=source_len, target_len=target_len,
    ).forward


def training_flops_per_token(
    spec: ModelSpec,
    context: int | None = None,
    *,
    include_embedding_matmul: bool = True,
    source_len: int | None = None,
    target_len: int | None = None,
) -> float:
    """3 x `forward_flops_per_token`: the backward pass costs about twice the forward
    (Kaplan et al. 2020, Sec. 2.1, C ~ 6N per training token)."""
    return flops_per_token(
        spec, context, include_embedding_matmul=include_embedding_matmul,
        source_len=source_len, target_len=target_len,
    ).training


def palm_flops_per_token(spec: ModelSpec, seq_len: int | None = None) -> float:
    """Training FLOPs per token 6N + 12 L H Q T (Chowdhery et al. 2022, PaLM, App. B).

    N = non-embedding + output projection V x d (for tied GPT-2: total - positions, as
    nanoGPT's ``estimate_mfu`` does); L layers, H heads, Q head size, T = ``seq_len``
    (default ``spec.context``). GPT-2 small at T = 1024: 855,166,464. Encoder-decoders
    per token processed with source = target = T (module docstring).
    """
    return flops_per_token(spec, seq_len, convention="palm").training


def mfu(tokens_per_second: float, spec: ModelSpec, peak_flops: float, seq_len: int | None = None) -> float:
    """Model FLOPs utilization: tokens/s x (6N + 12 L H Q T) / peak FLOP/s
    (Chowdhery et al. 2022, PaLM, App. B).

    ``tokens_per_second`` and ``peak_flops`` cover the same devices (e.g. the whole
    cluster's throughput and the sum of its peaks). A result above 1 means the peak or
    the throughput is wrong.
    """
    check_positive("tokens per second", tokens_per_second, upper=_MAX_FLOPS)
    check_positive("peak FLOP/s", peak_flops, upper=_MAX_FLOPS)
    return tokens_per_second * palm_flops_per_token(spec, seq_len) / peak_flops


def _output_matmul(spec: ModelSpec) -> int:
    """V x d when the model projects to the vocabulary (decoders, BERT's MLM head)."""
    predicts_tokens = spec.has_decoder or spec.mlm_head
    return spec.vocab_size * spec.d_model if predicts_tokens else 0


def _check_len(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise UserError(f"{name} must be a whole number of tokens", value, f"pass {name} as an integer")
    check_positive(name, value, upper=1e9)
    return value
