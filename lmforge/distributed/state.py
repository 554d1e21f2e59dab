"""The training state as one flat dict of tensors, the same keys under every strategy.

    model/<parameter or buffer name>   the parameter (a DTensor shard under zero2/zero3)
    optim/<parameter name>/<state>     AdamW's step, exp_avg, exp_avg_sq for it

Names are the plain model's (FSDP2 and DDP keep or strip their wrappers' prefixes), so a
checkpoint written under one strategy and world size loads under another:
``torch.distributed.checkpoint`` matches keys and copies the overlap of the saved chunks
and this rank's chunk (PyTorch docs, "Distributed Checkpoint - torch.distributed.checkpoint":
"load-time resharding"). Tied parameters appear once (``named_parameters`` de-duplicates).
Under zero1 each rank lists only the optimizer states of the parameters it owns.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL = "model/"
OPTIM = "optim/"


def _parameter_names(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model/<name>`` -> parameter (detached) or persistent buffer."""
    out = {MODEL + name: p.detach() for name, p in model.named_parameters()}
    persistent = set(model.state_dict().keys())
    for name, buffer in model.named_buffers():
        if name in persistent:
            out[MODEL + name] = buffer
    return out


def owned_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters whose optimizer states this rank holds."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def init_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Allocate AdamW's states (zeros, step 0) for every owned parameter that has none, so
    that a checkpoint can be loaded into them in place. torch creates them lazily on the
    first step (``torch.optim.AdamW._init_group``); these have the same shapes, dtypes and
    devices (``step`` on the parameter's device for the fused and capturable kernels)."""
    for group in optimizer.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            if optimizer.state.get(p):
                continue
            step_device = p.device if on_device else torch.device("cpu")
            optimizer.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=step_device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            if group.get("amsgrad"):
                optimizer.state[p]["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """``optim/<name>/<state>`` -> tensor, for the parameters this rank owns."""
    names = _parameter_names(model)
    out = {}
    for p in owned_parameters(optimizer):
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{OPTIM}{names[id(p)]}/{key}"] = value
    return out


def training_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """Model and (when given) optimizer tensors in one flat dict."""
    out = model_tensors(model)
    if optimizer is not None:
        out.update(optimizer_tensors(model, optimizer))
    return out


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor gathered from its shards (a collective: every rank
    must call it), anything else as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every shard gathered, on the CPU; tied names share one
    tensor (gathered once). A collective under zero2/zero3."""
    gathered: dict[int, torch.Tensor] = {}
    owners = dict(model.named_parameters(remove_duplicate=False))  # tied names map to one Parameter
    out = {}
    for name, value in model.state_dict().items():
        key = id(owners.get(name, value))
        if key not in gathered:
            gathered[key] = full_tensor(value.detach()).cpu()
        out[name] = gathered[key]
    return out


def copy_full_into(destination: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors (every rank holds all of ``full``) into this rank's tensors:
    a DTensor takes its own shard (no communication), a plain tensor the whole."""
    from torch.distributed.tensor import distribute_tensor

    for key, target in destination.items():
        source = full[key].to(device=target.device, dtype=target.dtype)
        if hasattr(target, "device_mesh"):
            shard = distribute_tensor(source, target.device_mesh, target.placements, src_data_rank=None)
            target.to_local().copy_(shard.to_local())
        else:
            target.copy_(source)
