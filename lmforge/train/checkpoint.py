"""Checkpoints: save and resume a run exactly, with nothing half-written on a crash.

Layout (DESIGN.md, "A run directory")::

    runs/NAME/
      latest                      # text: "checkpoints/step-000500", replaced atomically
      checkpoints/step-000500/
        model.safetensors         # model.state_dict(), each shared tensor stored once
        optimizer.safetensors     # every tensor of optimizer.state_dict()
        optimizer.json            # the rest of it: param_groups, python-number state
        rng.safetensors           # torch CPU (and CUDA) RNG, python `random`, numpy
        state.json                # the caller's dict: step, tokens seen, data position...

A checkpoint is written into ``checkpoints/.tmp-step-000500-<pid>/``, ``state.json``
last (its presence marks a finished directory), then every file and the directory are
fsync'ed and it is renamed onto ``step-000500`` (``rename`` is atomic on POSIX); only
then is ``latest`` replaced (written to ``.latest.tmp-<pid>`` and renamed onto it) and
are old checkpoints pruned. A writer killed at any moment leaves ``latest`` on a complete
checkpoint; its ``.tmp-*`` directory is ignored on load and removed by the next save.
This is the write-temp-then-rename protocol of Pillai et al., "All File Systems Are Not
Created Equal" (OSDI 2014, Sec. 2) and of LevelDB/SQLite's journals; the temp names,
fsyncs and renames are ``lmforge.fileio``'s (`new_temp_directory`, `commit_directory`,
`write_atomic`, `remove_stale_temp_files`).

Loading reads safetensors and JSON only: nothing is unpickled (DESIGN.md, Conventions).
Tensor files are ``lmforge.tensorfile``'s: tied weights (GPT-2's embedding and output
projection share one tensor) are stored once and the other names recorded as aliases in
the file's metadata, since safetensors refuses tensors that share storage.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import UserError
from lmforge.fileio import atomic_file, commit_directory, new_temp_directory, remove_stale_temp_files, write_atomic
from lmforge.tensorfile import load_tensors, save_tensors

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.json"
SHARDED_LAYOUT = "layout.json"  # marks a sharded checkpoint (one safetensors file per rank)
FORMAT = 1  # bump when the layout changes; load refuses a newer one
FORMAT_KEY = "lmforge_format"  # in safetensors metadata ("format" is often "pt" in other tools' files)

_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    """``step-000500``: zero-padded to six digits so that names sort by step up to 999,999."""
    return f"step-{step:06d}"


# --------------------------------------------------------------------------- save


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict,
    keep_last: int | None = 3,
) -> Path:
    """Write checkpoint ``run_dir/checkpoints/step-XXXXXX`` atomically; return its path.

    ``state`` must be JSON-serialisable (finite floats only); ``step`` is added to it.
    Then ``latest`` points at the new checkpoint and all but the newest ``keep_last``
    checkpoints are deleted (never the one ``latest`` names; ``None`` keeps all).
    Saving a step that already exists replaces it.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise UserError("keep_last must be a whole number of at least 1", keep_last, "pass e.g. 3, or None to keep all")
    if "step" in state and state["step"] != step:
        raise ValueError(f"state['step'] = {state['step']!r} disagrees with step = {step}")
    state_text = json.dumps({**state, "step": step}, indent=2, allow_nan=False, sort_keys=True) + "\n"

    tmp = begin_checkpoint(run_dir, step)
    try:
        save_tensors(tmp / MODEL_FILE, _unwrap(model).state_dict(), {FORMAT_KEY: str(FORMAT)})
        if optimizer is not None:
            tensors: dict[str, torch.Tensor] = {}
            encoded = _encode(optimizer.state_dict(), "", tensors)
            save_tensors(tmp / OPTIMIZER_TENSORS, tensors, {FORMAT_KEY: str(FORMAT)})
            write_atomic(tmp / OPTIMIZER_JSON, json.dumps({"format": FORMAT, "state_dict": encoded}) + "\n")
        write_rng(tmp / RNG_FILE)
        write_atomic(tmp / STATE_FILE, state_text)  # last: its presence marks a finished directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_checkpoint(run_dir, tmp, step, keep_last)


def begin_checkpoint(run_dir: Path, step: int, pid: int | None = None) -> Path:
    """A fresh ``checkpoints/.tmp-step-XXXXXX-<pid>/`` to write a checkpoint into
    (stale temporaries of dead writers removed first: `lmforge.fileio.remove_stale_temp_files`)."""
    ckpt_root = Path(run_dir) / CHECKPOINTS
    ckpt_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(ckpt_root)
    return new_temp_directory(ckpt_root / step_dir_name(step), pid)


def commit_checkpoint(run_dir: Path, tmp: Path, step: int, keep_last: int | None) -> Path:
    """fsync ``tmp`` and all it holds, rename it onto ``step-XXXXXX`` (re-saving a step swaps
    the old one out), then point ``latest`` at it and prune old ones; on failure ``tmp`` is
    removed and ``latest`` still names the previous one."""
    run_dir = Path(run_dir)
    name = step_dir_name(step)
    final = run_dir / CHECKPOINTS / name
    commit_directory(tmp, final)
    write_atomic(run_dir / LATEST, f"{CHECKPOINTS}/{name}\n")  # only after the directory's rename
    if keep_last is not None:
        _prune(run_dir / CHECKPOINTS, keep_last, keep=final)
    return final


def write_rng(path: Path) -> None:
    """This process's RNG states (torch CPU/CUDA, python, numpy) as safetensors."""
    save_tensors(path, *_rng_state())


def read_rng(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return _read_tensors(path, "cpu")


def restore_rng(rng: tuple[dict[str, torch.Tensor], dict[str, str]]) -> None:
    _set_rng_state(*rng)


def save_weights(
    path: Path, model: torch.nn.Module | None, state_dict: Mapping[str, torch.Tensor] | None = None
) -> Path:
    """Write ``model.state_dict()`` (or ``state_dict``) to one safetensors file atomically
    (the run's final ``model.safetensors``); tied names are stored once."""
    path = Path(path)
    with atomic_file(path) as tmp:  # .model.safetensors.tmp-PID, then renamed
        save_tensors(tmp, state_dict if state_dict is not None else _unwrap(model).state_dict(),
                     {FORMAT_KEY: str(FORMAT)})
    return path


# --------------------------------------------------------------------------- load


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``run_dir/latest`` names, else the newest complete one, else None.

    A missing run directory gives None too; ``load_checkpoint`` turns it into an error.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / CHECKPOINTS
    with contextlib.suppress(OSError, UnicodeDecodeError):
        named = (run_dir / LATEST).read_text(encoding="utf-8").strip()
        target = (run_dir / named).resolve()
        if target.parent == ckpt_root.resolve() and _is_complete(target):
            return run_dir / named
    steps = _step_dirs(ckpt_root)
    for _, path in reversed(steps):
        if _is_complete(path):
            return path
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return [p for _, p in _step_dirs(Path(run_dir) / CHECKPOINTS) if _is_complete(p)]


def load_checkpoint(
    path_or_run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    *,
    restore_rng: bool = True,
) -> dict:
    """Restore ``model`` (strict), ``optimizer`` (exactly) and the RNGs; return ``state.json``.

    ``path_or_run_dir`` is a checkpoint directory or a run directory (then its latest
    checkpoint). Everything is read and checked before anything is changed, so a
    mismatch leaves model and optimizer as they were. ``restore_rng=False`` for
    ``--init-from`` (new run, trained weights). Raises UserError for a missing run, no
    checkpoint, a corrupt file, or a checkpoint that does not fit the model/optimizer.
    """
    ckpt = resolve_checkpoint(path_or_run_dir)
    state = _read_json(ckpt / STATE_FILE)
    if not isinstance(state, dict):
        raise _corrupt(ckpt / STATE_FILE, "it does not hold a JSON object")
    weights, _ = _read_tensors(ckpt / MODEL_FILE, map_location)
    target = _unwrap(model)
    _check_fits(weights, target.state_dict(), ckpt)
    opt_state = None
    if optimizer is not None:
        if not (ckpt / OPTIMIZER_JSON).exists():
            raise UserError(
                "checkpoint holds no optimizer state", str(ckpt), "load it with optimizer=None (e.g. --init-from)"
            )
        meta = _read_json(ckpt / OPTIMIZER_JSON)
        if not isinstance(meta, dict) or "state_dict" not in meta:
            raise _corrupt(ckpt / OPTIMIZER_JSON, "it lacks 'state_dict'")
        _check_format(meta.get("format", FORMAT), ckpt / OPTIMIZER_JSON)
        tensors, _ = _read_tensors(ckpt / OPTIMIZER_TENSORS, map_location)
        try:
            opt_state = _decode(meta["state_dict"], tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise _corrupt(ckpt / OPTIMIZER_JSON, f"{type(e).__name__}: {e}") from None
        _check_optimizer_fits(opt_state, optimizer, ckpt)
    rng = _read_tensors(ckpt / RNG_FILE, "cpu") if restore_rng else None

    target.load_state_dict(weights, strict=True)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if rng is not None:
        _set_rng_state(*rng)
    return state


def load_weights(path: Path, model: torch.nn.Module, map_location: str | torch.device = "cpu") -> None:
    """Load a weights file written by ``save_weights`` (or a checkpoint's ``model.safetensors``) strictly."""
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", str(path), "check the path")
    weights, _ = _read_tensors(path, map_location)
    target = _unwrap(model)
    _check_fits(weights, target.state_dict(), path)
    target.load_state_dict(weights, strict=True)


def resolve_checkpoint(path_or_run_dir: Path) -> Path:
    """A checkpoint directory from a checkpoint or run directory, or a one-line UserError."""
    path = Path(path_or_run_dir)
    if not path.exists():
        raise UserError("run directory not found", str(path), "check the path, or start a new run without --resume")
    if not path.is_dir():
        raise UserError("not a run or checkpoint directory", str(path), "pass the run directory (runs/NAME)")
    if (path / STATE_FILE).exists() or _STEP_DIR.match(path.name):  # a checkpoint, not a run directory
        if not _is_complete(path):
            raise UserError("incomplete checkpoint", str(path), "pass the run directory to load its latest checkpoint")
        return path
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise UserError(
            "no checkpoint in run directory", str(path), "train with checkpointing first, or start a new run"
        )
    return ckpt


# --------------------------------------------------------------------------- tensors on disk


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _read_tensors(path: Path, map_location: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors with aliases restored as the same tensor, metadata) of a checkpoint's
    safetensors file (`lmforge.tensorfile.load_tensors`); UserError if unreadable or newer."""
    tensors, meta = load_tensors(path, map_location, what="corrupt checkpoint file", fix=_CORRUPT_FIX)
    if FORMAT_KEY in meta:
        _check_format(meta[FORMAT_KEY], path)
    return tensors, meta


def _fill_tied(weights: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Give a name the file lacks the tensor of a name it has when the model ties the two."""
    groups: dict[tuple, list[str]] = {}
    for name, t in expected.items():
        if t.numel() and t.device.type != "meta":
            view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
            groups.setdefault(view, []).append(name)
    for names in groups.values():
        present = [n for n in names if n in weights]
        for name in names:
            if name not in weights and present:
                weights[name] = weights[present[0]]


def _check_format(value: object, path: Path) -> None:
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise _corrupt(path, f"unknown format {value!r}") from None
    if version > FORMAT:
        raise UserError(
            "checkpoint written by a newer lmforge", f"{path} (format {version})", "upgrade lmforge to load it"
        )


def _check_fits(weights: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: Path) -> None:
    """UserError naming the first differences when a checkpoint does not fit the model.

    Names the model ties to a saved tensor are filled in first (files written by
    ``safetensors.torch.save_model`` or other tools that keep one name per tied tensor).
    """
    _fill_tied(weights, expected)
    problems = fit_problems(weights, expected, "checkpoint", check_dtype=True)
    if problems:
        raise UserError(
            "checkpoint does not fit the model: " + "; ".join(problems),
            str(where),
            "build the model from the run's config.yaml (same preset and vocab size) before loading",
        )


def fit_problems(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str,
                 check_dtype: bool = False) -> list[str]:
    """What keeps ``tensors`` (from a file) from loading into ``expected`` (a state dict):
    missing and unexpected names, shape (and optionally dtype) mismatches, with examples."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [
        f"{k} is {tuple(tensors[k].shape)}{f' {tensors[k].dtype}' if check_dtype else ''} in the {where} but "
        f"{tuple(v.shape)}{f' {v.dtype}' if check_dtype else ''} in the model"
        for k, v in expected.items()
        if k in tensors and (tensors[k].shape != v.shape or (check_dtype and tensors[k].dtype != v.dtype))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        kind = "shape or dtype mismatches" if check_dtype else "shape mismatches"
        problems.append(f"{len(wrong)} {kind} (e.g. {wrong[0]})")
    return problems


def _check_optimizer_fits(saved: dict, optimizer: torch.optim.Optimizer, where: Path) -> None:
    """UserError when the saved param groups differ in number or size from ``optimizer``'s."""
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict):
        raise _corrupt(where / OPTIMIZER_JSON, "it lacks 'state' or 'param_groups'")
    saved_sizes = [len(g.get("params", ())) for g in groups]
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if saved_sizes != sizes:
        raise UserError(
            "checkpoint's optimizer does not fit: parameter groups of sizes "
            f"{saved_sizes} saved but {sizes} in this optimizer",
            str(where),
            "use the run's config.yaml (same model, weight decay groups and optimizer), or --init-from to reset it",
        )


# --------------------------------------------------------------------------- optimizer state as JSON + tensors


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of a state_dict; tensors go to ``tensors`` under their dotted path.

    Dicts with string keys stay dicts; others (the optimizer's int-keyed ``state``)
    become ``{"__dict__": [[key, value], ...]}``; tuples ``{"__tuple__": [...]}`` so that
    ``betas`` come back as tuples and the loaded state_dict equals the saved one.
    """
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {"__tensor__": path}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{path}.{k}" if path else k, tensors) for k, v in value.items()}
        return {"__dict__": [[k, _encode(v, f"{path}.{k}" if path else str(k), tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint optimizer state entry {path!r} of type {type(value).__name__}")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of ``_encode``."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        if set(value) == {"__dict__"}:
            return {k: _decode(v, tensors) for k, v in value["__dict__"]}
        return {k: _decode(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


# --------------------------------------------------------------------------- RNG


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata for torch CPU/CUDA, python ``random`` and numpy's global RNG."""
    import numpy as np

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    tensors["python"] = torch.tensor(internal, dtype=torch.int64)  # 624 words + position
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta = {
        FORMAT_KEY: str(FORMAT),
        "python": json.dumps([version, gauss]),
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)]),
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    import numpy as np

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    if "python" in tensors and "python" in meta:
        version, gauss = json.loads(meta["python"])
        random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    if "numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, cached = json.loads(meta["numpy"])
        np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------- files and directories


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _corrupt(path, "the file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None


_CORRUPT_FIX = "delete that checkpoint directory and resume from an earlier one (see the run's checkpoints/)"


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(f"corrupt checkpoint file: {why}", str(path), _CORRUPT_FIX)


def _is_complete(path: Path) -> bool:
    """state.json and rng.safetensors, and the weights: model.safetensors, or the
    layout.json of a sharded checkpoint (``sharded_checkpoint``)."""
    return path.is_dir() and all((path / f).is_file() for f in (STATE_FILE, RNG_FILE)) and (
        (path / MODEL_FILE).is_file() or (path / SHARDED_LAYOUT).is_file())


def _step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` directory, ascending by step."""
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def _prune(ckpt_root: Path, keep_last: int, keep: Path) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, never ``keep``."""
    steps = _step_dirs(ckpt_root)
    for _, path in steps[: max(0, len(steps) - keep_last)]:
        if path.name != keep.name:
            shutil.rmtree(path, ignore_errors=True)
