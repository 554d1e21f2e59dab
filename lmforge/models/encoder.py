"""`EncoderLM` (BERT-style masked language model) and `TransformerStack`, the stack it
shares with the encoder-decoder models.

BERT (Devlin et al. 2019, Sec. 3 and the reference code; Hugging Face ``BertForMaskedLM``):
token + learned position + token-type embeddings, embedding LayerNorm, post-LN layers with
bidirectional attention (padding keys masked), and the MLM head: dense d->d, activation,
LayerNorm, then a vocabulary projection tied to the token embedding plus an output bias.
The pooler (dense d->d + tanh on the first token, Sec. 3, "[CLS]") exists when
``spec.pooler`` says so.

Layout choices read from the spec (no extra field needed): a stack is pre-norm when it has
a final norm (T5) and post-norm otherwise (BERT, BART, the original Transformer, which end
in a norm already); ``positions == "relative"`` means T5's bucketed bias (see
`lmforge.models.relative_position`), unscaled q.k and T5's initialisation.

Deviation: the activation is the tanh approximation of GELU used everywhere in lmforge (as
the original BERT TensorFlow code did); Hugging Face's BERT / BART configs say "gelu" (erf),
so an export must write ``gelu_new`` (the largest difference is below 1e-3 per activation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.errors import UserError
from lmforge.models.kv_cache import KVCache
from lmforge.models.layers import (
    _ACTIVATIONS,
    Attention,
    RMSNorm,
    TransformerLayer,
    additive_mask,
    attention_dtype,
    init_weights,
    make_norm,
    rotary_cos_sin,
    tie_output,
)
from lmforge.models.relative_position import RelativePositionBias
from lmforge.plan.specs import ModelSpec

IGNORE_INDEX = -100  # labels equal to this add nothing to the loss
BERT_STD = 0.02  # Devlin et al. 2019 reference code: initializer_range 0.02


def is_t5_style(spec: ModelSpec) -> bool:
    """T5 (Raffel et al. 2020): relative position buckets, q.k unscaled, T5 initialisation."""
    return spec.positions == "relative"


def check_ids(name: str, ids: torch.Tensor, context: int) -> tuple[int, int]:
    """(B, T) of a token-id tensor; UserError when it is not 2-D or longer than ``context``."""
    if ids.dim() != 2:
        raise UserError(f"{name} must be a (batch, time) tensor", tuple(ids.shape), f"pass {name} of shape (B, T)")
    B, T = ids.shape
    if T > context:
        raise UserError(
            f"{name}: sequence is longer than the model's context",
            T,
            f"feed at most {context} tokens (crop or split the sequence, or build with a longer context)",
        )
    return B, T


def check_mask(name: str, mask: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor | None:
    """A (B, T) padding mask as bool (True = real token), or None; UserError on a shape mismatch."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise UserError(
            f"{name} must have the shape of its token ids", tuple(mask.shape), f"pass a {tuple(shape)} mask"
        )
    return mask.bool()


def token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy in fp32 over (B, T, V) logits and (B, T) labels (-100 = no loss); "none" -> (B, T)."""
    B, T, V = logits.shape
    loss = F.cross_entropy(
        logits.float().reshape(B * T, V), labels.reshape(B * T), ignore_index=IGNORE_INDEX, reduction=reduction
    )
    return loss.view(B, T) if reduction == "none" else loss


class TransformerStack(nn.Module):
    """One stack of an encoder or an encoder-decoder: positions, embedding norm, layers, final norm.

    The token embedding lives in the model (shared between stacks); `forward` takes embedded
    tokens. ``decoder=True``: causal self-attention, cross-attention to a memory and
    unidirectional relative buckets. Holds per stack what ``param_counts`` counts per stack:
    a learned position table of ``context + position_offset`` rows, a relative bias table
    (``relative_buckets x n_heads``, used by every layer, Raffel et al. 2020, Sec. 2.1),
    the embedding norm and the final norm when the spec has them.
    """

    def __init__(self, spec: ModelSpec, *, decoder: bool = False):
        super().__init__()
        self.spec, self.decoder = spec, decoder
        self.pre_norm = spec.final_norm
        n_layers = spec.n_decoder_layers if decoder else spec.n_encoder_layers
        learned = spec.positions == "learned"
        self.pos_emb = nn.Embedding(spec.context + spec.position_offset, spec.d_model) if learned else None
        self.rel_bias = (
            RelativePositionBias(spec.relative_buckets, spec.n_heads, bidirectional=not decoder)
            if is_t5_style(spec)
            else None
        )
        self.emb_norm = make_norm(spec) if spec.embedding_norm else nn.Identity()
        scale = 1.0 if is_t5_style(spec) else None
        self.blocks = nn.ModuleList(
            TransformerLayer(spec, cross=decoder, pre_norm=self.pre_norm, scale=scale) for _ in range(n_layers)
        )
        self.final_norm = make_norm(spec) if spec.final_norm else nn.Identity()
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """``x`` (B, T, C) embedded tokens; ``key_mask`` (B, T) bool padding mask (True = real);
        ``memory`` (B, S, C) and ``memory_mask`` (B, S) bool for a decoder stack. -> (B, T, C).

        ``cache`` (decoder stack, `KVCache` with cross slots): ``x`` continues the ``cache.length``
        cached positions (learned positions, rotary angles and relative buckets start there),
        ``key_mask`` then covers (B, cache.length + T); cross-attention keys/values are computed
        from ``memory`` on the first call and reused."""
        T = x.shape[1]
        past = cache.length if cache is not None else 0
        pos = torch.arange(past, past + T, device=x.device)  # (T,)
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos + self.spec.position_offset)  # (B, T, C)
        x = self.emb_norm(x)
        dtype = attention_dtype(x)
        bias = self.rel_bias(T, past + T, past) if self.rel_bias is not None else None  # (1, h, T, past + T)
        mask = additive_mask(  # (B|1, h|1, T, past + T) | None
            key_mask, T, causal=self.decoder, bias=bias, dtype=dtype, k_len=past + T, device=x.device
        )
        is_causal = self.decoder and mask is None and past == 0
        cross_mask = None
        if memory is not None and memory_mask is not None:
            cross_mask = additive_mask(memory_mask, 1, dtype=dtype)  # (B, 1, 1, S)
        rope = None
        if self.spec.positions == "rotary":
            rope = rotary_cos_sin(pos, self.spec.d_head, base=self.spec.rotary_base, dtype=x.dtype)  # 2 x (T, k)
        for i, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, mask, memory, cross_mask, rope, is_causal, cache.self_attn[i], cache.cross[i])
            elif self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, memory, cross_mask, rope, is_causal, use_reentrant=False)
            else:
                x = block(x, mask, memory, cross_mask, rope, is_causal)
        return self.final_norm(x)


def init_t5(module: nn.Module, spec: ModelSpec) -> None:
    """T5's initialisation (Mesh TensorFlow; Hugging Face ``T5PreTrainedModel._init_weights``,
    factor 1): token embedding and untied head N(0, 1); q N(0, (d k)^-1/2), k and v
    N(0, d^-1/2), attention out N(0, (h k)^-1/2); MLP in N(0, d^-1/2), out N(0, f^-1/2);
    relative bias N(0, d^-1/2); norms 1; biases (if any) 0. With q.k unscaled this gives
    attention logits of unit scale."""
    d, h, g, k, f = spec.d_model, spec.n_heads, spec.kv_heads, spec.d_head, spec.ffn
    done: set[int] = set()  # Linear modules already initialised through their parent

    def normal(linear: nn.Linear, std: float) -> None:
        nn.init.normal_(linear.weight, std=std)
        done.add(id(linear))

    for sub in module.modules():
        if isinstance(sub, Attention):
            if sub.cross:
                normal(sub.q, (d * k) ** -0.5)
                normal(sub.kv, d**-0.5)
            else:
                q, kv = sub.qkv.weight.split((h * k, 2 * g * k), dim=0)
                with torch.no_grad():
                    q.normal_(std=(d * k) ** -0.5)
                    kv.normal_(std=d**-0.5)
                done.add(id(sub.qkv))
            normal(sub.proj, (h * k) ** -0.5)
        elif isinstance(sub, TransformerLayer):
            normal(sub.mlp.fc, d**-0.5)
            normal(sub.mlp.proj, f**-0.5)
        elif isinstance(sub, RelativePositionBias):
            sub.reset_parameters(std=d**-0.5)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=1.0)
        elif isinstance(sub, nn.Linear) and id(sub) not in done:
            # an untied output head N(0, 1); other dense layers (MLM transform, pooler) N(0, d^-1/2)
            normal(sub, 1.0 if sub.out_features == spec.vocab_size else d**-0.5)
        elif isinstance(sub, (nn.LayerNorm, RMSNorm)):
            sub.reset_parameters()
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)


def init_model(model: nn.Module, spec: ModelSpec) -> None:
    """T5 initialisation for T5-style specs, else BERT's N(0, 0.02) without residual scaling
    (post-LN) or GPT-2's with it (pre-norm); relative tables N(0, 0.02) there."""
    if is_t5_style(spec):
        init_t5(model, spec)
        return
    init_weights(model, max(spec.n_layers, 1), BERT_STD, scale_residual=spec.final_norm)
    for sub in model.modules():
        if isinstance(sub, RelativePositionBias):
            sub.reset_parameters()


class MLMHead(nn.Module):
    """BERT's masked-LM head (Devlin et al. 2019; HF ``BertLMPredictionHead``): dense d->d,
    activation, norm, then ``out`` = vocabulary projection (weight tied to the token
    embedding when the spec ties) with an output bias. Always has its biases
    (``param_counts``: d*d + d + norm + V)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.dense = nn.Linear(spec.d_model, spec.d_model)
        self.act = _ACTIVATIONS[spec.mlp]  # gated kinds use their gate's activation
        self.norm = make_norm(spec)
        self.out = nn.Linear(spec.d_model, spec.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, S, C) -> (B, S, V)
        return self.out(self.norm(self.act(self.dense(hidden))))


class EncoderLM(nn.Module):
    """Bidirectional encoder with an MLM head (BERT; any ModelSpec with family="encoder").

    Attributes: ``spec``; ``tok_emb``; ``type_emb`` (token types, or None); ``encoder``
    (`TransformerStack`); ``blocks`` (its nn.ModuleList of layers, the unit to wrap for
    FSDP / checkpointing); ``head`` (`MLMHead`, or None: then logits come from the tied
    embedding); ``pooler`` (nn.Linear or None); ``gradient_checkpointing`` (bool).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.tok_emb = nn.Embedding(spec.vocab_size, d)
        self.type_emb = nn.Embedding(spec.n_token_types, d) if spec.n_token_types else None
        self.encoder = TransformerStack(spec)
        self.head = MLMHead(spec) if spec.mlm_head else None
        self.pooler = nn.Linear(d, d) if spec.pooler else None
        self.init_weights()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.encoder.blocks

    @property
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.encoder.gradient_checkpointing = bool(value)

    # ---- set-up ------------------------------------------------------------------------
    def tie_weights(self) -> None:
        """Share the token embedding with the MLM head's output projection (when tied).
        Call again after ``to_empty``."""
        if self.head is not None and self.spec.tied_embeddings:
            tie_output(self.tok_emb, self.head.out)

    def init_weights(self) -> None:
        """BERT initialisation (or T5's for relative positions), MLM output bias 0; re-ties."""
        self.tie_weights()
        init_model(self, self.spec)
        self.tie_weights()

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, shared tensors once (== ``param_counts(spec).total``); ``non_embedding``
        leaves out token, position and token-type tables and an untied output projection."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            for table in (self.encoder.pos_emb, self.type_emb):
                total -= table.weight.numel() if table is not None else 0
            if self.head is not None and self.head.out.weight is not self.tok_emb.weight:
                total -= self.head.out.weight.numel()
        return total

    # ---- forward ------------------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, S, C) of the last layer for ``input_ids`` (B, S); ``attention_mask``
        (B, S) bool (True = real token; padding keys are masked); ``token_type_ids`` (B, S)
        (default all 0, as BERT). UserError when S exceeds ``spec.context``."""
        B, S = check_ids("input_ids", input_ids, self.spec.context)
        key_mask = check_mask("attention_mask", attention_mask, (B, S))
        x = self.tok_emb(input_ids)  # (B, S, C)
        if token_type_ids is not None and self.type_emb is None:
            raise UserError("this model has no token types", "token_type_ids given", "build with n_token_types > 0")
        if self.type_emb is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.type_emb(token_type_ids)
        return self.encoder(x, key_mask)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (B, S, V) from hidden states (B, S, C)."""
        if self.head is not None:
            return self.head(hidden)
        return F.linear(hidden, self.tok_emb.weight)  # tied embedding, no head (checked at build)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooled output (B, C): tanh(dense(hidden of the first token))."""
        if self.pooler is None:
            raise UserError("this model has no pooler", self.spec.name, "build with pooler=True")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """MLM logits (B, S, V); with ``labels`` (B, S) (-100 = no loss) also the fp32
        cross-entropy: "mean" (over counted labels), "sum", or "none" (B, S).

        ``positions`` (B, S) bool: the head runs on those positions only and the logits
        are (count, V), in row-major order (masked LM training scores ~15% of tokens;
        one call through ``forward`` keeps wrappers such as DDP and FSDP in the loop)."""
        hidden = self.encode(input_ids, attention_mask, token_type_ids)  # (B, S, C)
        if positions is not None:
            return self.logits(hidden[positions])  # (count, V)
        logits = self.logits(hidden)
        if labels is None:
            return logits
        return logits, token_loss(logits, labels, reduction)


def output_scale(spec: ModelSpec) -> float:
    """T5 v1.0 scales the decoder output by d_model^-1/2 before the tied projection (Mesh
    TensorFlow; HF ``T5ForConditionalGeneration``); 1 otherwise."""
    return 1 / math.sqrt(spec.d_model) if is_t5_style(spec) and spec.tied_embeddings else 1.0
