"""Measure a model's training speed on this machine before a run, to size the run.

A time-limited run needs its token budget up front so that the learning-rate schedule
finishes (``train.max_tokens``); a few timed training steps of the same model give it.
"""

from __future__ import annotations

import time

import torch

from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.train.optim import build_optimizer


def training_tokens_per_second(
    spec: ModelSpec, *, seq_len: int, micro_batch: int, device: torch.device | str = "cpu", steps: int = 4,
    precision: str = "bf16",
) -> float:
    """Best tokens/s of ``steps`` full training steps (after one warm-up step)."""
    device = torch.device(device)
    model = build_model(spec).to(device)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    batch = torch.randint(0, spec.vocab_size, (micro_batch, seq_len + 1), device=device)
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    best = float("inf")
    for index in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            logits = model(batch[:, :-1])  # (micro_batch, seq_len, V)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first step warms up
            best = min(best, time.perf_counter() - start)
    return micro_batch * seq_len / best
