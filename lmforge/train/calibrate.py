"""Time a few training steps of a model on this device, before a run, to predict the run.

``plan.json``'s tokens/s and seconds come from here, not from an assumed MFU: a copy of
the run's model (same spec, precision, micro-batch, activation checkpointing and model
hook) runs ``steps`` timed micro-batches of forward + backward, each followed by an
optimizer step (gradient clipping included), after ``WARMUP`` untimed ones, then as many
evaluation forwards without gradients. Past ``TIME_CAP`` seconds it stops at the steps
timed so far (at least ``MIN_STEPS``), so that calibrating a large model stays short.
A step of the run is ``accumulation`` micro-batches and one optimizer step, so

    step seconds = accumulation x micro-batch seconds + optimizer seconds

and each figure is the median of its timings. The copy is built inside
``torch.random.fork_rng`` so that the run's own initialisation is unchanged, and freed
before the run builds its model. Results are remembered within the process for the same
setting, so that a caller that sizes a run from a calibration (quickstart) and the run
itself see the same numbers.

``compile_model`` times the model ``torch.compile``d instead (what ``train.compile: auto``
compares, `lmforge.train.compile_choice`): the warm-up steps then include the compilation,
whose cost is reported as ``compile_seconds`` (the warm-up's time beyond WARMUP ordinary
steps); evaluation is timed uncompiled, as the run evaluates.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec
from lmforge.train.optim import build_optimizer
from lmforge.train.precision import autocast

_MEMO: dict[str, Calibration] = {}
WARMUP = 2
MIN_STEPS = 2
TIME_CAP = 20.0  # seconds


@dataclass(frozen=True)
class Calibration:
    micro_batch_seconds: float  # forward + backward of one micro-batch
    optimizer_seconds: float  # gradient clipping + optimizer step + zero_grad
    eval_micro_batch_seconds: float  # a forward pass without gradients
    micro_batch: int
    seq_len: int
    precision: str
    device: str
    timed_steps: int
    compiled: bool = False
    compile_seconds: float = 0.0  # compiled: seconds the compilation added to the warm-up

    def step_seconds(self, accumulation: int) -> float:
        return accumulation * self.micro_batch_seconds + self.optimizer_seconds

    def tokens_per_second(self, accumulation: int = 1) -> float:
        """Training tokens/s of a step of ``accumulation`` micro-batches."""
        return accumulation * self.micro_batch * self.seq_len / self.step_seconds(accumulation)

    def eval_seconds(self, tokens: int) -> float:
        """Seconds to evaluate ``tokens`` tokens (whole micro-batches)."""
        batches = -(-tokens // (self.micro_batch * self.seq_len))
        return batches * self.eval_micro_batch_seconds

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _causal_loss(model: torch.nn.Module, windows: torch.Tensor, autocast: Callable) -> torch.Tensor:
    with autocast():
        logits = model(windows[:, :-1])  # (n, seq_len, V)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())


def calibrate(
    spec: ModelSpec, *, seq_len: int, micro_batch: int, precision: str = "fp32", device: torch.device | str = "cpu",
    steps: int = 5, loss: Callable | None = None, objective_name: str = "causal",
    model_hook: Callable[[torch.nn.Module], None] | None = None, activation_checkpointing: bool = False,
    windows: torch.Tensor | None = None, compile_model: bool = False,
) -> Calibration:
    """Time ``steps`` micro-batches, optimizer steps and evaluation forwards of a fresh
    model built from ``spec`` (after ``WARMUP`` of each).

    ``loss(model, windows, autocast) -> scalar`` is the objective (default: next-token
    cross-entropy) on ``windows`` (micro_batch, seq_len + 1), the run's first micro-batch
    (default: random token ids, fine for the causal objective).
    """
    device = torch.device(device)
    shape = {k: v for k, v in spec.to_dict().items() if k != "name"}  # the same model under another name
    key = json.dumps([shape, seq_len, micro_batch, precision, str(device), steps, objective_name,
                      activation_checkpointing, compile_model], sort_keys=True, default=str)
    if model_hook is None and key in _MEMO:
        return _MEMO[key]
    loss = loss or _causal_loss

    def context():
        return autocast(device.type, precision)

    forwards, optimizer_times, eval_times, warmup = [], [], [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(spec).to(device)
        if model_hook is not None:
            model_hook(model)
        model.gradient_checkpointing = activation_checkpointing
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        if windows is None:
            windows = torch.randint(0, spec.vocab_size, (micro_batch, seq_len + 1))
        windows = windows.to(device)
        forward = torch.compile(model) if compile_model else model
        model.train()
        deadline = time.perf_counter() + TIME_CAP
        for index in range(steps + WARMUP):
            if compile_model and index == WARMUP:  # compiled: the cap counts from the first timed step
                deadline = time.perf_counter() + TIME_CAP
            if len(forwards) >= MIN_STEPS and time.perf_counter() > deadline:
                break
            _sync(device)
            start = time.perf_counter()
            loss(forward, windows, context).backward()
            _sync(device)
            middle = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if index >= WARMUP:
                forwards.append(middle - start)
                optimizer_times.append(time.perf_counter() - middle)
            else:
                warmup.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            for index in range(len(forwards) + WARMUP):
                _sync(device)
                start = time.perf_counter()
                loss(model, windows, context)
                _sync(device)
                if index >= WARMUP:
                    eval_times.append(time.perf_counter() - start)
        del model, forward, optimizer
    step = statistics.median(forwards) + statistics.median(optimizer_times)
    result = Calibration(statistics.median(forwards), statistics.median(optimizer_times),
                         statistics.median(eval_times), micro_batch, seq_len, precision, str(device), len(forwards),
                         compile_model, max(0.0, sum(warmup) - WARMUP * step) if compile_model else 0.0)
    if model_hook is None:
        _MEMO[key] = result
    return result
