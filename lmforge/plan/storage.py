"""Bytes to store a model: its weights at a precision (quantized or not) and its KV cache.

Bytes are integers for a ``ModelSpec`` (exact counts of its tensors) and floats for a
bare parameter count (approximate; linear in the count). Sources:

- weights: 4 bytes/param fp32, 2 fp16/bf16, 1 int8, 0.5 int4, plus scales (DESIGN.md;
  the quantization scheme is spelled out in ``weight_bytes``);
- KV cache: 2 x n_layers x n_kv_heads x head_dim x bytes x seq x batch (DESIGN.md).
"""

from __future__ import annotations

import math

from lmforge.errors import check_choice, check_positive, check_whole
from lmforge.plan.specs import GATED_MLPS, ModelSpec, check_seq_len, check_spec, param_counts

PRECISION_BYTES: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
MAX_PARAMS = 1e16  # a larger parameter count is a typo


def check_precision(precision: str, name: str = "precision") -> str:
    """Return ``precision`` if it is one of ``PRECISION_BYTES``; else a UserError listing them."""
    return check_choice(name, precision, PRECISION_BYTES)


def _check_group(group_size: int) -> int:
    return check_whole("group_size", group_size, upper=2**20)


def _quantized_matrices(spec: ModelSpec) -> list[tuple[int, int, bool]]:
    """(out_features, in_features, is_embedding) of every weight matrix a quantizer
    packs: attention q/k/v/out (+ Transformer-XL W_{k,R}), cross-attention, MLP, MLM
    transform, pooler, token embedding (V rows of d) and an untied output projection."""
    d, f, hk, gk = spec.d_model, spec.ffn, spec.d_attn, spec.kv_heads * spec.d_head
    attention = [(hk, d), (gk, d), (gk, d), (d, hk)]
    # Transformer-XL: one W_{k,R} (h*k, d) per layer's self-attention (specs.xl_relative_params).
    self_attention = attention + ([(hk, d)] if spec.positions == "xl-relative" else [])
    mlp = [(f, d), (f, d), (d, f)] if spec.mlp in GATED_MLPS else [(f, d), (d, f)]
    cross = attention if spec.family == "encoder-decoder" else []
    shapes = (self_attention + mlp) * spec.n_encoder_layers + (self_attention + cross + mlp) * spec.n_decoder_layers
    out = [(o, i, False) for o, i in shapes]
    if spec.mlm_head:
        out.append((d, d, False))
    if spec.pooler:
        out.append((d, d, False))
    out.append((spec.vocab_size, d, True))
    if param_counts(spec).output_head:
        out.append((spec.vocab_size, d, True))
    return out


def weight_bytes(spec: ModelSpec, precision: str, group_size: int = 128, keep_embeddings_16bit: bool = False,
                 kept_bytes: int = 2) -> int:
    """Bytes to store the weights of ``spec`` at ``precision`` (exact, an integer).

    fp32 / fp16 / bf16: every parameter at 4 / 2 / 2 bytes.

    int8 and int4 (weight-only; the quantizer in ``lmforge.quantize`` matches this byte
    for byte). Quantized: every weight matrix of shape (out_features, in_features), as
    torch's ``nn.Linear.weight`` holds it (attention q/k/v/out, cross-attention, MLP,
    the Transformer-XL relative-position key projection W_{k,R}, MLM transform, pooler),
    and the token embedding (vocab, d_model) and an untied output projection
    (vocab, d_model), unless ``keep_embeddings_16bit`` keeps these two at 2 bytes/param.
    Kept 16-bit, 2 bytes/param: norm scales and shifts, biases, Transformer-XL u and v,
    learned position and token-type tables, T5 relative-position tables, the MLM
    output bias.

    - int8, symmetric per output channel: out*in int8 bytes + one fp16 scale per
      output row: ``out*in + 2*out`` bytes.
    - ``kept_bytes``: bytes per kept parameter, 2 as written; 4 where a CPU without fast
      16-bit arithmetic computes them in fp32 (``lmforge.quantize.paths``).
    - int4, asymmetric group-wise: each row is cut into ceil(in / group_size) groups of
      ``group_size`` consecutive input features (the last may be short); each group
      has one fp16 scale and one fp16 zero point; values are packed two per byte over
      the whole tensor: ``ceil(out*in / 2) + 4*out*ceil(in / group_size)`` bytes.
    """
    check_precision(precision)
    _check_group(group_size)
    total = param_counts(spec).total
    if precision in ("fp32", "fp16", "bf16"):
        return int(PRECISION_BYTES[precision]) * total
    matrices = _quantized_matrices(spec)
    kept_16bit = total - sum(o * i for o, i, _ in matrices)  # norms, biases, tables
    size = kept_bytes * kept_16bit
    for o, i, is_embedding in matrices:
        if is_embedding and keep_embeddings_16bit:
            size += kept_bytes * o * i
        elif precision == "int8":
            size += o * i + 2 * o
        else:
            size += (o * i + 1) // 2 + 4 * o * -(-i // group_size)
    return size


def weight_bytes_for_params(n_params: float, precision: str, group_size: int = 128) -> float:
    """Approximate bytes to store ``n_params`` parameters when the shapes are unknown.

    fp32/fp16/bf16: n x 4/2/2. int4: n x (0.5 + 4/group_size), i.e. every parameter is
    taken to lie in a quantized matrix and bear its share of the group's fp16 scale and
    zero point. int8: n x 1; the per-output-channel fp16 scale (2 / in_features bytes per
    parameter, under 0.1% for in_features >= 2048) and 16-bit norms and biases are
    neglected. Use ``weight_bytes`` with a spec for the exact figure.
    """
    check_positive("parameter count", n_params, upper=MAX_PARAMS)
    check_precision(precision)
    _check_group(group_size)
    per_param = PRECISION_BYTES[precision] + (4 / group_size if precision == "int4" else 0.0)
    return n_params * per_param


def kv_cache_bytes(
    spec: ModelSpec, batch: int, seq_len: int, precision: str = "bf16", source_len: int | None = None
) -> int:
    """Bytes of the key/value cache for ``batch`` sequences of ``seq_len`` positions.

    Decoder: 2 x n_layers x n_kv_heads x head_dim x bytes x seq_len x batch (DESIGN.md),
    the 2 for keys and values; grouped-query / multi-query attention enter through
    n_kv_heads. Encoder-decoder: that for the decoder's self-attention plus the
    cross-attention keys and values of every decoder layer over ``source_len`` encoder
    positions (default ``seq_len``), computed once per source. Encoder-only: 0 (nothing
    is generated, nothing cached). int8/int4 count the raw elements only; the scales of
    a quantized cache are not included.
    """
    check_spec(spec)
    batch = check_whole("batch", batch, upper=10**7)
    seq_len = check_seq_len(spec, "seq_len", check_whole("seq_len", seq_len), spec.context)
    check_precision(precision)
    source = check_seq_len(spec, "source_len", source_len, seq_len)
    if not spec.has_decoder:
        return 0
    positions = seq_len + (source if spec.family == "encoder-decoder" else 0)
    elements = 2 * spec.n_decoder_layers * spec.kv_heads * spec.d_head * positions * batch
    return math.ceil(elements * PRECISION_BYTES[precision])
