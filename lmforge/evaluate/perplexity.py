"""Loss, perplexity and bits per byte of a causal LM over a token stream.

Bits per byte = total nats / total UTF-8 bytes / ln 2: the bytes are those of the
predicted tokens (special tokens such as eos count 0 bytes, their nats still count), so
the figure is comparable across tokenizers (Gao et al. 2020, The Pile, Sec. 5.1;
Radford et al. 2019 report the same for byte-level models). Perplexity = exp(loss).

The stream is cut into non-overlapping windows of ``seq_len`` inputs; every token after
the first is predicted exactly once, with up to ``seq_len - 1`` tokens of context.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EvalResult:
    """Totals over one source; the averages are derived."""

    source: str
    tokens: int  # predicted tokens
    nats: float  # summed cross-entropy
    bytes: int  # UTF-8 bytes of the predicted tokens

    @property
    def loss(self) -> float:
        """Mean cross-entropy, nats per token."""
        return self.nats / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else math.nan

    @property
    def bits_per_byte(self) -> float:
        return self.nats / self.bytes / math.log(2) if self.bytes else math.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


def combine(name: str, results: list[EvalResult]) -> EvalResult:
    """Token-weighted total of several sources."""
    return EvalResult(name, sum(r.tokens for r in results), sum(r.nats for r in results), sum(r.bytes for r in results))


@torch.inference_mode()
def evaluate_stream(
    model: torch.nn.Module,
    stream: np.ndarray,
    *,
    source: str,
    seq_len: int,
    token_bytes: torch.Tensor,
    batch_size: int = 8,
    max_tokens: int | None = None,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Evaluate ``model`` on the 1-D token ``stream`` (at most ``max_tokens`` predicted)."""
    device = torch.device(device)
    limit = len(stream) - 1 if max_tokens is None else min(len(stream) - 1, max_tokens)
    starts = list(range(0, max(limit, 0), seq_len))
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    byte_table = token_bytes.to(device)
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    try:
        for first in range(0, len(starts), batch_size):
            group = starts[first : first + batch_size]
            inputs = torch.zeros(len(group), seq_len, dtype=torch.long)  # (B, T)
            targets = torch.full((len(group), seq_len), -100, dtype=torch.long)  # (B, T), -100: not predicted
            for row, start in enumerate(group):
                width = min(seq_len, limit - start)  # only the last window may be short
                window = torch.from_numpy(np.asarray(stream[start : start + width + 1], dtype=np.int64))
                inputs[row, :width] = window[:-1]
                targets[row, :width] = window[1:]
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast:
                logits = model(inputs)  # (B, T, V)
            nats += float(F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum"))
            predicted = targets[targets >= 0]
            tokens += predicted.numel()
            n_bytes += int(byte_table[predicted].sum())
    finally:
        model.train(was_training)
    return EvalResult(source, tokens, nats, n_bytes)
