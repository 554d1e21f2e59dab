"""Building a run: data, model, strategy, optimizer, precision policy and prediction.

`build_run` does everything that comes before step 1 (and, on resume, loads the
checkpoint), and returns a `Run` that `lmforge.train.step.train_step` and the loop work
on. The prediction (``plan.json``) is made here, before the run's model exists: the
speed from a few timed steps of a copy of it (`lmforge.train.calibrate`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.distributed.env import DistEnv, broadcast, sum_over_ranks
from lmforge.distributed.strategies import Parallel, apply_strategy
from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.train.budget import BudgetPlan, plan_budget, predicted_loss_of, unique_train_tokens
from lmforge.train.calibrate import Calibration, calibrate
from lmforge.train.compile_choice import CompileChoice, choose_compile
from lmforge.train.config import RunConfig
from lmforge.train.data_setup import RunData, setup_data
from lmforge.train.model_setup import model_spec
from lmforge.train.objective import Objective, micro_batch_rng, resolve_objective
from lmforge.train.optim import build_optimizer
from lmforge.train.parallel_io import load_weights_from, resume_state
from lmforge.train.peak import Peak, peak_flops
from lmforge.train.precision import PrecisionChoice, autocast
from lmforge.train.preflight import (
    Prediction,
    Speed,
    check_memory,
    device_capacity,
    planned_steps,
    predict,
    run_memory,
    target_tokens,
)


@dataclass
class Options:
    """How ``lmforge.train.loop.train`` was called (not part of the config)."""

    resume: bool = False
    init_from: Path | None = None
    quiet: bool = False
    log: Callable = print
    model_hook: Callable[[torch.nn.Module], None] | None = None
    force: bool = False
    on_step: Callable[[int, int], None] | None = None  # (step, total steps) after each step; the caller shows progress


@dataclass
class Run:
    """Everything a run's steps need; ``step`` and ``tokens_seen`` advance as it trains."""

    config: RunConfig
    env: DistEnv
    strategy: str
    options: Options
    precision: PrecisionChoice
    data: RunData
    spec: ModelSpec
    objective: Objective
    model: torch.nn.Module  # the plain module (for evaluation and checkpoints)
    parallel: Parallel
    forward: Callable  # what a training step calls (compiled or not)
    peak: Peak
    prediction: Prediction
    sequences: int  # per global batch
    accumulation: int  # micro-batches per step on each rank
    scaler: torch.amp.GradScaler | None
    step: int = 0
    tokens_seen: int = 0
    first_step: int = 0
    state: dict = field(default_factory=dict)  # state.json of the checkpoint resumed from
    held: dict | None = None  # bytes of model states this rank holds, counted after the first step

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def log(self) -> Callable:
        return self.options.log

    def autocast(self):
        """The precision context of a forward pass."""
        return autocast(self.env.device.type, self.precision.precision)


def silent(*args, **kwargs) -> None:
    """A log that prints nothing (ranks other than 0, checks whose figures print later)."""


def build_run(config: RunConfig, env: DistEnv, strategy: str, precision: PrecisionChoice, sequences: int,
              accumulation: int, options: Options, on_main: Callable) -> Run:
    """Data (rank 0 prepares it, the others find it), the model (loaded from
    ``init_from``, passed through ``model_hook``), the memory preflight, the speed
    calibration and prediction, the strategy and optimizer, and the resumed state."""
    t, log, device = config.train, options.log, env.device
    run_dir = config.run_dir
    began = time.perf_counter()  # a time budget counts from here: data, planning, training
    torch.manual_seed(t.seed)
    _early_memory_check(config, env, strategy, options)
    data = on_main(lambda: setup_data(config.data, run_dir, seed=t.seed, log=log))
    if not env.main:
        data = setup_data(config.data, run_dir, seed=t.seed, log=silent)
    budget = None
    if t.budget is not None:  # the planner sizes the run (a new run: a resumed one reads its resolved config)
        config, budget = _plan_budget(config, data, env, precision, options, on_main, began)
        t = config.train
        sequences, accumulation = accumulation_of(config, env.world)
    spec = model_spec(config.model, data.tokenizer.vocab_size, config.data.seq_len)
    objective = Objective(resolve_objective(config.objective, spec, data.tokenizer), config.objective,
                          data.tokenizer, config.data.seq_len)
    where = f", {strategy} on {env.world} ranks ({env.backend})" if env.distributed else ""
    log(f"model: {spec.name} ({spec.family}), objective {objective.name}{where}")
    log(precision.header())
    if precision.warning:
        log(precision.warning)
    check_memory(config, spec, device, strategy, env.world, env.local_world, force=options.force, log=log)
    per_device, source = peak_flops(device, precision.precision, t.peak_tflops)
    peak = Peak(per_device, source, env.world)
    speed = _speed(config, spec, objective, data, env, precision.precision, sequences, accumulation, peak, options)
    config, compiling, speed = _compile(config, spec, objective, data, env, precision.precision, sequences,
                                        accumulation, speed, planned_steps(config, param_counts(spec).total)[0],
                                        options, on_main)
    log(compiling.line())
    t = config.train
    model = build_model(spec).to(device)
    if options.init_from is not None:
        load_weights_from(Path(options.init_from), model)
    if options.model_hook is not None:
        options.model_hook(model)
    n_params = sum(p.numel() for p in model.parameters())

    def make_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(module, lr=t.lr, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2), eps=t.eps)

    parallel = apply_strategy(strategy, model, env, make_optimizer, precision.precision)
    unique = unique_train_tokens(data)
    tokens, _ = target_tokens(config, n_params)
    if budget is not None:
        loss = (budget.predicted_loss, budget.law if budget.loss_applies else budget.notes[0])
    elif objective.name == "causal" and tokens is not None:
        loss = predicted_loss_of(config, spec, tokens, data.tokenizer.sha256, unique)
    else:
        loss = (None, "no law: the laws are fitted to causal LM runs sized by tokens")
    prediction = predict(config, spec, n_params, device, peak, strategy, env.world, precision, speed,
                         eval_tokens=_eval_tokens(data, t.eval_tokens), loss=loss,
                         budget=None if budget is None else budget.to_dict())
    if peak.raised:  # the calibration computed faster than the matmul peak
        log(peak.note())
    if not options.resume and env.main:
        prediction.write(run_dir / "plan.json")
    scaler = torch.amp.GradScaler("cuda") if precision.precision == "fp16" else None
    run = Run(config, env, strategy, options, precision, data, spec, objective, model, parallel,
              torch.compile(parallel.forward) if compiling.compile else parallel.forward, peak, prediction, sequences,
              accumulation, scaler)
    if options.resume:
        run.state = resume_state(run_dir, parallel, lambda: build_model(spec), make_optimizer)
        run.step, run.tokens_seen = run.state["step"], run.state["tokens"]
        _check_resumable(run_dir, run.step, prediction.total_steps)
        if scaler is not None and run.state.get("grad_scaler"):
            scaler.load_state_dict(run.state["grad_scaler"])
        log(f"resumed {run_dir} at step {run.step:,} ({run.tokens_seen:,} tokens)")
    run.first_step = run.step
    model.gradient_checkpointing = t.activation_checkpointing
    return run


def accumulation_of(config: RunConfig, world: int = 1) -> tuple[int, int]:
    """(sequences per global batch, micro-batches per step on each rank)."""
    t, d = config.train, config.data
    if t.batch_tokens % d.seq_len:
        raise UserError(
            "train.batch_tokens is not a multiple of data.seq_len",
            f"{t.batch_tokens} and {d.seq_len}",
            f"use e.g. --train.batch_tokens {max(1, round(t.batch_tokens / d.seq_len)) * d.seq_len}",
        )
    sequences = t.batch_tokens // d.seq_len
    if sequences % (world * t.micro_batch):
        per_step = world * t.micro_batch
        raise UserError(
            "the global batch does not split over ranks x micro-batches",
            f"{sequences} sequences per step, {world} ranks x train.micro_batch={t.micro_batch}",
            f"use a batch_tokens that is a multiple of {per_step * d.seq_len} or another micro_batch",
        )
    return sequences, sequences // (world * t.micro_batch)


def _plan_budget(config: RunConfig, data: RunData, env: DistEnv, precision: PrecisionChoice, options: Options,
                 on_main: Callable, began: float) -> tuple[RunConfig, BudgetPlan]:
    """Rank 0 plans the budget (``lmforge.train.budget``) and records the resolved run in
    config.yaml; every rank gets the same plan."""
    from lmforge.train.config import save_config

    def work():
        resolved, plan = plan_budget(config, data, env.device, precision.precision,
                                     _eval_tokens(data, config.train.eval_tokens), log=options.log, started=began)
        paused = dataclasses.replace(resolved, train=dataclasses.replace(resolved.train, stop_at_step=None))
        save_config(paused, config.run_dir / "config.yaml")
        return resolved, plan

    return broadcast(env, on_main(work))


def _early_memory_check(config: RunConfig, env: DistEnv, strategy: str, options: Options) -> None:
    """Refuse a model that cannot fit before any data is read or tokenizer trained: the
    planner's memory for the spec with the vocabulary the run will have (the model's or
    the tokenizer's if known, else ``data.vocab_size``); the check after the data, with
    the real vocabulary, prints the figures."""
    if options.force:
        return
    vocab = config.model.vocab_size
    tokenizer = config.run_dir / "tokenizer.json" if (config.run_dir / "tokenizer.json").is_file() else (
        Path(config.data.tokenizer) if config.data.tokenizer and Path(config.data.tokenizer).is_file() else None)
    if vocab is None and tokenizer is not None:
        from lmforge.data.tokenizer import Tokenizer

        vocab = Tokenizer.load(tokenizer).vocab_size
    spec = model_spec(config.model, vocab or config.data.vocab_size, config.data.seq_len)
    check_memory(config, spec, env.device, strategy, env.world, env.local_world, force=False, log=silent)


def _check_resumable(run_dir: Path, step: int, total_steps: int) -> None:
    """A resume must have steps left: a finished run is not rewritten, a limit below the
    checkpoint cannot be met."""
    if step == total_steps:
        raise UserError("the run is finished", f"{run_dir}: step {step:,} of {total_steps:,}",
                        "raise --train.max_steps or --train.max_tokens to train it further, or start a new run "
                        f"from its weights with --init-from {run_dir}")
    if step > total_steps:
        raise UserError("the run's limit is below its checkpoint", f"{run_dir}: checkpoint at step {step:,}, "
                        f"limit {total_steps:,} steps", "raise the limit above the checkpoint's step to resume")


def _eval_tokens(data: RunData, per_source: int) -> int:
    """Validation tokens one evaluation reads, over all sources."""
    return sum(min(per_source, max(0, len(data.store.tokens(s.name, "val")) - 1)) for s in data.sources)


def _speed(config: RunConfig, spec: ModelSpec, objective: Objective, data: RunData, env: DistEnv, precision: str,
           sequences: int, accumulation: int, peak: Peak, options: Options) -> Speed:
    """The run's predicted speed: ``train.expected_mfu`` x peak if given, else a calibration
    of this model on this device. Every rank calibrates at once (so they share the
    machine as they will in the run); the job's rate is the sum of theirs."""
    t = config.train
    if t.expected_mfu is not None:
        return Speed.from_mfu(t.expected_mfu, peak, spec, config.data.seq_len)
    single = run_memory(config, spec, env.device, "single", 1)  # the calibration's copy, on one device
    capacity, _ = device_capacity(config, env.device, env.local_world)
    if not single.fits(capacity):  # a model only sharding holds cannot be timed whole on one device
        return Speed.from_mfu(0.4, peak, spec, config.data.seq_len,
                              note="not calibrated: the model does not fit one device; assumed MFU 0.4")
    result = _calibrate(config, spec, objective, data, env, precision, sequences, options)
    rates = sum_over_ranks(env, torch.tensor([result.tokens_per_second(accumulation)], dtype=torch.float64))
    main = broadcast(env, result)
    return Speed.from_calibration(main, rates[0])


def _calibrate(config: RunConfig, spec: ModelSpec, objective: Objective, data: RunData, env: DistEnv, precision: str,
               sequences: int, options: Options, compile_model: bool = False) -> Calibration:
    """This rank's timing of the run's model (`lmforge.train.calibrate`) on its first micro-batch."""
    t, seed = config.train, config.train.seed

    def loss(model, windows, autocast):
        return objective.loss(model, windows, micro_batch_rng(seed, 0, 0), autocast)[0]

    first, _ = data.mixture.batch(0, sequences, env.rank, env.world)  # (sequences / world, seq_len + 1)
    return calibrate(spec, seq_len=config.data.seq_len, micro_batch=t.micro_batch, precision=precision,
                     device=env.device, loss=loss, objective_name=objective.name, model_hook=options.model_hook,
                     activation_checkpointing=t.activation_checkpointing,
                     windows=torch.from_numpy(first[: t.micro_batch]), compile_model=compile_model)


def _compile(config: RunConfig, spec: ModelSpec, objective: Objective, data: RunData, env: DistEnv,
             precision: str, sequences: int, accumulation: int, speed: Speed, planned_steps: int,
             options: Options, on_main: Callable) -> tuple[RunConfig, CompileChoice, Speed]:
    """The config with ``train.compile`` resolved to true/false (`lmforge.train.compile_choice`;
    every rank measures at once, rank 0 decides), the choice, and the speed the run will have;
    a new run's config.yaml records the resolved config."""
    from lmforge.train.config import save_config

    requested = config.train.compile
    if requested == "auto" and options.resume:  # its config.yaml predates the choice: it ran uncompiled
        requested = False
    choice = choose_compile(requested, env.device, planned_steps=planned_steps, accumulation=accumulation,
                            eager=speed.calibration, max_seconds=config.train.max_time,
                            measure_compiled=lambda: _calibrate(config, spec, objective, data, env, precision,
                                                                sequences, options, compile_model=True))
    choice = broadcast(env, choice)
    if choice.compiled is not None:  # the prediction takes the compiled step's speed
        eager = speed.calibration.step_seconds(accumulation)
        speed = dataclasses.replace(speed, tokens_per_second=speed.tokens_per_second * eager
                                    / choice.compiled.step_seconds(accumulation),
                                    source=speed.source + ", compiled", calibration=choice.compiled)
    resolved = dataclasses.replace(config, train=dataclasses.replace(config.train, compile=choice.compile))
    if config.train.compile == "auto" and not options.resume:  # stop_at_step pauses this invocation only
        paused = dataclasses.replace(resolved, train=dataclasses.replace(resolved.train, stop_at_step=None))
        on_main(lambda: save_config(paused, config.run_dir / "config.yaml"))
    return resolved, choice, speed

