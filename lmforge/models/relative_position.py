"""T5 relative position buckets and the learned per-head attention bias they index.

Raffel et al. 2020 (T5), Sec. 2.1: "we use a simplified form of position embeddings where
each 'embedding' is simply a scalar that is added to the corresponding logit used for
computing the attention weights ... we use 32 embeddings for all of our models with ranges
that increase in size logarithmically up to an offset of 128 beyond which we assign all
relative positions to the same embedding." Each stack has one table of
``num_buckets x n_heads`` scalars, computed once and shared by all layers of the stack.

The bucketing follows the reference code exactly (Mesh TensorFlow
``_relative_position_bucket``, as in Hugging Face ``T5Attention._relative_position_bucket``):
half the buckets hold exact offsets 0..max_exact-1, the other half offsets growing
logarithmically up to ``max_distance``; bidirectional (encoder) attention spends half of
the buckets on keys after the query, unidirectional (decoder) attention maps every
future key to bucket 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_DISTANCE = 128  # Raffel et al. 2020, Sec. 2.1: offsets beyond 128 share one bucket


def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = MAX_DISTANCE
) -> torch.Tensor:
    """Bucket index for each ``relative_position = key_position - query_position`` (any shape, long).

    Bidirectional: buckets [0, n/2) for keys at or before the query, [n/2, n) for keys
    after it. Unidirectional: keys after the query all land in bucket 0. Within a half of
    ``m`` buckets, offsets below ``m/2`` get their own bucket; larger offsets ``r`` get
    ``m/2 + floor(log(r / (m/2)) / log(max_distance / (m/2)) * (m - m/2))``, capped at m-1.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(relative_position.dtype) * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)  # >= 0: how far back the key is
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # float32 arithmetic as in the reference, so that boundary offsets land in the same bucket
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).to(relative_position.dtype)
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """Learned scalar per (bucket, head), added to the attention logits of one stack.

    ``weight``: (num_buckets, n_heads), as Hugging Face's ``relative_attention_bias``.
    ``forward(q_len, k_len, q_offset=0)`` -> (1, n_heads, q_len, k_len) in the table's dtype;
    the queries sit at positions ``q_offset .. q_offset + q_len - 1`` (after a KV cache).
    """

    def __init__(self, num_buckets: int, n_heads: int, *, bidirectional: bool, max_distance: int = MAX_DISTANCE):
        super().__init__()
        self.num_buckets, self.n_heads = num_buckets, n_heads
        self.bidirectional, self.max_distance = bidirectional, max_distance
        self.weight = nn.Parameter(torch.empty(num_buckets, n_heads))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=std)

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> torch.Tensor:
        device = self.weight.device
        query = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]  # (Tq, 1)
        key = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
        buckets = relative_position_bucket(
            key - query, bidirectional=self.bidirectional, num_buckets=self.num_buckets, max_distance=self.max_distance
        )  # (Tq, Tk)
        bias = self.weight[buckets]  # (Tq, Tk, h)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, h, Tq, Tk)

    def extra_repr(self) -> str:
        return f"buckets={self.num_buckets}, heads={self.n_heads}, bidirectional={self.bidirectional}"
