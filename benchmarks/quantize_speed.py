"""Decode speed of quantized models: tokens/s at batch 1 for fp32, bf16, int8 and int4 on this CPU.

Two GPT-2-shaped decoders with random weights (speed does not depend on what was learned):
"small" (6 layers, d_model 384, 6 heads, vocab 8192; the model of generate_speed.py) and
"base" (12 layers, d_model 768, 12 heads, vocab 8192; GPT-2 small's body). Each contender
is made from the same fp32 model by `quantize_model` and set up as `load_run` does
(`lmforge.quantize.paths`: the compute dtype and each quantized linear's path chosen by
measurement on this machine; int4 on the kernel path re-laid in PyTorch's blocked layout).
Embeddings and head stay 16-bit (the default of `lmforge quantize`) unless the name says ``-all``.

Timed: lmforge's engine (prefill, then one token per step through the KV cache; greedy)
making 128 new tokens from a 16-token prompt at batch 1, contenders alternating in one
process, median of ``--runs``. Also timed, to show what the kernels buy: int8 and int4
with the kernels switched off (dequantize the weight each call, then ``F.linear`` in bf16),
and torchao 0.18's int8 weight-only (``Int8WeightOnlyConfig``) when torchao can be imported.
torchao 0.18 has no int4 weight-only path on a CPU (its packing formats need CUDA or mslk).

    python benchmarks/quantize_speed.py [--runs 5] [--models small base]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402
from generate_speed import StubTokenizer  # noqa: E402

from lmforge.generate.config import GenerateConfig  # noqa: E402
from lmforge.generate.engine import generate  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.plan.specs import ModelSpec  # noqa: E402
from lmforge.quantize.convert import make_scheme, model_bytes, quantize_model  # noqa: E402
from lmforge.quantize.modules import Int4Linear, Int8Linear  # noqa: E402
from lmforge.quantize.paths import apply_compute_plan, compute_plan  # noqa: E402

MODELS = {
    "small": ModelSpec(n_decoder_layers=6, d_model=384, n_heads=6, vocab_size=8192, context=512, name="small"),
    "base": ModelSpec(n_decoder_layers=12, d_model=768, n_heads=12, vocab_size=8192, context=512, name="base"),
}
PROMPT_LEN, NEW_TOKENS = 16, 128


def contenders(base: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """name -> (model, compute path)."""
    out = {"fp32": (base, "F.linear fp32 (MKL)")}
    for name, args in [("bf16", ("bf16",)), ("int8", ("int8",)), ("int4-g32", ("int4", 32)),
                       ("int4-g128", ("int4", 128)), ("int4-g32-all", ("int4", 32, "absmax", False))]:
        scheme = make_scheme(*args)
        model = quantize_model(copy.deepcopy(base), scheme)
        plan = compute_plan(scheme.dtype, scheme.precision)
        apply_compute_plan(model, plan)
        path = plan.describe(scheme.precision)
        out[name] = (model, path + (", embedding and tied head int4 dequantized per call" if "all" in name else ""))
    slow8 = quantize_model(copy.deepcopy(base), make_scheme("int8"))
    for m in slow8.modules():
        if isinstance(m, Int8Linear):
            m.kernel = False
    out["int8-dequant"] = (slow8, "own module, kernel off: dequantize to bf16 + F.linear")
    slow4 = quantize_model(copy.deepcopy(base), make_scheme("int4", 32))
    assert all(m.layout == "plain" for m in slow4.modules() if isinstance(m, Int4Linear))
    out["int4-g32-dequant"] = (slow4, "own module, plain layout: unpack + dequantize to bf16 + F.linear")
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        ao = copy.deepcopy(base).to(torch.bfloat16)
        quantize_(ao, Int8WeightOnlyConfig())
        out["torchao-int8"] = (ao, "torchao 0.18 Int8WeightOnlyConfig (bf16; embeddings bf16)")
    except Exception as exc:  # torchao absent, or its CPU path broken: say so in the JSON
        out["torchao-int8"] = (None, f"not run: {type(exc).__name__}: {str(exc)[:120]}")
    return out


def decode(model: torch.nn.Module, prompt: list[int]) -> float:
    """New tokens per second (greedy, batch 1, through the engine)."""
    config = GenerateConfig(max_new_tokens=NEW_TOKENS, temperature=0.0, top_k=0)
    start = time.perf_counter()
    result = generate(model, StubTokenizer(), [" ".join(map(str, prompt))], config)
    seconds = time.perf_counter() - start
    assert len(result[0].ids) == NEW_TOKENS
    return NEW_TOKENS / seconds


def bench(spec: ModelSpec, runs: int) -> dict:
    torch.manual_seed(0)
    base = build_model(spec).eval()
    models = contenders(base)
    prompt = torch.randint(0, spec.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(0)).tolist()
    rates: dict[str, list[float]] = {name: [] for name, (m, _) in models.items() if m is not None}
    greedy: dict[str, list[int]] = {}
    for name in rates:  # warm up; keep the greedy tokens to compare with fp32's
        decode(models[name][0], prompt)
        config = GenerateConfig(max_new_tokens=32, temperature=0.0, top_k=0)
        greedy[name] = generate(models[name][0], StubTokenizer(), [" ".join(map(str, prompt))], config)[0].ids
    for _ in range(runs):
        for name in rates:
            rates[name].append(decode(models[name][0], prompt))
            print(spec.name, name, round(rates[name][-1], 1), file=sys.stderr, flush=True)
    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    rows = {}
    for name, (model, path) in models.items():
        if model is None:
            rows[name] = {"path": path}
            continue
        median = statistics.median(rates[name])
        rows[name] = {
            "tokens_per_s": round(median, 1), "runs": [round(r, 1) for r in rates[name]],
            "vs_fp32": round(median / fp32, 2), "vs_bf16": round(median / bf16, 2),
            "weight_bytes_in_memory": model_bytes(model), "path": path,
            "greedy_tokens_equal_fp32_of_32": next((i for i, (a, b) in enumerate(
                zip(greedy[name], greedy["fp32"], strict=True)) if a != b), 32),
        }
    return {"params": sum(p.numel() for p in base.parameters()),
            "shape": {"n_layers": spec.n_decoder_layers, "d_model": spec.d_model, "n_heads": spec.n_heads,
                      "vocab": spec.vocab_size}, "contenders": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    report = {"benchmark": "quantize_speed", "date": datetime.date.today().isoformat(), "machine": machine(),
              "settings": {"batch": 1, "prompt": PROMPT_LEN, "new_tokens": NEW_TOKENS, "greedy": True,
                           "runs": args.runs, "statistic": "median tokens/s, contenders alternating"},
              "models": {name: bench(MODELS[name], args.runs) for name in args.models}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
