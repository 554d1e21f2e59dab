"""Validation: loss, perplexity and bits per byte of a model over a token stream.

Bits per byte = total nats / total UTF-8 bytes / ln 2: the bytes are those of the
predicted tokens (special tokens such as eos count 0 bytes, their nats still count), so
the figure is comparable across tokenizers (Gao et al. 2020, The Pile, Sec. 5.1;
Radford et al. 2019 report the same for byte-level models). Perplexity = exp(loss).

The stream is cut into non-overlapping windows of ``seq_len`` inputs; every token after
the first is predicted exactly once, with up to ``seq_len - 1`` tokens of context.

Masked-LM, span-corruption and infilling models are scored on their own objective over
the same windows, corrupted with a fixed seed (``evaluate_objective``): loss and
perplexity per target token, masked-token accuracy for MLM; bits per byte is left
undefined there (the targets are not a prediction of the text from its prefix).
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
    bytes: int  # UTF-8 bytes of the predicted tokens (0: bits per byte undefined)
    correct: int | None = None  # masked-token accuracy numerator (mlm)

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

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.tokens else self.correct / self.tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte,
                "accuracy": self.accuracy}


def combine(name: str, results: list[EvalResult]) -> EvalResult:
    """Token-weighted total of several sources."""
    correct = None if any(r.correct is None for r in results) else sum(r.correct for r in results)
    return EvalResult(name, sum(r.tokens for r in results), sum(r.nats for r in results), sum(r.bytes for r in results),
                      correct)


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


@torch.inference_mode()
def evaluate_objective(
    model: torch.nn.Module,
    stream: np.ndarray,
    objective,
    *,
    source: str,
    seq_len: int,
    batch_size: int = 8,
    max_tokens: int | None = None,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> EvalResult:
    """Score a non-causal ``objective`` (lmforge.train.objective.Objective) on windows of
    ``stream``; the corruption of batch k is seeded by (seed, k), the same every time."""
    device = torch.device(device)
    limit = len(stream) if max_tokens is None else min(len(stream), max_tokens)
    starts = list(range(0, limit - seq_len, seq_len))  # whole windows of seq_len + 1 tokens
    was_training = model.training
    model.eval()
    nats, tokens, correct = 0.0, 0, 0
    try:
        for index, first in enumerate(range(0, len(starts), batch_size)):
            group = starts[first : first + batch_size]
            windows = torch.from_numpy(np.stack([np.asarray(stream[s : s + seq_len + 1], dtype=np.int64)
                                                 for s in group])).to(device)  # (B, seq_len + 1)
            rng = np.random.default_rng([seed, index])

            def autocast() -> contextlib.AbstractContextManager:
                if autocast_dtype is None:
                    return contextlib.nullcontext()
                return torch.autocast(device.type, dtype=autocast_dtype)

            loss, count, right = objective.loss(model, windows, rng, autocast)
            nats += float(loss) * count
            tokens += count
            correct += right or 0
    finally:
        model.train(was_training)
    return EvalResult(source, tokens, nats, 0, correct if objective.name == "mlm" else None)
