"""`EncoderDecoderLM`: an encoder, and a decoder with causal self-attention and cross-attention
to the encoder's output, sharing one token embedding (T5, BART; Vaswani et al. 2017, Sec. 3).

What the spec selects:
- T5 (Raffel et al. 2020, Sec. 2.1; ``positions == "relative"``): pre-norm RMSNorm layers,
  ReLU MLP, no biases, a relative position bias per stack (bidirectional buckets in the
  encoder, unidirectional in the decoder; none in cross-attention), q.k not scaled by
  1/sqrt(head_dim) (folded into the initialisation), a final norm per stack, and the tied
  output projection applied to the decoder output scaled by d_model^-1/2 (T5 v1.0).
- BART (Lewis et al. 2020, Sec. 2.1; ``positions == "learned"``, no final norm): post-LN
  layers, learned positions per stack with ``position_offset`` unused rows first (BART: 2),
  an embedding LayerNorm per stack, GELU, biases; the tied output projection. BART's
  ``final_logits_bias`` is a zero buffer in Hugging Face, not a parameter, and is left out.
- rotary positions work too (self-attention only).

Padding: ``attention_mask`` (B, S) masks padded encoder keys in the encoder and padded
memory positions in cross-attention; ``decoder_attention_mask`` (B, T) masks padded
decoder keys (on top of causality).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.models.encoder import (
    TransformerStack,
    check_ids,
    check_mask,
    init_model,
    output_scale,
    token_loss,
)
from lmforge.models.kv_cache import KVCache, check_total_mask
from lmforge.models.layers import tie_output
from lmforge.plan.specs import ModelSpec


class EncoderDecoderLM(nn.Module):
    """Encoder-decoder language model built from a ModelSpec with family="encoder-decoder".

    Attributes: ``spec``; ``tok_emb`` (shared by both stacks and, when tied, the output);
    ``encoder`` and ``decoder`` (`TransformerStack`, each with ``.blocks``); ``blocks``
    (an nn.ModuleList view of encoder blocks then decoder blocks, for FSDP wrapping:
    replacing an entry of the view does not replace it in the model); ``lm_head``;
    ``gradient_checkpointing`` (bool, applies to both stacks).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.d_model)
        self.encoder = TransformerStack(spec)
        self.decoder = TransformerStack(spec, decoder=True)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        self.out_scale = output_scale(spec)
        self.init_weights()

    @property
    def blocks(self) -> nn.ModuleList:
        return nn.ModuleList([*self.encoder.blocks, *self.decoder.blocks])

    @property
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing and self.decoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = bool(value)

    # ---- set-up ------------------------------------------------------------------------
    def tie_weights(self) -> None:
        """Share the token embedding with the output head (when tied); again after ``to_empty``."""
        if self.spec.tied_embeddings:
            tie_output(self.tok_emb, self.lm_head)

    def init_weights(self) -> None:
        """T5's initialisation for relative positions, else BART's N(0, 0.02); re-ties the head."""
        self.tie_weights()
        init_model(self, self.spec)
        self.tie_weights()

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, shared tensors once (== ``param_counts(spec).total``); ``non_embedding``
        leaves out the token embedding, both position tables and an untied head."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            for stack in (self.encoder, self.decoder):
                total -= stack.pos_emb.weight.numel() if stack.pos_emb is not None else 0
            if self.lm_head.weight is not self.tok_emb.weight:
                total -= self.lm_head.weight.numel()
        return total

    def new_cache(self) -> KVCache:
        """An empty decoder `KVCache` (self-attention buffers of ``spec.context`` positions per
        layer, and cross-attention slots filled from the memory on the first `decode`)."""
        return KVCache(len(self.decoder.blocks), self.spec.context, cross=True)

    # ---- forward ------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ("memory") (B, S, C) for ``input_ids`` (B, S); ``attention_mask`` (B, S)
        bool, True = real token. UserError when S exceeds ``spec.context``."""
        B, S = check_ids("input_ids", input_ids, self.spec.context)
        key_mask = check_mask("attention_mask", attention_mask, (B, S))
        return self.encoder(self.tok_emb(input_ids), key_mask)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) of the next target token at each of ``decoder_input_ids`` (B, T),
        reading ``memory`` (B, S, C) with padded positions masked by ``memory_mask`` (B, S).

        ``cache`` (`KVCache` from `new_cache`): incremental decoding; ``decoder_input_ids``
        continue the cached positions, logits are for the new ones, the cross-attention
        keys/values come from ``memory`` once (pass the same memory and mask every call);
        ``decoder_attention_mask`` then covers (B, cache.length + T)."""
        past = cache.length if cache is not None else 0
        B, T = check_ids("decoder_input_ids", decoder_input_ids, self.spec.context - past)
        if memory.dim() != 3 or memory.shape[0] != B:
            raise UserError(
                "memory must be the encoder output (B, S, C) for the same batch",
                tuple(memory.shape),
                "pass model.encode(input_ids, attention_mask)",
            )
        memory_mask = check_mask("memory_mask", memory_mask, tuple(memory.shape[:2]))
        if cache is None:
            key_mask = check_mask("decoder_attention_mask", decoder_attention_mask, (B, T))
        else:
            key_mask = check_total_mask(decoder_attention_mask, B, past + T)  # (B, past + T) | None
        x = self.decoder(self.tok_emb(decoder_input_ids), key_mask, memory, memory_mask, cache)  # (B, T, C)
        if self.out_scale != 1.0:
            x = x * self.out_scale
        return self.lm_head(x)  # (B, T, V)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) for the targets after ``decoder_input_ids`` (teacher forcing); with
        ``labels`` (B, T) (-100 = no loss) also the fp32 cross-entropy ("mean", "sum" or
        "none" -> (B, T))."""
        if decoder_input_ids is None:
            raise UserError(
                "an encoder-decoder model needs decoder_input_ids",
                None,
                "pass the targets shifted right, starting with the decoder start token",
            )
        memory = self.encode(input_ids, attention_mask)  # (B, S, C)
        logits = self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask)
        if labels is None:
            return logits
        return logits, token_loss(logits, labels, reduction)
