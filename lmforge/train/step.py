"""One optimizer step of a run: the global batch of ``train.batch_tokens`` tokens drawn
from the mixture as a pure function of (seed, step), this rank's share cut into
micro-batches whose gradients accumulate, the gradient norm clipped, AdamW stepped at
the scheduled learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.distributed.env import mean_over_ranks
from lmforge.distributed.held import held_bytes
from lmforge.errors import UserError
from lmforge.train.build import Run
from lmforge.train.objective import micro_batch_rng
from lmforge.train.schedule import learning_rate


@dataclass(frozen=True)
class StepOutcome:
    loss: float  # mean over the step's micro-batches and ranks
    lr: float
    grad_norm: float | None  # before clipping (None without clipping)
    counts: torch.Tensor  # (2,) float64: masked-token hits and targets on this rank


def train_step(run: Run) -> StepOutcome:
    """Train ``run`` on step ``run.step``'s batch; advances ``run.step`` and ``run.tokens_seen``."""
    t, env, device = run.config.train, run.env, run.env.device
    total_steps = run.prediction.total_steps
    lr = learning_rate(run.step, lr=t.lr, total_steps=total_steps, warmup_steps=t.warmup_steps,
                       schedule=t.schedule, min_lr_ratio=t.min_lr_ratio, decay_fraction=t.decay_fraction)
    optimizer, parallel, scaler = run.parallel.optimizer, run.parallel, run.scaler
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch, _ = run.data.mixture.batch(run.step, run.sequences, env.rank, env.world)
    batch = torch.from_numpy(batch).to(device)  # (sequences / world, seq_len + 1)
    local_rows = run.sequences // env.world
    loss_sum = torch.zeros((), device=device)
    counts = torch.zeros(2, dtype=torch.float64)  # (masked-token hits, targets) on this rank
    for micro_index, micro in enumerate(batch.split(t.micro_batch)):
        global_index = env.rank * (local_rows // t.micro_batch) + micro_index  # as in one process
        rng = micro_batch_rng(t.seed, run.step, global_index)
        with parallel.sync(last_micro_batch=micro_index == run.accumulation - 1):
            loss, count, right = run.objective.loss(run.forward, micro, rng, run.autocast)
            loss_sum += loss.detach()
            counts += torch.tensor([right or 0, count], dtype=torch.float64)
            scaled = loss / run.accumulation
            (scaler.scale(scaled) if scaler else scaled).backward()
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = parallel.clip_grad_norm(t.grad_clip) if t.grad_clip else None
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if run.held is None:  # after the first step: weights, gradients and optimizer states all exist
        run.held = held_bytes(parallel.model, parallel.local_optimizer)
    optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.tokens_seen += run.config.train.batch_tokens
    loss = float(mean_over_ranks(run.env, loss_sum)) / run.accumulation
    if not math.isfinite(loss):
        raise UserError("the loss diverged", f"step {run.step}: {loss}", "lower train.lr or use bf16/fp32")
    return StepOutcome(loss, lr, None if grad_norm is None else float(grad_norm), counts)
