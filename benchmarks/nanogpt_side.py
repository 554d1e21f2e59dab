"""nanoGPT's model (karpathy/nanoGPT ``model.py``: GPT, GPTConfig) as a third side of the
decoder training benchmarks, taken from a checkout the user points at.

nanoGPT is never copied into this repository: ``--nanogpt PATH`` (default: the
``NANOGPT_DIR`` environment variable) names the directory of a checkout, and its
``model.py`` is imported from there by file path. The model is built in the shape of an
lmforge decoder spec and trained as its authors ship it: its own ``forward(idx, targets)``
loss, its own init, ``F.scaled_dot_product_attention`` (its "flash" path) where torch has it.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    python benchmarks/train_throughput.py --nanogpt /tmp/nanoGPT
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from common import Side

from lmforge.plan.specs import ModelSpec

ENV = "NANOGPT_DIR"
NOT_GIVEN = f"not given (--nanogpt PATH or {ENV}=PATH: a karpathy/nanoGPT checkout); two sides only"
NAME = "nanoGPT"


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nanogpt", default=os.environ.get(ENV) or None, metavar="PATH",
                        help=f"a karpathy/nanoGPT checkout whose model.py is the third side (default: ${ENV})")


def load(checkout: str | os.PathLike) -> ModuleType:
    """``model.py`` of the nanoGPT checkout at ``checkout``, imported by file path."""
    path = Path(checkout).expanduser().resolve() / "model.py"
    if not path.is_file():
        raise SystemExit(f"--nanogpt {checkout}: no model.py there (expected a karpathy/nanoGPT checkout)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for needed in ("GPT", "GPTConfig"):
        if not hasattr(module, needed):
            raise SystemExit(f"{path} has no {needed}: not nanoGPT's model.py")
    return module


def revision(checkout: str | os.PathLike) -> dict:
    """Where the model came from: the checkout, its git commit (when it is a git work tree)
    and the SHA-256 of its model.py (which identifies it either way)."""
    root = Path(checkout).expanduser().resolve()
    commit = "unknown (not a git work tree)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        top, head = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                                   capture_output=True, text=True, check=True, timeout=10).stdout.split()
        if Path(top).resolve() == root:  # the checkout's own repository, not one it was unpacked into
            commit = head
    digest = hashlib.sha256((root / "model.py").read_bytes()).hexdigest()
    return {"checkout": str(root), "commit": commit, "model_py_sha256": digest[:16]}


def config(module: ModuleType, spec: ModelSpec):
    """nanoGPT's GPTConfig in the shape of ``spec`` (a decoder), dropout 0."""
    if spec.family != "decoder":
        raise ValueError(f"nanoGPT has only a decoder; spec is {spec.family}")
    return module.GPTConfig(block_size=spec.context, vocab_size=spec.vocab_size, n_layer=spec.n_decoder_layers,
                            n_head=spec.n_heads, n_embd=spec.d_model, dropout=0.0, bias=spec.bias)


def differences(spec: ModelSpec) -> list[str]:
    """How nanoGPT's model of ``spec``'s shape differs from lmforge's (empty lists none)."""
    out = []
    unsupported = {
        "mlp": (spec.mlp, "gelu"), "norm": (spec.norm, "layernorm"), "positions": (spec.positions, "learned"),
        "tied_embeddings": (spec.tied_embeddings, True), "final_norm": (spec.final_norm, True),
        "embedding_norm": (spec.embedding_norm, False), "d_ff": (spec.ffn, 4 * spec.d_model),
        "kv_heads": (spec.kv_heads, spec.n_heads), "d_head": (spec.d_head, spec.d_model // spec.n_heads),
        "norm_eps": (spec.norm_eps, 1e-5), "position_offset": (spec.position_offset, 0),
    }
    for field, (ours, theirs) in unsupported.items():
        if ours != theirs:
            out.append(f"{field}: lmforge {ours}, nanoGPT has only {theirs}")
    if spec.mlp == "gelu":
        out.append("GELU: nanoGPT uses the exact (erf) nn.GELU(); lmforge and transformers GPT-2's tanh "
                   "approximation (same FLOPs, a different elementwise kernel)")
    if not spec.bias:
        out.append("bias=False: lmforge drops the linear biases only; nanoGPT's bias flag also drops the "
                   "LayerNorm biases")
    return out


def side(module: ModuleType, spec: ModelSpec, precision: str) -> tuple[Side, dict]:
    """nanoGPT's GPT in ``spec``'s shape as a benchmark Side (never compiled: as transformers'),
    its loss its own ``forward(idx, targets)``; and what to report about it."""
    cfg = config(module, spec)
    with contextlib.redirect_stdout(sys.stderr):  # GPT() prints its parameter count; keep stdout JSON
        model = module.GPT(cfg)
    info = {"config": dataclasses.asdict(cfg), "flash_sdpa": bool(model.transformer.h[0].attn.flash),
            "compiled": False, "differences": differences(spec) or ["none"]}
    return Side(NAME, model, nanogpt_loss, precision=precision), info


def nanogpt_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """nanoGPT's own loss: ``forward(idx, targets)`` returns (logits, loss). Inputs and
    targets contiguous, as its train.py's get_batch makes them (its loss ``view``s targets)."""
    return model(batch[:, :-1].contiguous(), batch[:, 1:].contiguous())[1]
