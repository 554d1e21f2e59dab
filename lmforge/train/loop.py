"""The training loop: one process (``single``) or many under torchrun (ddp, zero1-3).

Per optimizer step: the global batch of ``train.batch_tokens`` tokens is drawn from the
mixture as a pure function of (seed, step), cut into micro-batches of
``train.micro_batch`` sequences whose gradients accumulate; the gradient norm is clipped,
AdamW steps at the scheduled learning rate. Every ``eval_every`` steps the validation
split of each source is evaluated; every ``ckpt_every`` steps, and at the end, a
checkpoint is written. Because the data and the schedule depend on the step alone and
the checkpoint holds the optimizer and RNG state, a resumed run is bit-identical on CPU
to an uninterrupted one.

The run is built by ``lmforge.train.build`` (data, model, strategy, optimizer,
precision, prediction), each step is ``lmforge.train.step.train_step``; this module
holds the loop around them, the evaluation / log / checkpoint after each step, and
``finish`` (final weights, validation, plot, report).

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
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.dirlock import DirectoryLock, entries_besides_lock
from lmforge.distributed.env import DistEnv, any_rank, barrier, broadcast, gather, setup, sum_over_ranks, teardown
from lmforge.distributed.strategies import resolve_strategy
from lmforge.errors import UserError
from lmforge.fileio import remove_stale_temp_files
from lmforge.train.build import Options, Run, accumulation_of, build_run, silent
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.config import RunConfig, save_config
from lmforge.train.data_setup import RunData
from lmforge.train.loggers import close_all, open_sinks
from lmforge.train.metrics import MetricsLogger, Progress, read_metrics
from lmforge.train.objective import EVAL_SEED_OFFSET, Objective
from lmforge.train.parallel_io import save_final_weights, save_state
from lmforge.train.plots import plot_loss
from lmforge.train.precision import autocast_dtype, choose_precision
from lmforge.train.preflight import write_report
from lmforge.train.signals import StopRequests
from lmforge.train.step import StepOutcome, train_step
from lmforge.train.validate import validate_config
from lmforge.train.validation import EvalResult, combine, evaluate_objective, evaluate_stream


@dataclass(kw_only=True)
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    final_loss: float
    validation: dict[str, EvalResult]
    tokens_per_second: float  # the median step's
    mfu: float
    precision: str
    stopped_by: str
    tokens_by_source: dict[str, int]
    epochs_by_source: dict[str, float]
    main: bool = True  # False on the ranks other than 0 of a torchrun job: they print nothing

    @property
    def exit_code(self) -> int:
        """0 when the run reached its planned end or limit; 128 + the signal's number when a
        signal stopped it (130 SIGINT, 143 SIGTERM, also when another rank received it)."""
        if not self.stopped_by.startswith("signal") and self.stopped_by != "another rank's request":
            return 0
        return 130 if self.stopped_by == "signal SIGINT" else 143

    def to_dict(self) -> dict:
        """What ``lmforge train --json`` prints."""
        return {"run_dir": str(self.run_dir), "steps": self.steps, "tokens": self.tokens,
                "final_loss": self.final_loss, "tokens_per_second": self.tokens_per_second, "mfu": self.mfu,
                "precision": self.precision, "stopped_by": self.stopped_by, "exit_code": self.exit_code,
                "tokens_by_source": self.tokens_by_source,
                "epochs_by_source": self.epochs_by_source,
                "validation": {k: v.to_dict() for k, v in self.validation.items()}}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device here", name, "use --train.device cpu (or auto)")
    return device


def _prepare_run_dir(config: RunConfig, resume: bool, log: Callable, restart: int = 0) -> DirectoryLock:
    """Lock RUN_DIR for this process (`lmforge.dirlock`), then check it fits the
    command: ``resume`` needs a complete checkpoint; a new run needs an empty directory,
    or one a killed first attempt left (an lmforge run with no complete checkpoint: it is
    started afresh, saying so). Writes ``config.yaml`` for a new run."""
    run_dir = config.run_dir
    lock = DirectoryLock(run_dir).acquire()
    try:
        removed = remove_stale_temp_files(run_dir)
        if removed:
            log(f"removed {len(removed)} temp file(s) of a write that was killed ({removed[0].name})")
        if resume:
            if latest_checkpoint(run_dir) is None:
                raise UserError("nothing to resume", str(run_dir), "train without --resume to start this run")
            return lock
        left = entries_besides_lock(run_dir)
        if left and latest_checkpoint(run_dir) is not None and restart == 0:
            raise UserError("the run directory already exists", str(run_dir),
                            "resume it with --resume, or pick another --name")
        if left and not (run_dir / "config.yaml").is_file():
            raise UserError("the run directory holds files that are not an lmforge run", str(run_dir),
                            "pick another --name or --out-dir")
        if left:  # no live owner (we hold the lock) and no complete checkpoint: a killed first attempt
            log(f"note: {run_dir} was left by a run that stopped before its first complete checkpoint; "
                "starting it afresh")
            for path in left:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        # stop_at_step pauses this invocation only: a later --resume must not stop there again
        save_config(dataclasses.replace(config, train=dataclasses.replace(config.train, stop_at_step=None)),
                    run_dir / "config.yaml")
        return lock
    except BaseException:
        lock.discard_if_unused()  # only what this process made, and only if empty
        lock.release()
        raise


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
    dtype = autocast_dtype(config.train.precision)
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
          log=print, model_hook: Callable[[torch.nn.Module], None] | None = None, force: bool = False,
          on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``, in this process or as one
    rank of a torchrun job (``config.parallel``).

    ``train.precision: auto`` is resolved first (`lmforge.train.precision`), on rank 0
    for every rank, and the resolved precision is what ``config.yaml`` records.
    ``model_hook(model)`` runs on the built (and ``init_from``-loaded) model before the
    optimizer and any distribution wrapper see it; features above this layer use it
    (quantization-aware training swaps in fake-quantized linears there). It must keep
    the parameter names, so checkpoints stay loadable by a plain model. ``force`` runs
    even when the preflight predicts that memory will not suffice. ``on_step(step, total)``
    is called after every step on rank 0 (a sweep's progress bar); the run then prints no
    progress of its own.
    """
    validate_config(config)
    if resume and init_from is not None:
        raise UserError("resume and init_from do not go together", f"{config.run_dir} and {init_from}",
                        "resume continues a run; init_from starts a new one from a run's weights")
    t = config.train
    env = setup(config.parallel.strategy, config.parallel.backend, t.device, config.parallel.timeout)
    try:
        strategy = resolve_strategy(config.parallel.strategy, env)
        if not env.main:
            quiet, log = True, silent
        precision = _on_main(env, lambda: choose_precision(t.precision, env.device))
        precision = broadcast(env, precision)
        if precision.precision == "fp16" and strategy != "single":
            raise UserError("fp16 loss scaling is for one process", f"parallel.strategy={strategy}",
                            "use bf16 (no loss scaling needed) with several GPUs")
        config = dataclasses.replace(config, train=dataclasses.replace(t, precision=precision.precision))
        sequences, accumulation = accumulation_of(config, env.world)
        restarted = env.restart > 0 and not resume and latest_checkpoint(config.run_dir) is not None
        if restarted:
            log(f"torchrun restart {env.restart}: resuming from the latest complete checkpoint")
        resume = resume or restarted
        lock = _on_main(env, lambda: _prepare_run_dir(config, resume, log, env.restart))
        options = Options(resume, init_from, quiet, log, model_hook, force, on_step if env.main else None)
        try:
            run = build_run(config, env, strategy, precision, sequences, accumulation, options,
                            lambda work: _on_main(env, work))
            with _open_metrics(run) as metrics:
                return finish(run, _loop(run, metrics), metrics)
        except BaseException as exc:
            run_dir = config.run_dir
            if lock is not None and not resume and latest_checkpoint(run_dir) is None:
                lock.discard()  # nothing worth keeping: leave nothing behind
            if env.distributed and _is_collective_failure(exc):
                last = latest_checkpoint(run_dir)
                raise UserError(
                    "another rank of the job died or stopped answering", f"rank {env.rank}: {_first_line(exc)}",
                    f"resume from {last.name if last else 'the start'} with --resume (torchrun --max-restarts N "
                    "restarts the job by itself)") from None
            raise
        finally:
            if lock is not None:
                lock.release()
    finally:
        teardown(env)


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


@dataclass
class _Progress:
    """What the loop tracks between steps, for the log and the report."""

    stopped_by: str = "steps"
    loss: float = math.nan
    rate: float = 0.0
    mfu: float = 0.0
    evaluated: tuple[int, dict[str, EvalResult]] = (-1, {})  # (step, results) of the latest evaluation
    unlogged: dict | None = None  # the last step's record when it was not logged
    started: float = 0.0


def _stop_reason(run: Run, stop: StopRequests, started: float) -> str | None:
    t = run.config.train
    if t.max_time is not None and time.perf_counter() - started >= t.max_time:
        return "time"
    if t.stop_at_step is not None and run.step >= t.stop_at_step:
        return "stop_at_step"
    if stop.requested:
        return f"signal {stop.requested}"
    return None


def _open_metrics(run: Run) -> contextlib.AbstractContextManager[MetricsLogger | None]:
    """Rank 0: ``metrics.jsonl`` and the sinks of ``config.log`` (TensorBoard, W&B); the
    other ranks log nothing."""
    if not run.env.main:
        return contextlib.nullcontext(None)
    resume_step = run.step if run.options.resume else None
    sinks = open_sinks(run.config, run.run_dir, resume_step=resume_step, log=run.log)
    try:
        return MetricsLogger(run.run_dir, resume_step=resume_step, sinks=sinks)
    except BaseException:
        close_all(sinks)
        raise


def _loop(run: Run, metrics: MetricsLogger | None) -> _Progress:
    """Train until the planned steps are done or something stops the run (every rank at
    the same step); after each step: progress, metrics, evaluation and checkpoints."""
    env, total_steps = run.env, run.prediction.total_steps
    _warn_epochs(run.data, total_steps, run.sequences, run.config.data.max_epochs, run.log, planned=True)
    state = _Progress(started=time.perf_counter())
    run.model.train()
    every = 10 if env.main and run.options.on_step is None else 0  # the other ranks print nothing
    with Progress(total_steps, quiet=run.options.quiet, start_step=run.step, every=every) as progress, \
            StopRequests() as stop:
        while run.step < total_steps:
            reason = _stop_reason(run, stop, state.started)
            if any_rank(env, reason is not None):  # every rank stops at the same step
                state.stopped_by = reason or "another rank's request"
                if stop.requested:
                    run.log(f"stopping at step {run.step} on {stop.requested}: saving a checkpoint "
                            "(resume with --resume)")
                break
            tick = time.perf_counter()
            outcome = train_step(run)
            state.loss, state.rate = outcome.loss, run.config.train.batch_tokens / (time.perf_counter() - tick)
            if run.peak.observe(state.rate * run.prediction.flops_per_token):
                run.log(run.peak.note())
            state.mfu = run.peak.mfu(state.rate * run.prediction.flops_per_token)
            progress.update(run.step, loss=state.loss, tokens_per_s=state.rate, mfu=state.mfu, lr=outcome.lr)
            if run.options.on_step is not None:
                run.options.on_step(run.step, total_steps)
            _after_step(run, outcome, state, metrics)
    return state


def _after_step(run: Run, outcome: StepOutcome, state: _Progress, metrics: MetricsLogger | None) -> None:
    """Log the step's record, evaluate every ``eval_every`` steps (and at the end),
    checkpoint every ``ckpt_every`` steps."""
    t, step, total_steps = run.config.train, run.step, run.prediction.total_steps
    record = {"tokens": run.tokens_seen, "loss": state.loss, "lr": outcome.lr, "tokens_per_s": state.rate,
              "mfu": state.mfu}
    if outcome.grad_norm is not None:
        record["grad_norm"] = outcome.grad_norm
    if run.objective.name == "mlm":
        right_total, target_total = sum_over_ranks(run.env, outcome.counts)
        record["accuracy"] = right_total / max(1.0, target_total)
    if step % t.eval_every == 0 or step == total_steps:
        state.evaluated = (step, evaluate_sources(run.parallel.model, run.data, run.config, run.env.device,
                                                  run.objective))
        for name, result in state.evaluated[1].items():
            record[f"val_loss/{name}"] = result.loss
            if run.objective.name == "causal":
                record[f"val_bpb/{name}"] = result.bits_per_byte
            if result.accuracy is not None:
                record[f"val_accuracy/{name}"] = result.accuracy
    state.unlogged = record
    if metrics is not None and (step % t.log_every == 0 or step == total_steps or "val_loss/all" in record):
        metrics.log(step, **record, peak_memory_bytes=_peak_memory(run.env.device))
        state.unlogged = None
    if step % t.ckpt_every == 0 and step < total_steps:
        save_state(run.run_dir, step, run.parallel, _state(run), t.keep_last)


def finish(run: Run, state: _Progress, metrics: MetricsLogger | None) -> TrainResult:
    """The last checkpoint, the final weights and validation, the plot and report.json."""
    env, step = run.env, run.step
    if metrics is not None and state.unlogged is not None:  # stopped early between log steps: keep the last one
        metrics.log(step, **state.unlogged, peak_memory_bytes=_peak_memory(env.device))
    save_state(run.run_dir, step, run.parallel, _state(run), run.config.train.keep_last)
    save_final_weights(run.run_dir / "model.safetensors", run.parallel)
    if state.evaluated[0] != step:  # the loop did not end on an evaluation (stopped early, or nothing to do)
        state.evaluated = (step, evaluate_sources(run.parallel.model, run.data, run.config, env.device,
                                                  run.objective))
    validation = state.evaluated[1]
    _warn_epochs(run.data, step, run.sequences, run.config.data.max_epochs, run.log)
    per_rank = gather(env, {"rank": env.rank, "held": run.held, "peak_memory_bytes": _peak_memory(env.device)})
    common = dict(run_dir=run.run_dir, steps=step, tokens=run.tokens_seen, final_loss=state.loss,
                  validation=validation, precision=run.precision.precision, stopped_by=state.stopped_by)
    if not env.main:
        barrier(env)  # rank 0 writes the report; the job ends together
        return TrainResult(**common, tokens_per_second=state.rate, mfu=state.mfu, tokens_by_source={},
                           epochs_by_source={}, main=False)
    history = read_metrics(run.run_dir / "metrics.jsonl")
    if history:
        plot_loss(history, run.run_dir / "plots" / "loss.png")
    rate = median_step_rate(history, state.rate)
    flops_per_token = run.prediction.flops_per_token
    measured = dict(
        objective=run.objective.name, strategy=run.strategy, world_size=env.world, precision=run.precision.precision,
        steps=step, tokens=run.tokens_seen, final_loss=state.loss, tokens_per_second=rate,
        mfu=run.peak.mfu(rate * flops_per_token), peak_source=run.peak.source,
        peak_flops=run.peak.flops, peak_memory_bytes=max(r["peak_memory_bytes"] for r in per_rank),
        memory_per_rank=per_rank, wall_seconds=time.perf_counter() - state.started, stopped_by=state.stopped_by,
        first_step=run.first_step,
        validation={k: v.to_dict() for k, v in validation.items()},
        epochs=run.data.mixture.epochs(step, run.sequences),
        tokens_by_source=run.data.mixture.tokens_drawn(step, run.sequences),
    )
    write_report(run.run_dir / "report.json", run.prediction, measured)
    barrier(env)
    return TrainResult(**common, tokens_per_second=rate, mfu=measured["mfu"],
                       tokens_by_source=measured["tokens_by_source"], epochs_by_source=measured["epochs"])


def _state(run: Run) -> dict:
    """state.json: where the run is (the data position follows from the step)."""
    state = {"step": run.step, "tokens": run.tokens_seen, "tokenizer_sha256": run.data.tokenizer.sha256,
             "sequences_drawn": run.data.mixture.sequences_drawn(run.step, run.sequences)}
    if run.scaler is not None:
        state["grad_scaler"] = run.scaler.state_dict()
    return state


def median_step_rate(history: list[dict], fallback: float) -> float:
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
