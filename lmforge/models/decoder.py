"""`DecoderLM`: a causal (decoder-only) transformer language model built from a ModelSpec.

Covers GPT-2 (Radford et al. 2019: learned positions, LayerNorm, GELU, biases, tied
embeddings), Llama (Touvron et al. 2023a, Sec. 2.2: rotary, RMSNorm, SwiGLU, no biases,
untied head; grouped-query attention as in Llama 2, Touvron et al. 2023b, Sec. 2.2), OPT
(learned positions with ``position_offset`` extra rows, ReLU), GPT-NeoX / Pythia (rotary
with LayerNorm and biases) and any mix of these that ``ModelSpec`` allows, plus BLOOM's
embedding norm (BigScience 2022, Sec. 3.2.3).

The model holds exactly ``param_counts(spec).total`` parameters and knows nothing about
distribution, precision policy, data or checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.errors import UserError
from lmforge.models.kv_cache import KVCache, check_total_mask, positions_from_mask
from lmforge.models.layers import (
    TransformerLayer,
    additive_mask,
    attention_dtype,
    init_weights,
    make_norm,
    rotary_cos_sin,
    tie_output,
)
from lmforge.plan.specs import ModelSpec

IGNORE_INDEX = -100  # targets equal to this add nothing to the loss


class DecoderLM(nn.Module):
    """Causal language model: embeddings -> pre-norm blocks -> final norm -> vocab logits.

    Attributes: ``spec``; ``blocks`` (nn.ModuleList of pre-norm `TransformerLayer`, the unit to wrap
    for FSDP / activation checkpointing); ``gradient_checkpointing`` (bool, default False:
    when True and gradients are enabled, each block is recomputed in backward through
    ``torch.utils.checkpoint`` with ``use_reentrant=False``).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.tok_emb = nn.Embedding(spec.vocab_size, d)
        self.pos_emb = nn.Embedding(spec.context + spec.position_offset, d) if spec.positions == "learned" else None
        self.emb_norm = make_norm(spec) if spec.embedding_norm else nn.Identity()
        self.blocks = nn.ModuleList(TransformerLayer(spec, pre_norm=True) for _ in range(spec.n_decoder_layers))
        self.final_norm = make_norm(spec) if spec.final_norm else nn.Identity()
        self.lm_head = nn.Linear(d, spec.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self.init_weights()

    # ---- set-up ------------------------------------------------------------------------
    def tie_weights(self) -> None:
        """Make the output head share the token embedding Parameter (when the spec ties).

        Call again after ``to_empty`` (which makes separate tensors of shared ones)."""
        if self.spec.tied_embeddings:
            tie_output(self.tok_emb, self.lm_head)

    def init_weights(self) -> None:
        """GPT-2 initialisation (see `lmforge.models.layers.init_weights`); re-ties the head.

        Usable after ``model.to_empty(device=...)`` on a model built on the meta device."""
        self.tie_weights()
        init_weights(self, self.spec.n_decoder_layers)
        self.tie_weights()

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, each shared tensor counted once (== ``param_counts(spec).total``).

        ``non_embedding``: leave out the token embedding, position table and an untied
        head, as Kaplan et al. (2020, Sec. 2.1) and ``param_counts(spec).non_embedding`` do.
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                total -= self.pos_emb.weight.numel()
            if self.lm_head.weight is not self.tok_emb.weight:
                total -= self.lm_head.weight.numel()
        return total

    def new_cache(self) -> KVCache:
        """An empty `KVCache` for one generation (buffers of ``spec.context`` positions per layer)."""
        return KVCache(len(self.blocks), self.spec.context)

    # ---- forward ------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) for token ids ``idx`` (B, T); with ``targets`` (B, T) also the
        cross-entropy in fp32 (``ignore_index=-100``): ``reduction="mean"`` a scalar
        (mean over counted targets), ``"sum"`` a scalar, ``"none"`` per token (B, T) in nats
        (0 where ignored). Raises UserError when T exceeds ``spec.context``.

        Incremental decoding (see `lmforge.models.kv_cache`): ``cache`` (`KVCache`, from
        `new_cache`) stores the keys/values of ``idx``, which continue the cached positions;
        logits are for the new positions only. ``attention_mask`` (B, cache length + T) bool,
        True = real token, for left-padded batches: padded keys are masked and each row's
        positions are ``cumsum(mask) - 1``, as if its prompt were alone.
        """
        if idx.dim() != 2:
            raise UserError("token ids must be a (batch, time) tensor", tuple(idx.shape), "pass idx of shape (B, T)")
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.spec.context:
            raise UserError(
                "sequence is longer than the model's context",
                past + T,
                f"feed at most {self.spec.context} tokens (crop or split the sequence, or build with a longer context)",
            )
        key_mask = check_total_mask(attention_mask, B, past + T)  # (B, past + T) | None
        x = self.tok_emb(idx)  # (B, T, C)
        if key_mask is not None:
            pos = positions_from_mask(key_mask, T)  # (B, T)
        else:
            pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos + self.spec.position_offset)  # (B, T, C)
        x = self.emb_norm(x)
        rope = None
        if self.spec.positions == "rotary":
            rope = rotary_cos_sin(pos, self.spec.d_head, base=self.spec.rotary_base, dtype=x.dtype)  # 2 x (T|B,T, k)
            if pos.dim() == 2:
                rope = tuple(t.unsqueeze(1) for t in rope)  # 2 x (B, 1, T, k): broadcast over heads
        mask = None
        if key_mask is not None or past:
            mask = additive_mask(  # (B|1, 1, T, past + T) | None
                key_mask, T, causal=True, dtype=attention_dtype(x), k_len=past + T, device=idx.device
            )
        is_causal = mask is None and past == 0  # else the mask (or one query after the cache) says it
        for i, block in enumerate(self.blocks):
            layer_cache = cache.self_attn[i] if cache is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled() and cache is None:
                x = checkpoint(block, x, mask, None, None, rope, is_causal, use_reentrant=False)
            else:
                x = block(x, mask, rope=rope, is_causal=is_causal, cache=layer_cache)
        x = self.final_norm(x)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=IGNORE_INDEX, reduction=reduction
        )
        if reduction == "none":
            loss = loss.view(B, T)
        return logits, loss
