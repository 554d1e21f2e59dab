"""Tensors on disk: the one safetensors writer and reader of lmforge, with shared tensors
stored once (checkpoints, the final ``model.safetensors``, quantized runs).

safetensors refuses tensors that share storage (safetensors docs, "Torch shared
tensors"), but a tied model's state dict has them: GPT-2's token embedding and output
head are one Parameter, a quantized tied pair shares its int8 codes and scales. The rule:

* two names are **aliases** when they are the very same memory view: same device,
  storage, storage offset, shape, strides and dtype. The first is stored; the others are
  listed in the metadata key ``aliases`` as JSON ``{alias: stored name}``, and the reader
  gives every alias the stored name's tensor object (so ``head.weight is wte.weight``
  holds again after loading a state dict);
* any other tensor that shares storage with one stored before it (a slice, a view at an
  offset, a transpose, another dtype) is **not** an alias: it is written as its own
  contiguous copy, as is every non-contiguous tensor.

Files written by earlier lmforge versions (``train/checkpoint.py``'s and
``quantize/store.py``'s writers: the same ``aliases`` key, ``lmforge_format`` "1") and by
``safetensors.torch.save_model`` (metadata ``{removed name: kept name}``) load with this
reader. Loaded tensors lie at 64-byte aligned addresses: safetensors hands them out at any
offset, and PyTorch's AVX-512 int8 weight-only kernels crash on unaligned weights (a
segmentation fault in torch 2.13; ``lmforge.quantize.modules``). Nothing is unpickled.
The writer is not atomic by itself: callers write into an `lmforge.fileio.atomic_directory`
or `atomic_file`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from lmforge.errors import UserError
from lmforge.fileio import fsync_file, save_safetensors

ALIASES_KEY = "aliases"  # metadata: JSON {alias: stored name}
ALIGNMENT = 64  # bytes: one cache line, an AVX-512 register


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to the safetensors file ``path``, each shared view once (the other
    names as ``aliases`` metadata), fsynced; return the path. A failed write raises the
    ``OSError`` it is (`lmforge.fileio.save_safetensors`)."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}  # (device, storage, offset, shape, strides, dtype) -> stored name
    storages: set[tuple] = set()  # (device, storage) of every tensor stored so far
    for name, t in tensors.items():
        t = t.detach()
        if t.numel() == 0 or t.device.type == "meta":  # no memory to share
            unique[name] = t.contiguous()
            continue
        storage = (t.device, t.untyped_storage().data_ptr())
        view = (*storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if view in views:
            aliases[name] = views[view]
            continue
        if storage in storages:  # part of (or overlapping) a tensor stored before: its own copy
            t = t.clone(memory_format=torch.contiguous_format)
        else:
            storages.add(storage)
            t = t.contiguous()
        views[view] = name
        unique[name] = t
    meta = dict(metadata or {})
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    path = Path(path)
    save_safetensors(unique, path, meta)
    fsync_file(path)
    return path


def load_tensors(path: str | Path, device: str | torch.device = "cpu", *, what: str = "unreadable tensor file",
                 fix: str = "write the file again") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, aliases restored as the stored name's tensor object; the file's metadata).

    A missing, truncated or malformed file raises a one-line UserError
    ``{what}: {why} ({path}); {fix}``: the caller names what the file is and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: the file is missing", str(path), fix)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: _aligned(f.get_tensor(k)) for k in f.keys()}
        aliases = json.loads(meta.get(ALIASES_KEY, "{}"))
        if not isinstance(aliases, dict):
            raise ValueError(f"metadata {ALIASES_KEY!r} is not a JSON object")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{what}: {type(e).__name__}: {e}", str(path), fix) from None
    for alias, stored in aliases.items():
        if stored not in tensors:
            raise UserError(f"{what}: alias {alias!r} names missing tensor {stored!r}", str(path), fix)
        tensors[alias] = tensors[stored]
    for alias, stored in meta.items():  # safetensors.torch.save_model's convention: {removed name: kept name}
        if alias not in tensors and stored in tensors:
            tensors[alias] = tensors[stored]
    return tensors, meta


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` at a 64-byte aligned address (a copy when it is not; PyTorch allocates aligned)."""
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


def tensor_data_bytes(path: str | Path) -> int:
    """Bytes of tensor data in a safetensors file: its size less the 8-byte header length
    (little-endian u64) and the JSON header (safetensors format spec)."""
    path = Path(path)
    with open(path, "rb") as f:
        (header,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - header
