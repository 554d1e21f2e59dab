"""The training loop: one process (``single``); the distributed strategies come later.

Per optimizer step: the global batch of ``train.batch_tokens`` tokens is drawn from the
mixture as a pure function of (seed, step), cut into micro-batches of
``train.micro_batch`` sequences whose gradients accumulate; the gradient norm is clipped,
AdamW steps at the scheduled learning rate. Every ``eval_every`` steps the validation
split of each source is evaluated; every ``ckpt_every`` steps, and at the end, a
checkpoint is written. Because the data and the schedule depend on the step alone and
the checkpoint holds the optimizer and RNG state, a resumed run is bit-identical on CPU
to an uninterrupted one.
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

from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_weights
from lmforge.train.config import RunConfig, save_config
from lmforge.train.data_setup import RunData, setup_data
from lmforge.train.metrics import MetricsLogger, Progress, read_metrics
from lmforge.train.model_setup import model_spec
from lmforge.train.objective import EVAL_SEED_OFFSET, Objective, micro_batch_rng, resolve_objective
from lmforge.train.optim import build_optimizer
from lmforge.train.peak import peak_flops
from lmforge.train.plots import plot_loss
from lmforge.train.preflight import predict, write_report
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


def _accumulation(config: RunConfig) -> tuple[int, int]:
    """(sequences per global batch, micro-batches per step)."""
    t, d = config.train, config.data
    if t.batch_tokens % d.seq_len:
        raise UserError(
            "train.batch_tokens is not a multiple of data.seq_len",
            f"{t.batch_tokens} and {d.seq_len}",
            f"use e.g. --train.batch_tokens {max(1, round(t.batch_tokens / d.seq_len)) * d.seq_len}",
        )
    sequences = t.batch_tokens // d.seq_len
    if sequences % t.micro_batch:
        raise UserError(
            "the global batch does not split into micro-batches",
            f"{sequences} sequences per step, train.micro_batch={t.micro_batch}",
            "pick a micro_batch that divides batch_tokens / seq_len",
        )
    return sequences, sequences // t.micro_batch


def _prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    run_dir = config.run_dir
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise UserError("nothing to resume", str(run_dir), "train without --resume to start this run")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            "the run directory already exists", str(run_dir), "resume it with --resume, or pick another --name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    return run_dir


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
          log=print, model_hook: Callable[[torch.nn.Module], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``.

    ``model_hook(model)`` runs on the built (and ``init_from``-loaded) model before the
    optimizer and any distribution wrapper see it; features above this layer use it
    (quantization-aware training swaps in fake-quantized linears there). It must keep
    the parameter names, so checkpoints stay loadable by a plain model.
    """
    t = config.train
    if t.precision == "fp16" and pick_device(t.device).type != "cuda":
        raise UserError("fp16 training needs a GPU (loss scaling)", "train.precision=fp16", "use bf16 on the CPU")
    sequences, accumulation = _accumulation(config)
    run_dir = _prepare_run_dir(config, resume)
    try:
        return _train(config, run_dir, sequences, accumulation, resume=resume, init_from=init_from, quiet=quiet,
                      log=log, model_hook=model_hook)
    except BaseException:
        if not resume and latest_checkpoint(run_dir) is None:  # nothing worth keeping: leave nothing behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(config: RunConfig, run_dir: Path, sequences: int, accumulation: int, *, resume: bool,
           init_from: Path | None, quiet: bool, log, model_hook=None) -> TrainResult:
    t = config.train
    torch.manual_seed(t.seed)
    device = pick_device(t.device)
    data = setup_data(config.data, run_dir, seed=t.seed, log=log)
    spec = model_spec(config.model, data.tokenizer.vocab_size, config.data.seq_len)
    objective = Objective(resolve_objective(config.objective, spec, data.tokenizer), config.objective,
                          data.tokenizer, config.data.seq_len)
    log(f"model: {spec.name} ({spec.family}), objective {objective.name}")
    model = build_model(spec).to(device)
    if init_from is not None:
        load_checkpoint(Path(init_from), model, restore_rng=False)
    if model_hook is not None:
        model_hook(model)
    optimizer = build_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2), eps=t.eps)
    n_params = sum(p.numel() for p in model.parameters())
    peak, peak_source = peak_flops(device, t.precision, t.peak_tflops)
    prediction = predict(config, spec, n_params, device, peak)
    if not resume:
        prediction.write(run_dir / "plan.json")
    total_steps = prediction.total_steps
    _warn_epochs(data, total_steps, sequences, config.data.max_epochs, log, planned=True)
    step, tokens_seen, state = 0, 0, {}
    if resume:
        state = load_checkpoint(run_dir, model, optimizer)
        step, tokens_seen = state["step"], state["tokens"]
        log(f"resumed {run_dir} at step {step:,} ({tokens_seen:,} tokens)")
    first_step = step
    forward = torch.compile(model) if t.compile else model
    model.gradient_checkpointing = t.activation_checkpointing
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    if scaler is not None and resume and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    flops_per_token = prediction.flops_per_token
    metrics = MetricsLogger(run_dir, resume_step=step if resume else None)
    started = time.perf_counter()
    stopped_by, loss_value, rate, mfu = "steps", math.nan, 0.0, 0.0
    model.train()
    with Progress(total_steps, quiet=quiet, start_step=step) as progress, StopRequests() as stop:
        while step < total_steps:
            if t.max_time is not None and time.perf_counter() - started >= t.max_time:
                stopped_by = "time"
                break
            if t.stop_at_step is not None and step >= t.stop_at_step:
                stopped_by = "stop_at_step"
                break
            if stop.requested:
                stopped_by = f"signal {stop.requested}"
                log(f"stopping at step {step} on {stop.requested}: saving a checkpoint (resume with --resume)")
                break
            tick = time.perf_counter()
            lr = learning_rate(step, lr=t.lr, total_steps=total_steps, warmup_steps=t.warmup_steps,
                               schedule=t.schedule, min_lr_ratio=t.min_lr_ratio, decay_fraction=t.decay_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch, _ = data.mixture.batch(step, sequences)
            batch = torch.from_numpy(batch).to(device)  # (sequences, seq_len + 1)
            loss_sum = torch.zeros((), device=device)
            correct = targets = 0
            for micro_index, micro in enumerate(batch.split(t.micro_batch)):
                rng = micro_batch_rng(t.seed, step, micro_index)
                loss, count, right = objective.loss(forward, micro, rng, lambda: _autocast(device, t.precision))
                loss_sum += loss.detach()
                targets += count
                correct += right or 0
                scaled = loss / accumulation
                (scaler.scale(scaled) if scaler else scaled).backward()
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip) if t.grad_clip else None
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += t.batch_tokens
            loss_value = float(loss_sum) / accumulation
            if not math.isfinite(loss_value):
                raise UserError("the loss diverged", f"step {step}: {loss_value}", "lower train.lr or use bf16/fp32")
            elapsed = time.perf_counter() - tick
            rate = t.batch_tokens / elapsed
            mfu = rate * flops_per_token / peak
            progress.update(step, loss=loss_value, tokens_per_s=rate, mfu=mfu, lr=lr)
            record = {"tokens": tokens_seen, "loss": loss_value, "lr": lr, "tokens_per_s": rate, "mfu": mfu}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            if objective.name == "mlm":
                record["accuracy"] = correct / max(1, targets)
            if step % t.eval_every == 0 or step == total_steps:
                for name, result in evaluate_sources(model, data, config, device, objective).items():
                    record[f"val_loss/{name}"] = result.loss
                    if objective.name == "causal":
                        record[f"val_bpb/{name}"] = result.bits_per_byte
                    if result.accuracy is not None:
                        record[f"val_accuracy/{name}"] = result.accuracy
            if step % t.log_every == 0 or step == total_steps or "val_loss/all" in record:
                metrics.log(step, **record)
            if step % t.ckpt_every == 0 and step < total_steps:
                save_checkpoint(run_dir, step, model, optimizer, _state(step, tokens_seen, data, sequences, scaler),
                                keep_last=t.keep_last)
    save_checkpoint(run_dir, step, model, optimizer, _state(step, tokens_seen, data, sequences, scaler),
                    keep_last=t.keep_last)
    save_weights(run_dir / "model.safetensors", model)
    validation = evaluate_sources(model, data, config, device, objective)
    _warn_epochs(data, step, sequences, config.data.max_epochs, log)
    history = read_metrics(run_dir / "metrics.jsonl")
    if history:
        plot_loss(history, run_dir / "plots" / "loss.png")
    measured = dict(
        objective=objective.name,
        steps=step, tokens=tokens_seen, final_loss=loss_value, tokens_per_second=_mean_rate(history, rate),
        mfu=_mean_rate(history, rate) * flops_per_token / peak, peak_source=peak_source, peak_flops=peak,
        peak_memory_bytes=_peak_memory(device), wall_seconds=time.perf_counter() - started, stopped_by=stopped_by,
        first_step=first_step,
        validation={k: v.to_dict() for k, v in validation.items()},
        epochs=data.mixture.epochs(step, sequences),
        tokens_by_source=data.mixture.tokens_drawn(step, sequences),
    )
    write_report(run_dir / "report.json", prediction, measured)
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

