"""The training loop: one process (``single``) or many under torchrun (ddp, zero1-3).

Per optimizer step: the global batch of ``train.batch_tokens`` tokens is drawn from the
mixture as a pure function of (seed, step), cut into micro-batches of
``train.micro_batch`` sequences whose gradients accumulate; the gradient norm is clipped,
AdamW steps at the scheduled learning rate. Every ``eval_every`` steps the validation
split of each source is evaluated; every ``ckpt_every`` steps, and at the end, a
checkpoint is written. Because the data and the schedule depend on the step alone and
the checkpoint holds the optimizer and RNG state, a resumed run is bit-identical on CPU
to an uninterrupted one.

Under torchrun (``lmforge.distributed``) each rank takes its contiguous share of every
global batch (``Mixture.batch(step, n, rank, world)``) and accumulates over
``batch / (world x micro_batch)`` micro-batches, so the tokens per step, the schedule
and the data are the same for any number of ranks; the strategy averages gradients
over ranks. Only rank 0 prints, logs, plots and writes the run's files; checkpoints
are sharded (``sharded_checkpoint``), every rank writing its part. Every stop decision
(time, signal) is agreed by all ranks, so they stop at the same step.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.distributed.env import (
    DistEnv,
    any_rank,
    barrier,
    broadcast,
    gather,
    mean_over_ranks,
    setup,
    sum_over_ranks,
    teardown,
)
from lmforge.distributed.held import held_bytes
from lmforge.distributed.strategies import apply_strategy, resolve_strategy
from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.config import RunConfig, save_config
from lmforge.train.data_setup import RunData, setup_data
from lmforge.train.metrics import MetricsLogger, Progress, read_metrics
from lmforge.train.model_setup import model_spec
from lmforge.train.objective import EVAL_SEED_OFFSET, Objective, micro_batch_rng, resolve_objective
from lmforge.train.optim import build_optimizer
from lmforge.train.parallel_io import load_weights_from, resume_state, save_final_weights, save_state
from lmforge.train.peak import peak_flops
from lmforge.train.plots import plot_loss
from lmforge.train.preflight import check_memory, predict, write_report
from lmforge.train.schedule import learning_rate
from lmforge.train.signals import StopRequests
from lmforge.train.validation import EvalResult, combine, evaluate_objective, evaluate_stream


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    final_loss: float
    validation: dict[str, EvalResult]
    tokens_per_second: float
    mfu: float
    stopped_by: str
    tokens_by_source: dict[str, int]
    epochs_by_source: dict[str, float]
    main: bool = True  # False on the ranks other than 0 of a torchrun job: they print nothing


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device here", name, "use --train.device cpu (or auto)")
    return device


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _accumulation(config: RunConfig, world: int = 1) -> tuple[int, int]:
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


def _prepare_run_dir(config: RunConfig, resume: bool, restart: int = 0) -> Path:
    run_dir = config.run_dir
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise UserError("nothing to resume", str(run_dir), "train without --resume to start this run")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if restart == 0:
            raise UserError(
                "the run directory already exists", str(run_dir), "resume it with --resume, or pick another --name"
            )
        shutil.rmtree(run_dir)  # torchrun restarted a job that died before its first checkpoint: start over
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    return run_dir


def _on_main(env: DistEnv, work: Callable[[], object]) -> object:
    """Run ``work`` on rank 0 and return its result there (None elsewhere); a UserError it
    raises is raised on every rank, so that no rank waits for one that gave up. Only the
    error crosses between processes."""
    result, error = None, None
    if env.main:
        try:
            result = work()
        except UserError as exc:
            error = (exc.what, exc.value, exc.fix)
    error = broadcast(env, error)
    if error is not None:
        raise UserError(*error)
    return result


def evaluate_sources(
    model: torch.nn.Module, data: RunData, config: RunConfig, device: torch.device, objective: Objective
) -> dict[str, EvalResult]:
    """Validation of every source and their total: loss, perplexity and bits per byte for
    causal models; the objective's loss (and masked-token accuracy) for the others."""
    dtype = None if config.train.precision == "fp32" else torch.bfloat16
    common = dict(seq_len=config.data.seq_len, batch_size=config.train.micro_batch,
                  max_tokens=config.train.eval_tokens, device=device, autocast_dtype=dtype)
    results = {}
    token_bytes = torch.tensor(data.tokenizer.token_bytes(), dtype=torch.long)
    for spec in data.sources:
        stream = data.store.tokens(spec.name, "val")
        if objective.name == "causal":
            results[spec.name] = evaluate_stream(model, stream, source=spec.name, token_bytes=token_bytes, **common)
        else:
            results[spec.name] = evaluate_objective(model, stream, objective, source=spec.name,
                                                    seed=config.train.seed + EVAL_SEED_OFFSET, **common)
    results["all"] = combine("all", list(results.values()))
    return results


def train(config: RunConfig, *, resume: bool = False, init_from: Path | None = None, quiet: bool = False,
          log=print, model_hook: Callable[[torch.nn.Module], None] | None = None, force: bool = False) -> TrainResult:
    """Run (or resume) the training described by ``config``, in this process or as one
    rank of a torchrun job (``config.parallel``).

    ``model_hook(model)`` runs on the built (and ``init_from``-loaded) model before the
    optimizer and any distribution wrapper see it; features above this layer use it
    (quantization-aware training swaps in fake-quantized linears there). It must keep
    the parameter names, so checkpoints stay loadable by a plain model. ``force`` runs
    even when the preflight predicts that memory will not suffice.
    """
    t = config.train
    env = setup(config.parallel.strategy, config.parallel.backend, t.device, config.parallel.timeout)
    try:
        strategy = resolve_strategy(config.parallel.strategy, env)
        if not env.main:
            quiet, log = True, _silent
        if t.precision == "fp16" and env.device.type != "cuda":
            raise UserError("fp16 training needs a GPU (loss scaling)", "train.precision=fp16", "use bf16 on the CPU")
        if t.precision == "fp16" and strategy != "single":
            raise UserError("fp16 loss scaling is for one process", f"parallel.strategy={strategy}",
                            "use bf16 (no loss scaling needed) with several GPUs")
        sequences, accumulation = _accumulation(config, env.world)
        restarted = env.restart > 0 and not resume and latest_checkpoint(config.run_dir) is not None
        if restarted:
            log(f"torchrun restart {env.restart}: resuming from the latest complete checkpoint")
        resume = resume or restarted
        _on_main(env, lambda: _prepare_run_dir(config, resume, env.restart))
        run_dir = config.run_dir
        plan = _Setup(env, strategy, sequences, accumulation, resume, init_from, quiet, log, model_hook, force)
        try:
            return _train(config, run_dir, plan)
        except BaseException as exc:
            if env.main and not resume and latest_checkpoint(run_dir) is None:
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: leave nothing behind
            if env.distributed and _is_collective_failure(exc):
                last = latest_checkpoint(run_dir)
                raise UserError(
                    "another rank of the job died or stopped answering", f"rank {env.rank}: {_first_line(exc)}",
                    f"resume from {last.name if last else 'the start'} with --resume (torchrun --max-restarts N "
                    "restarts the job by itself)") from None
            raise
    finally:
        teardown(env)


@dataclass
class _Setup:
    env: DistEnv
    strategy: str
    sequences: int  # per global batch
    accumulation: int  # micro-batches per step on each rank
    resume: bool
    init_from: Path | None
    quiet: bool
    log: Callable
    model_hook: Callable | None
    force: bool


def _silent(*args, **kwargs) -> None:
    pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _is_collective_failure(exc: BaseException) -> bool:
    """A collective broke because a peer vanished (gloo: connection closed/reset; NCCL:
    a watchdog timeout), as opposed to a bug or a user error on this rank."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("connection closed", "connection reset", "gloo", "nccl", "timed out", "broken pipe"))


def _train(config: RunConfig, run_dir: Path, run: _Setup) -> TrainResult:
    t, env, log = config.train, run.env, run.log
    torch.manual_seed(t.seed)
    device = env.device
    data = _on_main(env, lambda: setup_data(config.data, run_dir, seed=t.seed, log=log))  # rank 0 prepares
    if not env.main:
        data = setup_data(config.data, run_dir, seed=t.seed, log=_silent)  # then finds it all as it is
    spec = model_spec(config.model, data.tokenizer.vocab_size, config.data.seq_len)
    objective = Objective(resolve_objective(config.objective, spec, data.tokenizer), config.objective,
                          data.tokenizer, config.data.seq_len)
    where = f", {run.strategy} on {env.world} ranks ({env.backend})" if env.distributed else ""
    log(f"model: {spec.name} ({spec.family}), objective {objective.name}{where}")
    model = build_model(spec).to(device)
    if run.init_from is not None:
        load_weights_from(Path(run.init_from), model)
    if run.model_hook is not None:
        run.model_hook(model)
    n_params = sum(p.numel() for p in model.parameters())
    check_memory(config, spec, device, run.strategy, env.world, env.local_world, force=run.force, log=log)

    def make_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(module, lr=t.lr, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2), eps=t.eps)

    parallel = apply_strategy(run.strategy, model, env, make_optimizer, t.precision)
    optimizer = parallel.optimizer
    peak, peak_source = peak_flops(device, t.precision, t.peak_tflops)
    prediction = predict(config, spec, n_params, device, peak, run.strategy, env.world)
    if not run.resume and env.main:
        prediction.write(run_dir / "plan.json")
    total_steps = prediction.total_steps
    sequences, accumulation = run.sequences, run.accumulation
    _warn_epochs(data, total_steps, sequences, config.data.max_epochs, log, planned=True)
    step, tokens_seen, state = 0, 0, {}
    if run.resume:
        state = resume_state(run_dir, parallel, lambda: build_model(spec), make_optimizer)
        step, tokens_seen = state["step"], state["tokens"]
        log(f"resumed {run_dir} at step {step:,} ({tokens_seen:,} tokens)")
    first_step = step
    forward = torch.compile(parallel.forward) if t.compile else parallel.forward
    model.gradient_checkpointing = t.activation_checkpointing
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    if scaler is not None and run.resume and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    flops_per_token = prediction.flops_per_token
    metrics = MetricsLogger(run_dir, resume_step=step if run.resume else None) if env.main else None
    started = time.perf_counter()
    stopped_by, loss_value, rate, mfu, held, unlogged = "steps", math.nan, 0.0, 0.0, None, None
    evaluated: tuple[int, dict[str, EvalResult]] = (-1, {})  # (step, results) of the latest evaluation
    local_rows = sequences // env.world
    model.train()
    every = 10 if env.main else 0  # the other ranks print nothing
    with Progress(total_steps, quiet=run.quiet, start_step=step, every=every) as progress, StopRequests() as stop:
        while step < total_steps:
            reason = None
            if t.max_time is not None and time.perf_counter() - started >= t.max_time:
                reason = "time"
            elif t.stop_at_step is not None and step >= t.stop_at_step:
                reason = "stop_at_step"
            elif stop.requested:
                reason = f"signal {stop.requested}"
            if any_rank(env, reason is not None):  # every rank stops at the same step
                stopped_by = reason or "another rank's request"
                if stop.requested:
                    log(f"stopping at step {step} on {stop.requested}: saving a checkpoint (resume with --resume)")
                break
            tick = time.perf_counter()
            lr = learning_rate(step, lr=t.lr, total_steps=total_steps, warmup_steps=t.warmup_steps,
                               schedule=t.schedule, min_lr_ratio=t.min_lr_ratio, decay_fraction=t.decay_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch, _ = data.mixture.batch(step, sequences, env.rank, env.world)
            batch = torch.from_numpy(batch).to(device)  # (sequences / world, seq_len + 1)
            loss_sum = torch.zeros((), device=device)
            counts = torch.zeros(2, dtype=torch.float64)  # (masked-token hits, targets) on this rank
            for micro_index, micro in enumerate(batch.split(t.micro_batch)):
                global_index = env.rank * (local_rows // t.micro_batch) + micro_index  # as in one process
                rng = micro_batch_rng(t.seed, step, global_index)
                with parallel.sync(last_micro_batch=micro_index == accumulation - 1):
                    loss, count, right = objective.loss(forward, micro, rng, lambda: _autocast(device, t.precision))
                    loss_sum += loss.detach()
                    counts += torch.tensor([right or 0, count], dtype=torch.float64)
                    scaled = loss / accumulation
                    (scaler.scale(scaled) if scaler else scaled).backward()
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = parallel.clip_grad_norm(t.grad_clip) if t.grad_clip else None
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if held is None:  # after the first step: weights, gradients and optimizer states all exist
                held = held_bytes(parallel.model, parallel.local_optimizer)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += t.batch_tokens
            loss_value = float(mean_over_ranks(env, loss_sum)) / accumulation
            if not math.isfinite(loss_value):
                raise UserError("the loss diverged", f"step {step}: {loss_value}", "lower train.lr or use bf16/fp32")
            elapsed = time.perf_counter() - tick
            rate = t.batch_tokens / elapsed
            mfu = rate * flops_per_token / (peak * env.world)
            progress.update(step, loss=loss_value, tokens_per_s=rate, mfu=mfu, lr=lr)
            record = {"tokens": tokens_seen, "loss": loss_value, "lr": lr, "tokens_per_s": rate, "mfu": mfu}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            if objective.name == "mlm":
                right_total, target_total = sum_over_ranks(env, counts)
                record["accuracy"] = right_total / max(1.0, target_total)
            if step % t.eval_every == 0 or step == total_steps:
                evaluated = (step, evaluate_sources(parallel.model, data, config, device, objective))
                for name, result in evaluated[1].items():
                    record[f"val_loss/{name}"] = result.loss
                    if objective.name == "causal":
                        record[f"val_bpb/{name}"] = result.bits_per_byte
                    if result.accuracy is not None:
                        record[f"val_accuracy/{name}"] = result.accuracy
            unlogged = record
            if metrics is not None and (step % t.log_every == 0 or step == total_steps or "val_loss/all" in record):
                metrics.log(step, **record)
                unlogged = None
            if step % t.ckpt_every == 0 and step < total_steps:
                save_state(run_dir, step, parallel, _state(step, tokens_seen, data, sequences, scaler), t.keep_last)
    if metrics is not None and unlogged is not None:  # stopped early between log steps: keep the last one
        metrics.log(step, **unlogged)
    save_state(run_dir, step, parallel, _state(step, tokens_seen, data, sequences, scaler), t.keep_last)
    save_final_weights(run_dir / "model.safetensors", parallel)
    if evaluated[0] != step:  # the loop did not end on an evaluation (stopped early, or nothing to do)
        evaluated = (step, evaluate_sources(parallel.model, data, config, device, objective))
    validation = evaluated[1]
    _warn_epochs(data, step, sequences, config.data.max_epochs, log)
    per_rank = gather(env, {"rank": env.rank, "held": held, "peak_memory_bytes": _peak_memory(device)})
    if not env.main:
        barrier(env)  # rank 0 writes the report; the job ends together
        return TrainResult(run_dir, step, tokens_seen, loss_value, validation, rate, mfu, stopped_by, {}, {}, False)
    history = read_metrics(run_dir / "metrics.jsonl")
    if history:
        plot_loss(history, run_dir / "plots" / "loss.png")
    measured = dict(
        objective=objective.name, strategy=run.strategy, world_size=env.world,
        steps=step, tokens=tokens_seen, final_loss=loss_value, tokens_per_second=_mean_rate(history, rate),
        mfu=_mean_rate(history, rate) * flops_per_token / (peak * env.world), peak_source=peak_source,
        peak_flops=peak, peak_memory_bytes=max(r["peak_memory_bytes"] for r in per_rank),
        memory_per_rank=per_rank, wall_seconds=time.perf_counter() - started, stopped_by=stopped_by,
        first_step=first_step,
        validation={k: v.to_dict() for k, v in validation.items()},
        epochs=data.mixture.epochs(step, sequences),
        tokens_by_source=data.mixture.tokens_drawn(step, sequences),
    )
    write_report(run_dir / "report.json", prediction, measured)
    barrier(env)
    return TrainResult(run_dir, step, tokens_seen, loss_value, validation, measured["tokens_per_second"],
                       measured["mfu"], stopped_by, measured["tokens_by_source"], measured["epochs"])


def _state(step: int, tokens: int, data: RunData, sequences: int, scaler) -> dict:
    """state.json: where the run is (the data position follows from the step)."""
    state = {"step": step, "tokens": tokens, "tokenizer_sha256": data.tokenizer.sha256,
             "sequences_drawn": data.mixture.sequences_drawn(step, sequences)}
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    return state


def _mean_rate(history: list[dict], fallback: float) -> float:
    """Median tokens/s over the logged steps after the first (compilation, warm-up)."""
    rates = sorted(r["tokens_per_s"] for r in history[1:] if "tokens_per_s" in r)
    return rates[len(rates) // 2] if rates else fallback


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _warn_epochs(data: RunData, step: int, sequences: int, max_epochs: float, log, planned: bool = False) -> None:
    for name, epochs in data.mixture.epochs(step, sequences).items():
        if epochs > max_epochs:
            verb = "will be repeated" if planned else "was repeated"
            log(f"warning: source {name} {verb} {epochs:.1f} times (more than data.max_epochs={max_epochs:g}); "
                "add data or train on fewer tokens")

