"""Sharding strategies: ``apply_<name>(model, env, ...)`` behind a name -> function table.

- ``single``: one process, the model as it is.
- ``ddp``: ``DistributedDataParallel``: every rank a full copy, gradients all-reduced
  (averaged) during backward (Li et al. 2020, "PyTorch Distributed", VLDB).
- ``zero1``: DDP plus ``ZeroRedundancyOptimizer``: each rank keeps the optimizer states
  of its share of the parameters, steps them, and broadcasts them back (ZeRO stage 1,
  Rajbhandari et al. 2020, Sec. 5.1).
- ``zero2``: FSDP2 ``fully_shard`` per block and at the root with
  ``reshard_after_forward=False``: parameters, gradients and optimizer states are
  sharded at rest; the gathered parameters stay from forward to backward (ZeRO stage 2's
  memory with one all-gather per step; Zhao et al. 2023, "PyTorch FSDP", Sec. 3.2.1,
  SHARD_GRAD_OP).
- ``zero3``: the same with parameters resharded after forward and gathered again for
  backward, one block at a time (ZeRO stage 3, Sec. 5.3; FSDP FULL_SHARD).

Mixed precision: single/ddp/zero1 keep fp32 parameters and compute under
``torch.autocast``; zero2/zero3 use FSDP2's ``MixedPrecisionPolicy`` (16-bit gathered
parameters, fp32 gradient reduction), the loop's autocast on top. Gradient accumulation:
DDP skips the all-reduce on all but the last micro-batch (``no_sync``); FSDP reduces
every micro-batch so that gradients stay sharded (ZeRO-2/3's memory).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.distributed.env import DistEnv
from lmforge.errors import UserError

STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3")
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]  # builds AdamW with decay groups


@dataclass
class Parallel:
    """A model placed by a strategy, with its optimizer.

    ``model``: the plain module (its parameters are DTensors under zero2/zero3), for
    checkpoints and evaluation; ``forward``: the module to call in training;
    ``optimizer``: the one to step; ``local_optimizer``: the one whose ``state`` holds
    this rank's optimizer states (zero1: the inner optimizer over this rank's share).
    """

    strategy: str
    env: DistEnv
    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    local_optimizer: torch.optim.Optimizer

    @property
    def sharded_parameters(self) -> bool:
        return self.strategy in ("zero2", "zero3")

    def sync(self, last_micro_batch: bool):
        """Context for one micro-batch's backward: DDP all-reduces only on the last."""
        if self.strategy in ("ddp", "zero1") and not last_micro_batch:
            return self.forward.no_sync()
        return contextlib.nullcontext()

    def reshard(self) -> None:
        """Free gathered parameters (zero2 keeps them after a forward without backward,
        as in evaluation), so that the registered parameters are the sharded ones again
        before a checkpoint reads them."""
        if self.sharded_parameters:
            from torch.distributed.fsdp import FSDPModule

            for module in self.model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip the global gradient norm (over all shards) to ``max_norm``; return it."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP: the reduction over shards
            norm = norm.full_tensor()
        return float(norm)


def apply_single(model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory, precision: str) -> Parallel:
    optimizer = make_optimizer(model)
    return Parallel("single", env, model, model, optimizer, optimizer)


def _ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    ids = [env.device.index] if env.device.type == "cuda" else None
    # gradient_as_bucket_view: gradients live in the all-reduce buckets, not a second copy.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def apply_ddp(model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory, precision: str) -> Parallel:
    optimizer = make_optimizer(model)
    return Parallel("ddp", env, model, _ddp(model, env), optimizer, optimizer)


def apply_zero1(model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory, precision: str) -> Parallel:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    template = make_optimizer(model)  # the same groups and hyper-parameters, then sharded
    groups = [{k: v for k, v in g.items()} for g in template.param_groups]
    accepted = inspect.signature(type(template).__init__).parameters  # defaults may hold more than it takes
    defaults = {k: v for k, v in template.defaults.items() if k in accepted and k != "params"}
    optimizer = ZeroRedundancyOptimizer(groups, optimizer_class=type(template), **defaults)
    return Parallel("zero1", env, model, _ddp(model, env), optimizer, optimizer.optim)


def _fully_shard(model: nn.Module, env: DistEnv, precision: str, reshard_after_forward: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if precision != "fp32":
        param_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.blocks:  # the unit of gathering: one Transformer block
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mp_policy=policy, reshard_after_forward=reshard_after_forward)  # embeddings, head, norms


def apply_zero2(model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory, precision: str) -> Parallel:
    _fully_shard(model, env, precision, reshard_after_forward=False)
    optimizer = make_optimizer(model)
    return Parallel("zero2", env, model, model, optimizer, optimizer)


def apply_zero3(model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory, precision: str) -> Parallel:
    _fully_shard(model, env, precision, reshard_after_forward=True)
    optimizer = make_optimizer(model)
    return Parallel("zero3", env, model, model, optimizer, optimizer)


APPLY: dict[str, Callable[..., Parallel]] = {
    "single": apply_single,
    "ddp": apply_ddp,
    "zero1": apply_zero1,
    "zero2": apply_zero2,
    "zero3": apply_zero3,
}


def resolve_strategy(configured: str, env: DistEnv) -> str:
    """``auto``: single for one process, ddp under torchrun."""
    if configured == "auto":
        return "ddp" if env.distributed else "single"
    if configured not in APPLY:
        raise UserError("unknown parallel strategy", configured, f"choose one of {', '.join(STRATEGIES)}")
    if configured != "single" and not env.distributed:
        raise UserError(f"strategy {configured} needs torchrun", configured,
                        "launch with torchrun --nproc_per_node N -m lmforge train ...")
    return configured


def apply_strategy(strategy: str, model: nn.Module, env: DistEnv, make_optimizer: OptimizerFactory,
                   precision: str) -> Parallel:
    """Place ``model`` (already on ``env.device``) by ``strategy`` and build its optimizer."""
    return APPLY[strategy](model, env, make_optimizer, precision)
