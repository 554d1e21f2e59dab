"""Held-out text for a quantized model's quality, and the calibration statistics taken on it.

Quality is the run's own measure (``lmforge.train.validation``): loss, perplexity and bits
per byte for causal models; the objective's loss and perplexity for masked-LM and
encoder-decoder models (corrupted with the same fixed seed as ``lmforge eval``). The text
is the run's validation split of each source, or a calibration file.

Calibration statistics: the mean squared input E[x_j^2] of every linear layer over that
text, the diagonal of GPTQ's proxy Hessian (Frantar et al. 2022, Eq. 1-2), which weighs
the error of each input feature in the MSE scale search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.errors import UserError
from lmforge.runs import LoadedRun
from lmforge.train.objective import EVAL_SEED_OFFSET, Objective, resolve_objective
from lmforge.train.validation import EvalResult, combine, evaluate_objective, evaluate_stream

DEFAULT_EVAL_TOKENS = 65_536  # per source: a few seconds on a CPU for a small model


def calibration_stream(run: LoadedRun, path: str | Path, max_tokens: int) -> np.ndarray:
    """The tokens of a UTF-8 text file (then eos), at most ``max_tokens + 1``; UserError if
    it is missing, not text, or empty."""
    path = Path(path)
    if not path.is_file():
        raise UserError("calibration file not found", str(path), "pass the path of a UTF-8 text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("the calibration file is not UTF-8 text", str(path), "save it as UTF-8") from None
    if not text.strip():
        raise UserError("the calibration file is empty", str(path), "pass a file with held-out text (a few KB)")
    ids = run.tokenizer.encode(text) + [run.tokenizer.eos_id]
    stream = np.asarray(ids[: max_tokens + 1], dtype=np.int64)
    if len(stream) < run.config.data.seq_len + 1 and _objective(run).name != "causal":
        raise UserError("the calibration text is shorter than one sequence", f"{len(stream)} tokens",
                        f"pass at least {run.config.data.seq_len + 1} tokens of text")
    return stream


def held_out_streams(run: LoadedRun, calibration: str | Path | None = None,
                     max_tokens: int = DEFAULT_EVAL_TOKENS) -> dict[str, np.ndarray]:
    """{source: tokens}: the calibration file's, or the run's validation split of each source."""
    if calibration is not None:
        return {"calibration": calibration_stream(run, calibration, max_tokens)}
    from lmforge.data.shards import open_shards

    shards = Path(run.config.data.shards) if run.config.data.shards else run.run_dir / "data"
    if not shards.is_dir():
        raise UserError("the run's token shards are gone, so there is no held-out text", str(shards),
                        "pass --calibration PATH (a UTF-8 text file the model was not trained on)")
    store = open_shards(shards, run.tokenizer)
    streams = {name: np.asarray(store.tokens(name, "val")[: max_tokens + 1]) for name in store.sources}
    streams = {name: s for name, s in streams.items() if len(s) > 1}
    if not streams:
        raise UserError("the run has no validation tokens", str(shards), "pass --calibration PATH")
    return streams


def _objective(run: LoadedRun) -> Objective:
    return Objective(resolve_objective(run.config.objective, run.spec, run.tokenizer), run.config.objective,
                     run.tokenizer, run.config.data.seq_len)


def evaluate(model: nn.Module, run: LoadedRun, streams: dict[str, np.ndarray], batch_size: int = 8) -> EvalResult:
    """Token-weighted result of ``model`` over ``streams`` (the run's tokenizer, objective, seq_len)."""
    objective = _objective(run)
    seq_len = run.config.data.seq_len
    token_bytes = torch.tensor(run.tokenizer.token_bytes(), dtype=torch.long)
    results = []
    for name, stream in streams.items():
        if objective.name == "causal":
            results.append(evaluate_stream(model, stream, source=name, seq_len=seq_len, token_bytes=token_bytes,
                                           batch_size=batch_size))
        else:
            results.append(evaluate_objective(model, stream, objective, source=name, seq_len=seq_len,
                                              batch_size=batch_size, seed=run.config.train.seed + EVAL_SEED_OFFSET))
    return combine("all", results)


def input_importance(model: nn.Module, run: LoadedRun, streams: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{linear name: (in,) mean of x_j^2 over every token it saw} from one pass over ``streams``."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])  # (tokens, in)
            sums[name] = sums.get(name, 0) + x.square().sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    seen = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in seen:
            seen.add(id(module))
            handles.append(module.register_forward_pre_hook(hook(name)))
    try:
        evaluate(model, run, streams)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name in sums}
