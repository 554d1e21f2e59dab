"""Shared pieces of the side-by-side training benchmarks: a timed contender, the CPU's
bf16 matmul peak, and the machine line."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch

from lmforge.train.optim import build_optimizer


def matmul_peak(size: int = 2048, seconds: float = 2.0) -> float:
    """Best bf16 FLOP/s of a size^3 matmul over ``seconds``."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


class Side:
    """One contender: a model, the same AdamW settings for all, and a full training step.

    ``loss_of(model, batch) -> scalar loss`` runs the forward pass (under bf16 autocast)
    and the loss; the step adds backward, gradient clipping and the optimizer step.
    """

    def __init__(self, name: str, model: torch.nn.Module, loss_of: Callable, compile_model: bool = False):
        self.name = name
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        self.forward = torch.compile(model) if compile_model else model
        self.loss_of = loss_of

    def step(self, batch) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = self.loss_of(self.forward, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def timed(side: Side, batches: list, tokens_per_batch: int) -> float:
    """Tokens per second over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        side.step(batch)
    return tokens_per_batch * len(batches) / (time.perf_counter() - start)


def alternate(sides: list[Side], batches: list, tokens_per_batch: int, repeats: int) -> dict[str, list[float]]:
    """Warm up each side, then time them in turn ``repeats`` times."""
    for side in sides:
        for batch in batches[:2]:
            side.step(batch)
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    for _ in range(repeats):
        for side in sides:
            rates[side.name].append(timed(side, batches, tokens_per_batch))
    return rates
