"""Tensors on disk for quantized runs: safetensors with shared tensors stored once.

Same convention as ``lmforge.train.checkpoint`` (so either reader loads either file):
names that view the very same memory (a tied embedding and output head, or their shared
int8 codes and scales) are stored once and the other names listed in the metadata key
``aliases`` as {alias: stored name}, since safetensors refuses tensors that share
storage (safetensors docs, "Torch shared tensors"). Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from lmforge.errors import UserError
from lmforge.fileio import save_safetensors

ALIGNMENT = 64  # bytes: one cache line, an AVX-512 register


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` to ``path`` (each shared view once, the rest as aliases), fsync'ed."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in tensors.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t.contiguous().clone() if not t.is_contiguous() else t
    meta = dict(metadata)
    if aliases:
        meta["aliases"] = json.dumps(aliases, sort_keys=True)
    save_safetensors(unique, path, meta)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, with aliases restored as the same tensor object; metadata). UserError if unreadable."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: _aligned(f.get_tensor(k)) for k in f.keys()}
        aliases = json.loads(meta.get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"unreadable weights file: {type(e).__name__}: {e}", str(path),
                        "quantize the run again (lmforge quantize RUN_DIR --force)") from None
    for alias, stored in aliases.items():
        if stored not in tensors:
            raise UserError(f"weights file names a missing tensor {stored!r}", str(path),
                            "quantize the run again (lmforge quantize RUN_DIR --force)")
        tensors[alias] = tensors[stored]
    return tensors, meta


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` in memory aligned to 64 bytes (a copy when it is not). safetensors hands out
    tensors at arbitrary offsets, and PyTorch's AVX-512 weight-only kernels crash on
    unaligned int8 weights (a segmentation fault in torch 2.13)."""
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


def tensor_data_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file: its size less the 8-byte length and the JSON header."""
    path = Path(path)
    with open(path, "rb") as f:
        (header,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - header
