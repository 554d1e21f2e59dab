"""`lmforge eval`: a trained run on its validation shards or on given text, per source.

Causal models: loss, perplexity and bits per byte; masked-LM and encoder-decoder models:
their objective's loss and perplexity (and masked-token accuracy), corrupting the text
with a fixed seed so that two evaluations agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmforge.data.sources import iter_documents, parse_source
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.runs import load_run
from lmforge.train.objective import EVAL_SEED_OFFSET, Objective, resolve_objective
from lmforge.train.validation import EvalResult, combine, evaluate_objective, evaluate_stream

DEFAULT_MAX_TOKENS = 1_000_000


def token_stream(tokenizer: Tokenizer, documents, max_tokens: int) -> np.ndarray:
    """Documents tokenized, each followed by eos, up to ``max_tokens + 1`` tokens."""
    pieces, count = [], 0
    for document in documents:
        ids = tokenizer.encode(document) + [tokenizer.eos_id]
        pieces.append(np.asarray(ids, dtype=np.int64))
        count += len(ids)
        if count > max_tokens:
            break
    return np.concatenate(pieces)[: max_tokens + 1] if pieces else np.zeros(0, dtype=np.int64)


def evaluate_run(run_dir: Path, data: list[str] | None = None, *, max_tokens: int | None = None,
                 batch_size: int = 8) -> dict[str, EvalResult]:
    """Per-source results and their token-weighted total ("all"); quantized runs too."""
    run = load_run(run_dir)
    limit = max_tokens or DEFAULT_MAX_TOKENS
    token_bytes = torch.tensor(run.tokenizer.token_bytes(), dtype=torch.long)
    seq_len = run.config.data.seq_len
    streams: dict[str, np.ndarray] = {}
    if data:
        for spec in (parse_source(arg) for arg in data):
            streams[spec.name] = token_stream(run.tokenizer, iter_documents(spec), limit)
    else:
        from lmforge.data.shards import open_shards

        shards = Path(run.config.data.shards) if run.config.data.shards else run.run_dir / "data"
        if not shards.is_dir():
            raise UserError("the run has no validation split here", str(shards),
                            "pass --data FILE to evaluate on text (an imported run has none of its own)")
        store = open_shards(shards, run.tokenizer)
        streams = {name: store.tokens(name, "val") for name in store.sources}
    objective = Objective(resolve_objective(run.config.objective, run.spec, run.tokenizer), run.config.objective,
                          run.tokenizer, seq_len)
    results = {}
    for name, stream in streams.items():
        if objective.name == "causal":
            results[name] = evaluate_stream(run.model, stream, source=name, seq_len=seq_len, token_bytes=token_bytes,
                                            batch_size=batch_size, max_tokens=limit)
        else:
            results[name] = evaluate_objective(run.model, stream, objective, source=name, seq_len=seq_len,
                                               batch_size=batch_size, max_tokens=limit,
                                               seed=run.config.train.seed + EVAL_SEED_OFFSET)
    results["all"] = combine("all", list(results.values()))
    return results
