"""Checkpoints and weights of a run under any strategy: which format, who writes.

``single`` keeps ``checkpoint.py``'s one-process format; ddp, zero1, zero2 and zero3
write sharded checkpoints (``sharded_checkpoint.py``). Either kind resumes under any
strategy and world size: a sharded one through DCP's resharding, a single-process one
by loading it into a plain copy of the model and placing every tensor (each rank takes
its shard). The final ``model.safetensors`` is always one consolidated file, written by
rank 0, so ``lmforge generate``, ``eval`` and ``export`` read it as they read any run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.distributed.state import copy_full_into, full_state_dict, init_optimizer_state, training_tensors
from lmforge.distributed.strategies import Parallel
from lmforge.errors import UserError
from lmforge.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    save_weights,
)
from lmforge.train.sharded_checkpoint import is_sharded, load_sharded, save_sharded


def save_state(run_dir: Path, step: int, parallel: Parallel, state: dict, keep_last: int | None) -> Path:
    """A checkpoint of the whole training state at ``step`` (a collective when distributed)."""
    parallel.reshard()
    if parallel.strategy == "single":
        return save_checkpoint(run_dir, step, parallel.model, parallel.optimizer, state, keep_last=keep_last)
    return save_sharded(run_dir, step, parallel.env, parallel.strategy, parallel.model, parallel.local_optimizer,
                        state, keep_last)


def resume_state(run_dir: Path, parallel: Parallel, build_plain: Callable[[], torch.nn.Module],
                 make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> dict:
    """Load the run's latest checkpoint, whatever strategy wrote it; return state.json."""
    checkpoint = resolve_checkpoint(run_dir)
    if is_sharded(checkpoint):
        return load_sharded(checkpoint, parallel.model, parallel.local_optimizer)
    if parallel.strategy in ("single", "ddp"):  # the same plain optimizer over the same parameters
        return load_checkpoint(checkpoint, parallel.model, parallel.optimizer, map_location=parallel.env.device)
    plain = build_plain()
    plain_optimizer = make_optimizer(plain)
    state = load_checkpoint(checkpoint, plain, plain_optimizer)
    init_optimizer_state(parallel.model, parallel.local_optimizer)
    copy_full_into(training_tensors(parallel.model, parallel.local_optimizer), training_tensors(plain, plain_optimizer))
    return state


def load_weights_from(path: Path, model: torch.nn.Module) -> None:
    """``--init-from``: a run's (or checkpoint's) weights into a plain model, any format: the
    latest checkpoint, else (a run imported from transformers has none) the run's final
    ``model.safetensors``."""
    path = Path(path)
    if (path / "quantization.json").is_file():
        raise UserError("a quantized run cannot be trained from", str(path),
                        "--init-from its source run (quantization.json names it), or train with --qat")
    if path.is_dir() and latest_checkpoint(path) is None and (path / "model.safetensors").is_file():
        load_weights(path / "model.safetensors", model)
        return
    checkpoint = resolve_checkpoint(path)
    if is_sharded(checkpoint):
        load_sharded(checkpoint, model, None, restore_random=False)
    else:
        load_checkpoint(checkpoint, model, restore_rng=False)


def save_final_weights(path: Path, parallel: Parallel) -> None:
    """The consolidated ``model.safetensors`` (shards gathered: a collective under zero2/zero3)."""
    if parallel.strategy == "single":
        save_weights(path, parallel.model)
        return
    parallel.reshard()
    weights = full_state_dict(parallel.model)
    if parallel.env.main:
        save_weights(path, None, weights)
