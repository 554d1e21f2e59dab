"""Training throughput: lmforge's decoder against Hugging Face transformers' GPT2LMHeadModel
(and nanoGPT's GPT, given a checkout).

Same GPT-2 shape (6 layers, d_model 384, 6 heads, vocab 8192, seq 256), same batch, same
precision (lmforge's ``auto`` choice here: bf16 autocast only where this CPU computes it
fast, else fp32; ``--precision`` to force one), same AdamW settings; one full training
step = forward, backward, gradient clipping, optimizer step. The two run alternately in
this one process, after warm-up, REPEATS times; medians and the ratio are printed as
JSON, with lmforge's measured matmul peak in that precision and each side's MFU against
it, counting 6N + 12 L H Q T FLOPs per token (PaLM, Chowdhery et al. 2022, App. B).

With ``--nanogpt PATH`` (default: ``$NANOGPT_DIR``), a karpathy/nanoGPT checkout, its
``model.py`` (GPT, GPTConfig; imported from there, never copied here) is a third side of
the same shape, dropout 0, trained with its own ``forward(idx, targets)`` loss and
attention as shipped; the JSON then adds its tokens/s and the lmforge/nanoGPT ratio, and
names the checkout's commit and any shape difference (`nanogpt_side.py`). Without it the
two sides run as before and the JSON says nanoGPT was not given.

Also printed: the tokens/s lmforge predicts for its side before timing it
(`lmforge.train.calibrate`, what ``plan.json`` reports for a run), beside the measurement.

    pip install -e ".[hf]"   # transformers, for the peer
    python benchmarks/train_throughput.py [--repeats 5] [--steps 5] [--batch 8] [--compile] [--precision auto]
                                          [--nanogpt /tmp/nanoGPT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable

import nanogpt_side
import torch
from common import Side, alternate, machine, matmul_peak, pick_precision

from lmforge.models.build import build_model
from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.train.calibrate import calibrate

SPEC = ModelSpec(n_decoder_layers=6, d_model=384, n_heads=6, vocab_size=8192, context=256, name="gpt2-6x384")
SEQ = 256


def hf_model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=SPEC.vocab_size, n_positions=SPEC.context, n_embd=SPEC.d_model,
                        n_layer=SPEC.n_decoder_layers, n_head=SPEC.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config)


def causal_loss(logits_of: Callable) -> Callable:
    def loss_of(model, batch: torch.Tensor) -> torch.Tensor:
        logits = logits_of(model, batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    return loss_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--compile", action="store_true", help="torch.compile lmforge's model (only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    nanogpt_side.add_argument(parser)
    args = parser.parse_args()
    nanogpt = nanogpt_side.load(args.nanogpt) if args.nanogpt else None
    if nanogpt is None:
        print(f"nanoGPT: {nanogpt_side.NOT_GIVEN}", file=sys.stderr, flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = pick_precision(args.precision)
    predicted = calibrate(SPEC, seq_len=SEQ, micro_batch=args.batch, precision=precision).tokens_per_second()
    torch.manual_seed(0)
    ours = Side("lmforge", build_model(SPEC), causal_loss(lambda m, x: m(x)), args.compile, precision)
    peer = Side("transformers", hf_model(), causal_loss(lambda m, x: m(input_ids=x).logits), precision=precision)
    assert ours.params == param_counts(SPEC).total
    sides = [ours, peer]
    nano_info: str | dict = nanogpt_side.NOT_GIVEN
    if nanogpt is not None:
        third, nano_info = nanogpt_side.side(nanogpt, SPEC, precision)
        nano_info = {**nanogpt_side.revision(args.nanogpt), **nano_info}
        sides.append(third)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, SPEC.vocab_size, (args.batch, SEQ + 1), generator=generator) for _ in range(args.steps)]
    rates = alternate(sides, batches, args.batch * SEQ, args.repeats)
    peak = matmul_peak(precision)
    per_token = palm_flops_per_token(SPEC, SEQ)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "machine": machine(),
        "shape": "GPT-2 style, 6 layers, d_model 384, 6 heads, vocab 8192, seq 256",
        "params": {side.name: side.params for side in sides},
        "nanogpt": nano_info,
        "batch_sequences": args.batch, "steps_per_run": args.steps, "repeats": args.repeats,
        "precision": f"{precision} ({'autocast, ' if precision != 'fp32' else ''}fp32 weights and AdamW)",
        "compiled": args.compile,
        "tokens_per_s_median": {k: round(v) for k, v in medians.items()},
        "tokens_per_s_all": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "ratio_lmforge_over_transformers": round(medians["lmforge"] / medians["transformers"], 3),
        **({"ratio_lmforge_over_nanogpt": round(medians["lmforge"] / medians[nanogpt_side.NAME], 3)}
           if nanogpt is not None else {}),
        "lmforge_predicted_tokens_per_s": round(predicted),
        "lmforge_measured_over_predicted": round(medians["lmforge"] / predicted, 3),
        f"{precision}_matmul_peak_gflops": round(peak / 1e9, 1),
        "flops_per_token": per_token,
        "mfu": {k: round(v * per_token / peak, 3) for k, v in medians.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
