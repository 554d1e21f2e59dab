"""Training throughput: lmforge's decoder against Hugging Face transformers' GPT2LMHeadModel.

Same GPT-2 shape (6 layers, d_model 384, 6 heads, vocab 8192, seq 256), same batch, same
bf16 autocast, same AdamW settings; one full training step = forward, backward,
gradient clipping, optimizer step. The two run alternately in this one process, after
warm-up, REPEATS times; medians and the ratio are printed as JSON, with this CPU's
measured bf16 matmul peak (a 2048-cube product) and each side's MFU against it,
counting 6N + 12 L H Q T FLOPs per token (PaLM, Chowdhery et al. 2022, App. B).

    pip install -e ".[hf]"   # transformers, for the peer
    python benchmarks/train_throughput.py [--repeats 5] [--steps 5] [--batch 8] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

import torch

from lmforge.models.build import build_model
from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.train.optim import build_optimizer

SPEC = ModelSpec(n_decoder_layers=6, d_model=384, n_heads=6, vocab_size=8192, context=256, name="gpt2-6x384")
SEQ = 256


def matmul_peak(size: int = 2048, seconds: float = 2.0) -> float:
    """Best bf16 FLOP/s of a size^3 matmul over ``seconds``."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def hf_model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=SPEC.vocab_size, n_positions=SPEC.context, n_embd=SPEC.d_model,
                        n_layer=SPEC.n_decoder_layers, n_head=SPEC.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config)
    return model


class Side:
    """One contender: a model, its optimizer and a step function."""

    def __init__(self, name: str, model: torch.nn.Module, logits_of, compile_model: bool):
        self.name = name
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        forward = torch.compile(model) if compile_model else model
        self.logits_of = lambda x: logits_of(forward, x)

    def step(self, batch: torch.Tensor) -> float:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = self.logits_of(inputs)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss)


def timed(side: Side, batches: list[torch.Tensor]) -> float:
    """Tokens per second over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        side.step(batch)
    return sum(b[:, :-1].numel() for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--compile", action="store_true", help="torch.compile lmforge's model")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = Side("lmforge", build_model(SPEC), lambda f, x: f(x), args.compile)
    peer = Side("transformers", hf_model(), lambda f, x: f(input_ids=x).logits, False)
    assert ours.params == param_counts(SPEC).total
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, SPEC.vocab_size, (args.batch, SEQ + 1), generator=generator) for _ in range(args.steps)]
    for side in (ours, peer):  # warm-up (and compilation)
        for batch in batches[:2]:
            side.step(batch)
    rates: dict[str, list[float]] = {ours.name: [], peer.name: []}
    for _ in range(args.repeats):
        for side in (ours, peer):
            rates[side.name].append(timed(side, batches))
    peak = matmul_peak()
    per_token = palm_flops_per_token(SPEC, SEQ)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "shape": "GPT-2 style, 6 layers, d_model 384, 6 heads, vocab 8192, seq 256",
        "params": {"lmforge": ours.params, "transformers": peer.params},
        "batch_sequences": args.batch, "steps_per_run": args.steps, "repeats": args.repeats,
        "precision": "bf16 autocast, fp32 weights and AdamW", "compiled": args.compile,
        "tokens_per_s_median": {k: round(v) for k, v in medians.items()},
        "tokens_per_s_all": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "ratio_lmforge_over_transformers": round(medians["lmforge"] / medians["transformers"], 3),
        "bf16_matmul_peak_gflops": round(peak / 1e9, 1),
        "flops_per_token": per_token,
        "mfu": {k: round(v * per_token / peak, 3) for k, v in medians.items()},
    }, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
