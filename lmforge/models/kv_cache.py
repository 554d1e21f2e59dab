"""Key/value cache for incremental decoding: prefill the prompt in one pass, then one token per step.

At step t a causal layer's keys and values for positions < t do not change, so they are kept
and only the new position's are computed (the "incremental state" of Vaswani et al. 2017's
tensor2tensor decoder; Pope et al. 2022, "Efficiently Scaling Transformer Inference", Sec. 2).
Each self-attention layer holds a buffer (B, g, max_len, k) for keys and one for values,
allocated on first use in the dtype and device of the keys, filled to ``length``. For an
encoder-decoder, each decoder layer also holds the cross-attention keys and values, computed
once from the encoder output on the first call and reused afterwards.

Positions continue from ``length`` (learned tables, rotary angles, T5 buckets). For a batch
of left-padded prompts, ``positions_from_mask`` gives each row the positions it would have
alone (the ``cumsum(mask) - 1`` of Hugging Face's ``generate``).

Meant for inference (under ``torch.no_grad``): the buffers are written in place.
"""

from __future__ import annotations

import torch

from lmforge.errors import UserError


class LayerKV:
    """Keys and values of one attention layer, (B, g, length, k) each, in a buffer of ``max_len``.

    ``max_len=None``: the buffer is exactly as long as the first chunk stored (cross-attention,
    which is written once)."""

    def __init__(self, max_len: int | None):
        self.max_len = max_len
        self.keys: torch.Tensor | None = None  # (B, g, max_len, k)
        self.values: torch.Tensor | None = None  # (B, g, max_len, k)
        self.length = 0

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``keys``/``values`` (B, g, t, k); return all stored so far, (B, g, length + t, k) each."""
        B, g, t, k = keys.shape
        if self.keys is None:
            size = t if self.max_len is None else self.max_len
            self.keys = keys.new_empty(B, g, size, k)
            self.values = values.new_empty(B, g, size, k)
        if self.keys.shape[0] != B:
            raise UserError("the batch size changed during decoding", B, f"keep the batch of {self.keys.shape[0]}")
        end = self.length + t
        if end > self.keys.shape[2]:
            raise UserError(
                "the KV cache is full", end, f"decode at most {self.keys.shape[2]} positions (the model's context)"
            )
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.get()

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored keys and values, (B, g, length, k) each (views of the buffers)."""
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (n,) long, in that order (beam search)."""
        if self.keys is not None:
            self.keys, self.values = self.keys.index_select(0, index), self.values.index_select(0, index)


class KVCache:
    """The cache of a whole decoder: ``self_attn[i]`` (and ``cross[i]`` for an encoder-decoder) per layer.

    Make one per generation with ``model.new_cache()`` (or ``KVCache(n_layers, context)``) and
    pass it to every call: ``DecoderLM(idx_new, cache=cache)``, ``EncoderDecoderLM.decode(...,
    cache=cache)``. ``length``: positions stored so far (padding included).
    """

    def __init__(self, n_layers: int, max_len: int, *, cross: bool = False):
        self.max_len = max_len
        self.self_attn = [LayerKV(max_len) for _ in range(n_layers)]
        self.cross = [LayerKV(None) for _ in range(n_layers)] if cross else None

    @property
    def length(self) -> int:
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (n,) long, in that order, in every layer (beam search)."""
        for layer in [*self.self_attn, *(self.cross or [])]:
            layer.reorder(index)


def positions_from_mask(mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """Per-row positions (B, q_len) of the last ``q_len`` columns of a (B, T_total) bool mask.

    ``cumsum(mask) - 1``: a left-padded row gets the positions it would have alone; padding
    columns get 0 (their outputs are never read, and they are masked as keys)."""
    pos = mask.long().cumsum(-1) - 1  # (B, T_total)
    return pos[:, -q_len:].clamp(min=0)  # (B, q_len)


def check_total_mask(mask: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    """A (B, T_total) bool attention mask (past + new positions), or None; UserError on a wrong shape."""
    if mask is None:
        return None
    if tuple(mask.shape) != (batch, total):
        raise UserError(
            "attention_mask must cover the cached and the new positions",
            tuple(mask.shape),
            f"pass a ({batch}, {total}) mask (True = real token)",
        )
    return mask.bool()
