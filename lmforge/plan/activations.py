"""Activation memory of one training step, per GPU (no tensor or sequence parallelism).

Source: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", Sec. 4 and Table 2. With s = sequence length, b = micro-batch, h = hidden size,
a = heads and 16-bit activations, one GPT layer stores

    none:       s b h (34 + 5 a s / h) bytes
    selective:  34 s b h               (attention scores/softmax/dropout recomputed, Sec. 5)
    full:       2 s b h                (only the layer input)

Their 34 s b h + 5 a s^2 b (Sec. 4.1) is the sum of these saved tensors, 2-byte
elements except the 1-byte dropout masks:

    attention: QKV input 2sbh, Q and K 4sbh, V 2sbh, output-projection input 2sbh,
               dropout mask sbh; softmax output 2as^2b, its dropout mask as^2b, the
               dropout output 2as^2b                            -> 11 sbh + 5 a s^2 b
    MLP (4h GELU): input 2sbh, GELU input 8sbh, GELU output 8sbh, dropout mask sbh -> 19 sbh
    two LayerNorms: inputs 4sbh                                  -> 4 sbh

We sum the same tensors from the spec's real shapes, with e bytes per element (2 for
bf16/fp16, 4 for fp32; dropout masks stay 1 byte), so a GPT shape (d_ff = 4h, heads x
head_dim = h, no GQA) reproduces the table exactly. Deviations for other shapes:

- GQA/MQA: K and V are n_kv_heads x head_dim wide, not h (smaller).
- gated MLP (SwiGLU/GEGLU), as eager PyTorch saves them: input, gate pre-activation,
  activation output, up-projection output, and their product (the down-projection input):
  2sbh + 4 e s b d_ff. Llama's d_ff = 8h/3 gives ~24.3 sbh instead of 19 (an estimate;
  fused kernels store less).
- RMSNorm saves its input like LayerNorm.
- Dropout masks are counted as the paper does, although most modern LLMs train with
  dropout 0 and store none; an over-estimate of 2 s b h per layer (+ a s^2 b).
- Position-bias tables (T5 relative, ALiBi) and the flash-attention logsumexp (a s b fp32)
  are small and left to the margin; Transformer-XL relative positions (the projected
  position table and its score term) are not modelled beyond the usual scores.

Outside the layers (Korthikanti Sec. 4.3): the embedding dropout mask s b h bytes; the
final norm input and the output-projection input e s b h each; and the logits. The paper
counts one fp32 copy of the logits (4 s b V); we count the projection's output (e s b V),
the fp32 log-probabilities the loss saves (4 s b V) and their fp32 gradient (4 s b V),
which are all alive when backward starts. A fused or chunked cross-entropy needs far less.
The embedding output itself is the first layer's input and is counted there.

Encoder-decoder: the encoder over ``source_len``, the decoder over ``seq_len`` with
cross-attention (its K and V over source_len; scores a x seq_len x source_len), and the
encoder output, kept once for all cross-attention layers.

Full recomputation stores each layer's input and, during backward, recomputes one layer
at a time: we add the full activations of the largest single layer as live memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmforge.errors import check_choice, check_whole
from lmforge.plan.specs import GATED_MLPS, ModelSpec, check_seq_len, check_spec

ACTIVATION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes per stored element
RECOMPUTE: tuple[str, ...] = ("none", "selective", "full")
LOGITS_FP32_COPIES = 2  # fp32 log-probabilities saved by the loss + their gradient


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, recompute: str = "none") -> int:
    """Bytes of one GPT layer's activations, 16-bit, no parallelism (Korthikanti et al.
    2022, Table 2, first row of each block): s b h (34 + 5 a s / h), 34 s b h, 2 s b h.

    The paper's formula verbatim, for a 4h GELU MLP and multi-head attention; the
    planner's own ``layer_bytes`` generalises it to any spec.
    """
    check_choice("recompute", recompute, RECOMPUTE)
    if recompute == "full":
        return 2 * s * b * h
    if recompute == "selective":
        return 34 * s * b * h
    return 34 * s * b * h + 5 * a * s * s * b


def attention_bytes(spec: ModelSpec, s_q: int, s_kv: int, b: int, e: int, keep_scores: bool) -> int:
    """One attention block's saved tensors (Korthikanti Sec. 4.1, generalised to GQA and
    to cross-attention with s_q queries over s_kv keys; self-attention has s_q == s_kv).

    For cross-attention the K/V input (the encoder output) is not counted here: it is
    one tensor shared by every decoder layer (see ``activation_bytes``).
    """
    d, a, hk, gk = spec.d_model, spec.n_heads, spec.d_attn, spec.kv_heads * spec.d_head
    saved = e * s_q * b * d  # QKV (or Q) projection input (B, T, C)
    saved += e * s_q * b * hk  # Q (B, a, T, k)
    saved += 2 * e * s_kv * b * gk  # K and V (B, g, S, k)
    saved += e * s_q * b * hk  # output-projection input (B, T, a*k)
    saved += s_q * b * d  # dropout mask after the output projection, 1 byte
    if keep_scores:
        saved += (2 * e + 1) * a * s_q * s_kv * b  # softmax out, its dropout mask, dropout out (B, a, T, S)
    return saved


def mlp_bytes(spec: ModelSpec, s: int, b: int, e: int) -> int:
    """One MLP's saved tensors: 2sbh + 4 e s b f gated (eager SwiGLU/GEGLU), else the
    paper's input + GELU input + GELU output + mask (19 s b h at f = 4h, 16-bit)."""
    d, f = spec.d_model, spec.ffn
    tensors_of_width_f = 4 if spec.mlp in GATED_MLPS else 2
    return e * s * b * d + tensors_of_width_f * e * s * b * f + s * b * d


def layer_bytes(spec: ModelSpec, s: int, b: int, e: int, keep_scores: bool = True, source_len: int = 0) -> int:
    """Full activations of one layer; ``source_len`` > 0 makes it a decoder layer with
    cross-attention over that many encoder positions (a third norm too)."""
    n_norms = 3 if source_len else 2
    total = (
        attention_bytes(spec, s, s, b, e, keep_scores) + mlp_bytes(spec, s, b, e) + n_norms * e * s * b * spec.d_model
    )
    if source_len:
        total += attention_bytes(spec, s, source_len, b, e, keep_scores)
    return total


@dataclass(frozen=True)
class ActivationBytes:
    """Activation bytes per GPU for one micro-batch; integers.

    ``encoder_layer`` / ``decoder_layer`` are what one layer keeps until backward under
    the recompute policy (0 for an absent stack); ``layers`` is the sum over all layers;
    ``recompute_live`` is the one layer recomputed at a time under ``full``;
    ``embedding``, ``output`` and ``logits`` lie outside the layers.
    """

    recompute: str
    micro_batch: int
    seq_len: int
    source_len: int  # encoder length (== seq_len unless encoder-decoder)
    element_bytes: int
    encoder_layer: int
    decoder_layer: int
    layers: int
    recompute_live: int
    embedding: int
    output: int
    logits: int
    total: int

    def to_dict(self) -> dict:
        return asdict(self)


def activation_bytes(
    spec: ModelSpec,
    *,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: str = "bf16",
    recompute: str = "none",
    source_len: int | None = None,
) -> ActivationBytes:
    """Activation memory of a training step (module docstring: Korthikanti et al. 2022,
    Table 2 and Sec. 4.3, generalised to the spec's shape).

    ``seq_len`` is the decoder (target) length, or the encoder length for an encoder-only
    model; ``source_len`` the encoder length of an encoder-decoder (default: seq_len).
    Both default to ``spec.context`` and may not exceed it.
    """
    check_spec(spec)
    b = check_whole("micro_batch", micro_batch, upper=10**7)
    s = check_seq_len(spec, "seq_len", seq_len, spec.context)
    e = ACTIVATION_BYTES[check_choice("training precision", precision, tuple(ACTIVATION_BYTES))]
    check_choice("recompute", recompute, RECOMPUTE)
    d = spec.d_model
    enc_dec = spec.family == "encoder-decoder"
    s_src = check_seq_len(spec, "source_len", source_len, s) if enc_dec else s
    s_enc = s_src if spec.has_encoder else 0  # encoder positions
    s_dec = s if spec.has_decoder else 0  # decoder positions
    keep = recompute == "none"
    cross = s_src if enc_dec else 0
    if recompute == "full":
        # Each layer keeps only its input (B, T, C); one layer is recomputed at a time,
        # with all its activations (scores included) alive during its backward.
        enc_layer = e * s_enc * b * d
        dec_layer = e * s_dec * b * d
        live = max(
            layer_bytes(spec, s_enc, b, e) if s_enc else 0,
            layer_bytes(spec, s_dec, b, e, source_len=cross) if s_dec else 0,
        )
    else:
        enc_layer = layer_bytes(spec, s_enc, b, e, keep) if s_enc else 0
        dec_layer = layer_bytes(spec, s_dec, b, e, keep, source_len=cross) if s_dec else 0
        live = 0
    layers = spec.n_encoder_layers * enc_layer + spec.n_decoder_layers * dec_layer
    embedding = b * d * (s_enc + s_dec)  # embedding dropout masks (B, T, C), 1 byte (Sec. 4.3)
    final_norms = e * b * d * (s_enc + s_dec) if spec.final_norm else 0
    output = final_norms
    predicts = spec.has_decoder or spec.mlm_head
    out_len = s_dec if spec.has_decoder else s_enc
    if enc_dec:
        output += e * b * d * s_enc  # encoder output, K/V input of every cross-attention
    if predicts:
        output += e * b * d * out_len  # output-projection input (B, T, C)
        if spec.mlm_head:
            output += 3 * e * b * d * out_len  # MLM transform: dense input, GELU input, norm input
    logits = (e + 4 * LOGITS_FP32_COPIES) * b * out_len * spec.vocab_size if predicts else 0
    total = layers + live + embedding + output + logits
    return ActivationBytes(
        recompute=recompute,
        micro_batch=b,
        seq_len=s,
        source_len=s_src,
        element_bytes=e,
        encoder_layer=enc_layer,
        decoder_layer=dec_layer,
        layers=layers,
        recompute_live=live,
        embedding=embedding,
        output=output,
        logits=logits,
        total=total,
    )
