"""Overfit one batch: the shared loop of the models' "can it learn at all" tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


def overfit(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], steps: int) -> tuple[float, float]:
    """AdamW (lr 3e-3, no decay) on ``loss_of()`` for up to ``steps`` steps, stopping once the
    loss is under 0.02; returns (first loss, last loss)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = last = None
    for _ in range(steps):
        loss = loss_of()
        last = loss.item()
        first = last if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if last < 0.02:
            break
    return first, last
