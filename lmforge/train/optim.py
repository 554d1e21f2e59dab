"""AdamW with weight-decay groups (Loshchilov & Hutter 2019).

Matrices (embeddings and linear weights, dim >= 2) are decayed; biases and norm scales
(dim < 2) are not, as in GPT-3 (Brown et al. 2020, App. B) and nanoGPT. Tied weights
appear once (``named_parameters`` de-duplicates shared Parameters).
"""

from __future__ import annotations

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed matrices, undecayed vectors; parameter order is stable."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` with the fused kernel (one pass over all parameters, on
    CPU and CUDA in torch >= 2.4), or the for-each one where fused is not available."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
