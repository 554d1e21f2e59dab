"""Does ``torch.compile`` speed up lmforge's cached decode step on this machine?

gpt-fast's route to fast batch-1 decoding is one compiled decode step over a static KV
cache. This times lmforge's decoder (generate_speed.py's 6 x 384 model, fp32, row-major
weights) making 128 greedy tokens after a 16-token prompt through its own `KVCache`, eager
and ``torch.compile(model, dynamic=True)`` (the cache length grows every step, so static
shapes would recompile at each one), alternating, and prints tokens/s, the compilation's
seconds and Dynamo's graph counters as JSON.

    python benchmarks/compiled_decode.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine  # noqa: E402
from generate_speed import SPEC  # noqa: E402

from lmforge.models.build import build_model  # noqa: E402

NEW_TOKENS = 128


def tokens_per_s(model, step, prompt: torch.Tensor) -> float:
    """Greedy tokens/s of ``step(token (1, 1), cache) -> logits (1, 1, V)`` after the prompt's prefill."""
    cache = model.new_cache()
    with torch.inference_mode():
        token = model(prompt, cache=cache)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        start = time.perf_counter()
        for _ in range(NEW_TOKENS):
            token = step(token, cache)[:, -1].argmax(-1, keepdim=True)
        return NEW_TOKENS / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    prompt = torch.randint(0, SPEC.vocab_size, (1, 16))  # (1, P)
    compiled = torch.compile(model, dynamic=True)
    steps = {"eager": lambda t, c: model(t, cache=c), "compiled": lambda t, c: compiled(t, cache=c)}
    start = time.perf_counter()
    tokens_per_s(model, steps["compiled"], prompt)  # compiles
    compile_s = time.perf_counter() - start
    tokens_per_s(model, steps["eager"], prompt)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.runs):
        for name, step in steps.items():
            rates[name].append(tokens_per_s(model, step, prompt))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(json.dumps({"machine": machine(), "new_tokens": NEW_TOKENS, "precision": "fp32",
                      "tokens_per_s_median": {k: round(v, 1) for k, v in medians.items()},
                      "tokens_per_s_all": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                      "ratio_compiled_over_eager": round(medians["compiled"] / medians["eager"], 3),
                      "first_compiled_run_s": round(compile_s, 1),
                      "dynamo": dict(torch._dynamo.utils.counters["stats"])}, indent=2))


if __name__ == "__main__":
    main()
