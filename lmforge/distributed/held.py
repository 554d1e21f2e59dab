"""Bytes of model state this rank holds, counted from the tensors themselves.

Parameters and gradients of a DTensor count their local shard only
(``DTensor.to_local()``); tensors sharing storage (tied weights, DDP's gradient bucket
views) count once. This is what ``lmforge.plan.memory.training_memory(recipe="autocast")``
predicts per device for weights, gradients and optimizer states.
"""

from __future__ import annotations

import torch
from torch import nn


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _bytes(tensors, seen: set) -> int:
    total = 0
    for tensor in tensors:
        if tensor is None:
            continue
        local = _local(tensor)
        key = (local.untyped_storage().data_ptr(), local.storage_offset(), local.numel())
        if local.numel() == 0 or key in seen:
            continue
        seen.add(key)
        total += local.numel() * local.element_size()
    return total


def held_bytes(model: nn.Module, local_optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """{"weights", "gradients", "optimizer_states"}: bytes on this rank."""
    params = list(model.parameters())
    states = [v for p_state in local_optimizer.state.values() for v in p_state.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0]  # the 0-dim step counters are not model state
    return {
        "weights": _bytes(params, set()),
        "gradients": _bytes([p.grad for p in params], set()),
        "optimizer_states": _bytes(states, set()),
    }
