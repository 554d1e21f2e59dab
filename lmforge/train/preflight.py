"""Predictions made before a run (``plan.json``) and the report after (``report.json``).

Before step 1 the planner predicts the parameter count, the FLOPs per token (PaLM's
6N + 12 L H Q T, Chowdhery et al. 2022, App. B), the tokens and steps the run will take,
its total compute, the training memory of model states and activations
(``lmforge.plan.memory.training_memory``), the precision it computes in and why, and
its speed and time: from a few timed steps of this model on this device
(``lmforge.train.calibrate``), or from ``train.expected_mfu`` x peak where that is given.
After the run, ``report.json`` puts what was measured beside each prediction.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmforge.errors import UserError
from lmforge.fileio import write_atomic
from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.laws import get_law
from lmforge.plan.memory import ZERO3_OFFLOAD, TrainingMemory, least_sharding, training_memory
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.plan.units import format_bytes, parse_bytes, parse_count
from lmforge.train.calibrate import Calibration
from lmforge.train.config import RunConfig
from lmforge.train.peak import Peak
from lmforge.train.precision import PrecisionChoice


@dataclass(frozen=True)
class Prediction:
    params: int
    flops_per_token: float
    tokens: int
    total_steps: int
    total_flops: float
    tokens_rule: str  # how the token count was chosen
    memory_bytes: int  # planner: model states + activations + margin, one device
    memory_model_states_bytes: int
    memory_activations_bytes: int
    peak_flops: float  # the job's (all ranks), for MFU
    peak_source: str
    expected_mfu: float  # the predicted MFU: tokens_per_second x FLOPs per token / peak
    tokens_per_second: float  # of the whole job
    speed_source: str  # how tokens_per_second was found
    seconds: float  # training steps at tokens_per_second, plus the evaluations
    eval_seconds: float  # of those, the evaluations'
    precision: dict  # the PrecisionChoice: precision, requested, reason, the CPU's measured bf16/fp32 rates
    calibration: dict | None  # the timed steps behind tokens_per_second
    loss: float | None  # validation loss (nats/token) the law predicts; None without a law for this tokenizer
    loss_source: str  # the law behind ``loss``, or why there is none
    budget: dict | None  # train.budget's plan (lmforge.train.budget.BudgetPlan), when the run was sized by one
    spec: dict
    memory: dict  # the planner's TrainingMemory per device, every part
    strategy: str
    world_size: int

    def write(self, path: Path) -> None:
        _write_json(path, asdict(self))


def target_tokens(config: RunConfig, n_params: int) -> tuple[int | None, str]:
    """Tokens to train on: train.max_tokens (a count, or 'auto' = compute-optimal)."""
    text = config.train.max_tokens
    if text is None:
        return None, "train.max_steps"
    if str(text).lower() == "auto":
        law = get_law("20x")
        tokens = law.compute_for_params(n_params) / (6 * n_params)
        return int(tokens), "auto: 20 tokens per parameter (Hoffmann et al. 2022), from lmforge plan"
    return int(parse_count(text, "train.max_tokens", upper=1e16)), "train.max_tokens"


@dataclass(frozen=True)
class Speed:
    """A predicted training speed: tokens/s of the whole job, and evaluation seconds per token."""

    tokens_per_second: float
    eval_seconds_per_token: float
    source: str
    calibration: Calibration | None = None

    @classmethod
    def from_mfu(cls, mfu: float, peak: Peak, spec: ModelSpec, seq_len: int, note: str | None = None) -> Speed:
        """peak x MFU / FLOPs per token; evaluation (a forward, 1/3 of a step's FLOPs) at the same MFU."""
        rate = peak.flops * mfu / palm_flops_per_token(spec, seq_len)
        return cls(rate, 1 / (3 * rate), note or f"train.expected_mfu={mfu:g} x the peak")

    @classmethod
    def from_calibration(cls, calibration: Calibration, job_rate: float) -> Speed:
        """``job_rate``: the calibrated tokens/s summed over ranks; every rank evaluates every
        validation token (as ``evaluate_sources`` does), so evaluation does not speed up with ranks."""
        per_token = calibration.eval_micro_batch_seconds / (calibration.micro_batch * calibration.seq_len)
        return cls(job_rate, per_token, f"calibrated: {calibration.timed_steps} timed steps of this model, "
                   f"micro-batch and precision on {calibration.device}", calibration)


def planned_steps(config: RunConfig, n_params: int) -> tuple[int, str]:
    """The run's optimizer steps (from max_tokens or its rule, capped by max_steps) and the
    tokens rule; UserError for a run with no length."""
    t = config.train
    tokens, rule = target_tokens(config, n_params)
    if tokens is None and t.max_steps is None:
        raise UserError(
            "the run has no length", "train.max_steps and train.max_tokens are unset",
            "set --train.max_steps N or --train.max_tokens 10M (or auto); max_time only stops early",
        )
    steps = t.max_steps if tokens is None else max(1, math.ceil(tokens / t.batch_tokens))
    if t.max_steps is not None:
        steps = min(steps, t.max_steps)
    return steps, rule


def predict(config: RunConfig, spec: ModelSpec, n_params: int, device: torch.device, peak: Peak,
            strategy: str, world: int, precision: PrecisionChoice, speed: Speed, eval_tokens: int = 0,
            loss: tuple[float | None, str] = (None, "no law"), budget: dict | None = None) -> Prediction:
    """Everything the planner says about this run before it starts (memory per device
    for ``strategy`` over ``world`` ranks; ``eval_tokens`` read by each evaluation)."""
    t = config.train
    planned = param_counts(spec).total
    if planned != n_params:  # the model and the planner must agree to the parameter
        raise AssertionError(f"built model has {n_params} parameters, the planner {planned}")
    steps, rule = planned_steps(config, n_params)
    flops_per_token = palm_flops_per_token(spec, config.data.seq_len)
    memory = run_memory(config, spec, device, strategy, world)
    peak.observe(speed.tokens_per_second * flops_per_token)  # a calibration faster than the peak raises it
    evaluations = steps // t.eval_every + (1 if steps % t.eval_every else 0)
    eval_seconds = evaluations * eval_tokens * speed.eval_seconds_per_token
    return Prediction(
        params=n_params,
        flops_per_token=flops_per_token,
        tokens=steps * t.batch_tokens,
        total_steps=steps,
        total_flops=flops_per_token * steps * t.batch_tokens,
        tokens_rule=rule,
        memory_bytes=memory.total,
        memory_model_states_bytes=memory.model_states,
        memory_activations_bytes=memory.activations,
        memory=memory.to_dict(),
        strategy=strategy,
        world_size=world,
        peak_flops=peak.flops,
        peak_source=peak.source,
        expected_mfu=speed.tokens_per_second * flops_per_token / peak.flops,
        tokens_per_second=speed.tokens_per_second,
        speed_source=speed.source,
        seconds=steps * t.batch_tokens / speed.tokens_per_second + eval_seconds,
        eval_seconds=eval_seconds,
        precision=precision.to_dict(),
        calibration=speed.calibration.to_dict() if speed.calibration else None,
        loss=loss[0],
        loss_source=loss[1],
        budget=budget,
        spec=spec.to_dict(),
    )


def run_memory(config: RunConfig, spec: ModelSpec, device: torch.device, strategy: str, world: int,
               strategy_override: str | None = None) -> TrainingMemory:
    """The planner's bytes per device for this run (``lmforge.plan.memory.training_memory``
    with recipe "autocast": fp32 weights and gradients, AdamW states, sharded by the
    strategy; Korthikanti et al. 2022 activations for the per-rank micro-batch)."""
    t = config.train
    return training_memory(
        spec, micro_batch=t.micro_batch, seq_len=config.data.seq_len, precision=t.precision, optimizer="adamw",
        recompute="full" if t.activation_checkpointing else "selective", strategy=strategy_override or strategy,
        n_gpus=world, margin_fixed_bytes=2**30 if device.type == "cuda" else 0, recipe="autocast",
    )


def device_capacity(config: RunConfig, device: torch.device, local_world: int) -> tuple[int, str]:
    """(bytes one rank may use, where the figure comes from): ``parallel.device_memory``
    if set; a GPU's total memory; else the machine's RAM shared by its local ranks."""
    if config.parallel.device_memory is not None:
        return parse_bytes(config.parallel.device_memory, "parallel.device_memory"), "parallel.device_memory"
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory), torch.cuda.get_device_name(device)
    import os

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram // max(1, local_world), f"host RAM / {local_world} local ranks"


def check_memory(config: RunConfig, spec: ModelSpec, device: torch.device, strategy: str, world: int,
                 local_world: int, *, force: bool, log) -> TrainingMemory:
    """Print the planner's per-device memory beside the device's; refuse a run predicted
    not to fit (with the least sharding that would fit) unless ``force``; warn when
    zero2/zero3 shard a model that ddp would hold with room to spare."""
    memory = run_memory(config, spec, device, strategy, world)
    capacity, source = device_capacity(config, device, local_world)
    def size(n: float) -> str:
        return format_bytes(n, "GiB") if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    log(f"memory per device (planner): {size(memory.total)} under {strategy} on {world} "
        f"(weights {size(memory.weights)}, gradients {size(memory.gradients)}, optimizer "
        f"{size(memory.optimizer_states)}, activations {size(memory.activations)}, gathered "
        f"{size(memory.gathered_params)}, margin {size(memory.margin)}); available {size(capacity)} ({source})")
    kwargs = dict(micro_batch=config.train.micro_batch, seq_len=config.data.seq_len, precision=config.train.precision,
                  recompute="full" if config.train.activation_checkpointing else "selective", n_gpus=world,
                  margin_fixed_bytes=2**30 if device.type == "cuda" else 0, recipe="autocast")
    if not memory.fits(capacity):
        if force:
            log("warning: predicted not to fit; going on because of --force")
            return memory
        better = least_sharding(spec, capacity, **kwargs)
        if better is not None and better != ZERO3_OFFLOAD:
            fix = f"use --parallel.strategy {better}"
        else:
            fix = "use more GPUs, a smaller train.micro_batch or train.activation_checkpointing true"
        raise UserError(
            f"the run is predicted not to fit: {size(memory.total)} per device under {strategy} on "
            f"{world}, {size(capacity)} available",
            f"{source}", f"{fix} (or --force to try anyway)",
        )
    if strategy in ("zero2", "zero3") and world > 1:
        ddp = training_memory(spec, strategy="ddp", **kwargs)
        if ddp.total < capacity / 2:
            log(f"warning: {strategy} shards a model that ddp would hold in {size(ddp.total)} per device "
                f"({100 * ddp.total / capacity:.0f}% of it); sharding buys little here and costs communication")
    return memory


def write_report(path: Path, prediction: Prediction, measured: dict) -> None:
    """report.json: each prediction with its measurement."""
    report = {
        "predicted": asdict(prediction),
        "measured": measured,
        "compare": {
            "tokens": {"predicted": prediction.tokens, "measured": measured["tokens"]},
            "tokens_per_second": {"predicted": prediction.tokens_per_second,
                                  "measured": measured["tokens_per_second"],
                                  "ratio": measured["tokens_per_second"] / prediction.tokens_per_second,
                                  "note": f"predicted by {prediction.speed_source}; measured: the median step"},
            "mfu": {"predicted": prediction.expected_mfu, "measured": measured["mfu"]},
            "loss": _loss_comparison(prediction, measured),
            "precision": {"predicted": prediction.precision["precision"], "measured": measured["precision"]},
            "seconds": {
                "predicted": prediction.seconds * (measured["steps"] - measured["first_step"]) / prediction.total_steps,
                "measured": measured["wall_seconds"],
                "note": "steps run by this process (a resumed run counts from its checkpoint); the measured time "
                "includes evaluations and checkpoints",
            },
            "memory_bytes": {
                "predicted": prediction.memory_bytes,
                "measured": measured["peak_memory_bytes"],
                "note": "on a CPU the measurement is the process's peak resident memory (Python, torch, data "
                "included); on a GPU torch.cuda.max_memory_allocated",
            },
            "model_states_per_rank": {
                "predicted": {k: prediction.memory[k] for k in ("weights", "gradients", "optimizer_states")},
                "measured": [{"rank": r["rank"], **(r["held"] or {})} for r in measured.get("memory_per_rank", [])],
                "note": "bytes each rank holds, counted from its tensors after the first step; the planner's "
                f"{prediction.strategy} on {prediction.world_size} (recipe autocast: fp32 weights and gradients)",
            },
            "flops": {"predicted": prediction.total_flops,
                      "measured": prediction.flops_per_token * measured["tokens"]},
        },
    }
    _write_json(path, report)


def _loss_comparison(prediction: Prediction, measured: dict) -> dict:
    """Predicted validation loss (the law's) beside the measured one, all sources together."""
    overall = measured.get("validation", {}).get("all", {})
    value = overall.get("loss")
    out = {"predicted": prediction.loss, "measured": value, "note": prediction.loss_source}
    if prediction.loss is not None and value is not None:
        out["error"] = value - prediction.loss
    return out


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=float))
