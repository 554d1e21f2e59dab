"""Shared pieces of the benchmarks: a timed training contender, the precision both sides
train in (lmforge's own ``auto`` choice unless ``--precision`` says otherwise: bf16 only
where a probe finds it fast on this CPU), the peak of that precision, the machine line
(which names the probe's outcome), and the decode roofline's two halves: the bytes a
batch-1 token reads and the bandwidth of a device copy."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from lmforge.plan.specs import ModelSpec
from lmforge.plan.storage import kv_cache_bytes, weight_bytes
from lmforge.train.machine import cpu_capability, cpu_model
from lmforge.train.optim import build_optimizer
from lmforge.train.peak import measured_peak, precision_dtype
from lmforge.train.precision import autocast, choose_precision, cpu_bf16


def pick_precision(requested: str = "auto") -> str:
    """The precision both sides train in: lmforge's choice for ``requested`` on this CPU."""
    choice = choose_precision(requested, torch.device("cpu"))
    if choice.warning:
        print(choice.warning, flush=True)
    return choice.precision


def matmul_peak(precision: str) -> float:
    """lmforge's measured matmul peak in ``precision`` (`lmforge.train.peak`, cached per machine)."""
    return measured_peak("cpu", precision_dtype(precision))


def machine(probe: bool = True) -> str:
    """CPU, cores, capability, torch, threads, and (``probe``) the bf16 probe's outcome here."""
    line = f"{cpu_model()}, {os.cpu_count()} cores, {cpu_capability()}, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"
    if not probe:
        return line
    result = cpu_bf16()
    return f"{line}; fast bf16: {'yes' if result.fast else 'no'} ({result.rates()})"


class Side:
    """One contender: a model, the same AdamW settings for all, and a full training step.

    ``loss_of(model, batch) -> scalar loss`` runs the forward pass (under ``precision``'s
    autocast: bf16, or none for fp32) and the loss; the step adds backward, gradient
    clipping and the optimizer step.
    """

    def __init__(self, name: str, model: torch.nn.Module, loss_of: Callable, compile_model: bool = False,
                 precision: str = "bf16"):
        self.name = name
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        self.forward = torch.compile(model) if compile_model else model
        self.loss_of = loss_of
        self.precision = precision

    def step(self, batch) -> float:
        with autocast("cpu", self.precision):
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mib: int, copies: int = 1, repeats: int = 5) -> float:
    """Bytes read + written per second by ``copies`` back-to-back copies of ``mib`` MiB of
    filled memory on ``device`` (STREAM's copy kernel), the median of ``repeats``."""
    src = torch.rand(mib * 2**20 // 4, device=device)  # (n,) fp32, filled: no shared zero pages
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(copies):
            dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 * copies / statistics.median(times)


def decode_bytes_per_token(spec: ModelSpec, precision: str, prompt: int, new: int) -> float:
    """Batch-1 decode reads every weight and the KV cache once per token (Pope et al. 2022,
    Sec. 3.1): `weight_bytes` + `kv_cache_bytes` per position x the mean cached length."""
    mean_cached = prompt + new / 2
    return weight_bytes(spec, precision) + kv_cache_bytes(spec, 1, 1, precision) * mean_cached
