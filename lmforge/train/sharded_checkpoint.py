"""Sharded checkpoints for distributed runs: every rank writes its part, in parallel.

Layout (beside ``checkpoint.py``'s single-process one)::

    checkpoints/step-000500/
      shard-00001-model-00001-of-00001.safetensors   # rank 0's tensors (its DTensor shards,
      shard-00002-model-00001-of-00001.safetensors   #  its zero1 optimizer states...), rank 1's...
      layout.json     # strategy and world size that wrote it, the tensor keys
      rng.safetensors # rank 0's RNG states
      state.json      # step, tokens, data position

Written with ``torch.distributed.checkpoint.save`` and its ``HuggingFaceStorageWriter``
(``save_distributed=True``): plain safetensors files whose metadata records each
chunk's offset in the full tensor, so reading needs no pickle (DCP's default
``.metadata`` file is a pickle: DESIGN.md forbids unpickling what a user hands in).
Loading reads the chunks that overlap this rank's tensors, whatever strategy and world
size wrote them (DCP's load-time resharding), and works in a single process too.
The same write-temp-then-rename protocol as ``checkpoint.py`` (Pillai et al., OSDI 2014,
Sec. 2; its temp names, fsyncs and renames are ``lmforge.fileio``'s): rank 0 creates the
temporary directory (``begin_checkpoint``), all ranks write into it, rank 0 writes
``state.json`` last and commits it (``commit_checkpoint``: fsync, rename, then ``latest``).
All ranks must see the same run directory (one machine, or a shared filesystem across
machines). DCP writes the shard files; ``rng.safetensors`` is ``lmforge.tensorfile``'s.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from lmforge.distributed.env import DistEnv, barrier, broadcast
from lmforge.distributed.state import MODEL, init_optimizer_state, training_tensors
from lmforge.errors import UserError
from lmforge.fileio import write_atomic
from lmforge.train.checkpoint import (
    CHECKPOINTS,
    RNG_FILE,
    SHARDED_LAYOUT,
    STATE_FILE,
    begin_checkpoint,
    commit_checkpoint,
    read_rng,
    resolve_checkpoint,
    restore_rng,
    step_dir_name,
    write_rng,
)


def is_sharded(checkpoint: Path) -> bool:
    return (Path(checkpoint) / SHARDED_LAYOUT).is_file()


def save_sharded(run_dir: Path, step: int, env: DistEnv, strategy: str, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | None, state: dict, keep_last: int | None) -> Path:
    """Write ``checkpoints/step-XXXXXX`` from every rank (a collective); return its path.

    ``optimizer`` is the one whose ``state`` this rank holds (zero1: its inner optimizer).
    """
    import torch.distributed.checkpoint as dcp

    state_text = json.dumps({**state, "step": step}, indent=2, allow_nan=False, sort_keys=True) + "\n"
    tmp = begin_checkpoint(run_dir, step) if env.main else None
    tmp = Path(broadcast(env, str(tmp) if tmp else None))
    tensors = training_tensors(model, optimizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DCP's notes about a missing process group or its storage API
            dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(tmp), save_distributed=True))
        if env.main:
            keys = sorted(tensors) if env.world == 1 else None
            layout = {"format": 1, "strategy": strategy, "world_size": env.world, "keys": keys}
            write_atomic(tmp / SHARDED_LAYOUT, json.dumps(layout, indent=2) + "\n")
            write_rng(tmp / RNG_FILE)
            write_atomic(tmp / STATE_FILE, state_text)  # last: its presence marks a finished directory
    except BaseException:
        if env.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if env.main:
        commit_checkpoint(run_dir, tmp, step, keep_last)
    barrier(env)
    return Path(run_dir) / CHECKPOINTS / step_dir_name(step)


def _saved_shapes(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    """Key -> full shape, from the safetensors headers (no tensor data is read)."""
    import torch.distributed.checkpoint as dcp

    try:
        metadata = dcp.HuggingFaceStorageReader(str(checkpoint)).read_metadata()
    except Exception as exc:  # a truncated or foreign file
        raise UserError("corrupt sharded checkpoint", str(checkpoint),
                        f"resume from an earlier checkpoint ({type(exc).__name__})") from None
    return {key: tuple(meta.size) for key, meta in metadata.state_dict_metadata.items()}


def load_sharded(checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 restore_random: bool = True) -> dict:
    """Load a sharded checkpoint (or a run's latest) into this rank's ``model`` and
    ``optimizer`` (a collective when a process group exists); return ``state.json``.

    Every key this layout needs must be in the checkpoint with the same full shape, else
    a one-line UserError before anything changes.
    """
    import torch.distributed.checkpoint as dcp

    checkpoint = resolve_checkpoint(checkpoint)
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError("corrupt checkpoint file", str(checkpoint / STATE_FILE), "resume from an earlier one") from None
    if optimizer is not None:
        init_optimizer_state(model, optimizer)
    tensors = training_tensors(model, optimizer)
    saved = _saved_shapes(checkpoint)
    for key, tensor in tensors.items():
        if key not in saved:
            what = "weights" if key.startswith(MODEL) else "optimizer state"
            raise UserError(f"the checkpoint does not fit this model: no {what} for {key.split('/', 1)[1]}",
                            str(checkpoint), "resume with the config that wrote it")
        if tuple(tensor.shape) != saved[key]:
            name = key.split("/", 1)[1]
            raise UserError(f"the checkpoint does not fit this model: {name} is {saved[key]}, the model's "
                            f"{tuple(tensor.shape)}", str(checkpoint), "resume with the config that wrote it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(checkpoint)))
    if restore_random:
        restore_rng(read_rng(checkpoint / RNG_FILE))
    return state
