"""Which llama.cpp architecture a ModelSpec is, its hyperparameters, and its tensors in GGUF names.

Two of llama.cpp's architectures cover lmforge's decoder layouts exactly:

- ``llama`` (Touvron et al. 2023a, Sec. 2.2; GQA as in Llama 2): rotary positions, RMSNorm,
  SwiGLU, no biases; tied or untied head (llama.cpp reuses ``token_embd.weight`` when
  ``output.weight`` is absent); any head_dim (``llama.attention.key_length``);
- ``gpt2`` (Radford et al. 2019): learned positions, LayerNorm with shift, GELU (tanh
  approximation, as ggml's ``gelu``), fused ``attn_qkv``; llama.cpp requires every bias, so
  a spec without biases gets zero biases, which compute the same thing.

Every other combination is refused with a UserError naming the field (`check_spec`): an
approximate export would load and then compute something else. Tensor names and metadata
keys come from gguf-py (``gguf.TENSOR_NAMES``, ``gguf.Keys`` through ``GGUFWriter.add_*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from lmforge.errors import UserError
from lmforge.models.layers import NORM_EPS, ROTARY_BASE
from lmforge.plan.specs import ModelSpec

ARCHS = ("llama", "gpt2")
_FIX = ("llama.cpp's llama architecture takes rotary + rmsnorm + swiglu without biases, its gpt2 architecture "
        "learned positions + layernorm + gelu; export this run with --to hf instead")


def norm_eps(spec: ModelSpec) -> float:
    return float(getattr(spec, "norm_eps", NORM_EPS))


def rotary_base(spec: ModelSpec) -> float:
    return float(getattr(spec, "rotary_base", ROTARY_BASE))


def _refuse(arch: str, field: str, value: object, need: str) -> UserError:
    return UserError(f"llama.cpp's {arch} architecture cannot express {field}={value} (it needs {need})",
                     f"{field}={value}", _FIX)


def check_spec(spec: ModelSpec) -> str:
    """The llama.cpp architecture (``"llama"`` or ``"gpt2"``) that computes exactly what ``spec``
    computes; a UserError naming the first field it cannot express."""
    if spec.family != "decoder":
        raise UserError(f"GGUF export is for decoder models; this run is an {spec.family} model",
                        spec.family, "export it with --to hf")
    if spec.positions == "rotary":
        arch = "llama"
        needs = {"norm": "rmsnorm", "mlp": "swiglu", "bias": False}
    elif spec.positions == "learned":
        arch = "gpt2"
        needs = {"norm": "layernorm", "mlp": "gelu", "position_offset": 0}
    else:
        raise UserError(f"llama.cpp's llama and gpt2 architectures cannot express positions={spec.positions} "
                        "(llama: rotary, gpt2: learned)", f"positions={spec.positions}", _FIX)
    needs.update(final_norm=True, embedding_norm=False, n_token_types=0)
    for field, need in needs.items():
        value = getattr(spec, field)
        if value != need:
            raise _refuse(arch, field, value, f"{field}={need}")
    if arch == "gpt2" and spec.d_head * spec.n_heads != spec.d_model:
        raise _refuse(arch, "head_dim", spec.d_head, f"n_heads x head_dim = d_model = {spec.d_model}")
    if arch == "llama" and spec.d_head % 2:
        raise _refuse(arch, "head_dim", spec.d_head, "an even head_dim for rotary pairs")
    return arch


def add_hparams(writer, spec: ModelSpec, arch: str) -> None:
    """The architecture's hyperparameters as ``{arch}.*`` metadata (gguf-py's key constants)."""
    writer.add_context_length(spec.context)
    writer.add_embedding_length(spec.d_model)
    writer.add_block_count(spec.n_decoder_layers)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.n_heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_vocab_size(spec.vocab_size)
    if arch == "llama":
        writer.add_layer_norm_rms_eps(norm_eps(spec))
        writer.add_key_length(spec.d_head)
        writer.add_value_length(spec.d_head)
        writer.add_rope_dimension_count(spec.d_head)  # lmforge rotates the whole head
        writer.add_rope_freq_base(rotary_base(spec))
    else:
        writer.add_layer_norm_eps(norm_eps(spec))


def permute_rotary_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q or k projection rows from lmforge's "rotate half" rotary layout to llama.cpp's interleaved one.

    lmforge (GPT-NeoX / Hugging Face Llama layout, `lmforge.models.layers.apply_rotary`)
    rotates, within each head of size k, the pair of components (i, i + k/2) by the angle
    m * theta_i, theta_i = base^(-2i/k). llama.cpp's ``llama`` architecture (``LLAMA_ROPE_TYPE_NORM``,
    the GPT-J / original Meta layout) rotates the adjacent pair (2i, 2i + 1) by the same
    angle. Reordering each head's output rows so that row 2i + j of the file is lmforge's row
    j * k/2 + i (j in {0, 1}, i < k/2)::

        W_gguf[head * k + 2 i + j] = W_lmforge[head * k + j * k/2 + i]

    puts each of lmforge's rotary pairs where llama.cpp rotates it. q and k of one head get
    the same permutation P, so the scores (P q)^T (P k) = q^T k are unchanged; v and the
    output projection keep their order. In array terms this is
    ``w.reshape(n, 2, k/2, d).swapaxes(1, 2).reshape(n*k, d)``, the permutation llama.cpp's
    ``convert_hf_to_gguf.py`` applies to Hugging Face Llama checkpoints (``LlamaModel.permute``:
    q with ``n_head``, k with ``n_head_kv``), which use the same rotate-half layout as lmforge.
    ``w``: (n_heads * k, d) -> (n_heads * k, d).
    """
    rows, d = w.shape
    k = rows // n_heads
    return w.reshape(n_heads, 2, k // 2, d).transpose(1, 2).reshape(rows, d)


def unpermute_rotary_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `permute_rotary_rows`: llama.cpp's interleaved rows back to lmforge's."""
    rows, d = w.shape
    k = rows // n_heads
    return w.reshape(n_heads, k // 2, 2, d).transpose(1, 2).reshape(rows, d)


@dataclass(frozen=True)
class GGUFTensor:
    name: str  # GGUF name, e.g. blk.0.attn_q.weight
    data: np.ndarray  # fp32, shaped (out, in) for matrices, as llama.cpp's ne = (in, out)
    sources: tuple[str, ...]  # the lmforge tensors it comes from


def _names():
    from gguf import MODEL_TENSOR, TENSOR_NAMES

    return MODEL_TENSOR, TENSOR_NAMES


def gguf_tensors(spec: ModelSpec, weights: Mapping[str, torch.Tensor], arch: str) -> tuple[list[GGUFTensor], list[str]]:
    """The GGUF tensors of ``weights`` (lmforge name -> fp32) for ``arch``, and notes on what changed.

    Every lmforge tensor is used (tied names count once); one left over is a bug, not a user error."""
    T, NAMES = _names()
    out: list[GGUFTensor] = []
    used: set[str] = set()
    notes: list[str] = []

    def put(kind, suffix: str, tensor: torch.Tensor, *sources: str, bid: int | None = None) -> None:
        base = NAMES[kind].format(bid=bid) if bid is not None else NAMES[kind]
        out.append(GGUFTensor(f"{base}.{suffix}", tensor.detach().to(torch.float32).contiguous().numpy(), sources))
        used.update(sources)

    def w(name: str) -> torch.Tensor:
        return weights[name]

    h, g, k, f = spec.n_heads, spec.kv_heads, spec.d_head, spec.ffn
    put(T.TOKEN_EMBD, "weight", w("tok_emb.weight"), "tok_emb.weight")
    if arch == "gpt2":
        put(T.POS_EMBD, "weight", w("pos_emb.weight"), "pos_emb.weight")
    for i in range(spec.n_decoder_layers):
        p = f"blocks.{i}."
        put(T.ATTN_NORM, "weight", w(p + "norm1.weight"), p + "norm1.weight", bid=i)
        put(T.FFN_NORM, "weight", w(p + "norm2.weight"), p + "norm2.weight", bid=i)
        put(T.ATTN_OUT, "weight", w(p + "attn.proj.weight"), p + "attn.proj.weight", bid=i)
        put(T.FFN_DOWN, "weight", w(p + "mlp.proj.weight"), p + "mlp.proj.weight", bid=i)
        if arch == "llama":
            qkv = w(p + "attn.qkv.weight")  # (h*k + 2*g*k, d): rows [q | k | v]
            q, kk, v = qkv.split((h * k, g * k, g * k), dim=0)
            put(T.ATTN_Q, "weight", permute_rotary_rows(q, h), p + "attn.qkv.weight", bid=i)
            put(T.ATTN_K, "weight", permute_rotary_rows(kk, g), p + "attn.qkv.weight", bid=i)
            put(T.ATTN_V, "weight", v, p + "attn.qkv.weight", bid=i)
            gate, up = w(p + "mlp.fc.weight").split((f, f), dim=0)  # (2f, d): rows [gate | up]
            put(T.FFN_GATE, "weight", gate, p + "mlp.fc.weight", bid=i)
            put(T.FFN_UP, "weight", up, p + "mlp.fc.weight", bid=i)
        else:
            put(T.ATTN_QKV, "weight", w(p + "attn.qkv.weight"), p + "attn.qkv.weight", bid=i)
            put(T.FFN_UP, "weight", w(p + "mlp.fc.weight"), p + "mlp.fc.weight", bid=i)
            put(T.ATTN_NORM, "bias", w(p + "norm1.bias"), p + "norm1.bias", bid=i)
            put(T.FFN_NORM, "bias", w(p + "norm2.bias"), p + "norm2.bias", bid=i)
            for kind, name, rows in ((T.ATTN_QKV, "attn.qkv", (h + 2 * g) * k), (T.ATTN_OUT, "attn.proj", spec.d_model),
                                     (T.FFN_UP, "mlp.fc", f), (T.FFN_DOWN, "mlp.proj", spec.d_model)):
                if spec.bias:
                    put(kind, "bias", w(p + name + ".bias"), p + name + ".bias", bid=i)
                else:
                    put(kind, "bias", torch.zeros(rows), bid=i)
    put(T.OUTPUT_NORM, "weight", w("final_norm.weight"), "final_norm.weight")
    if arch == "gpt2":
        put(T.OUTPUT_NORM, "bias", w("final_norm.bias"), "final_norm.bias")
    if spec.tied_embeddings:
        used.add("lm_head.weight")
        notes.append("the output head is tied to the token embedding: output.weight is left out and llama.cpp "
                     "reuses token_embd.weight")
    else:
        put(T.OUTPUT, "weight", w("lm_head.weight"), "lm_head.weight")
    if arch == "llama":
        notes.append("q and k rows permuted per head from rotate-half to llama.cpp's interleaved rotary layout")
    if arch == "gpt2" and not spec.bias:
        notes.append("the model has no biases; zero biases are written (llama.cpp's gpt2 architecture requires them)")
    left = sorted(set(weights) - used)
    if left:
        raise ValueError(f"GGUF export left lmforge tensors unmapped: {left}")
    return out, notes
