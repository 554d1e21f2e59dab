"""Peak GPU memory of one training step against the planner (issue 6's GPU check).

For GPT-2 124M and 350M (gpt2, gpt2-medium presets), one optimizer step of lmforge's
own recipe (fp32 weights, bf16 autocast, fused AdamW) on one GPU; prints JSON with
``torch.cuda.max_memory_allocated`` beside ``training_memory(recipe="autocast")``
without its margin (the margin covers the CUDA context and fragmentation, which
``max_memory_allocated`` does not count). Target: within 10%.

    python benchmarks/gpu_memory_check.py --micro-batch 8 --seq-len 1024

Needs a CUDA GPU; on a machine without one it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmforge.models.build import build_model
from lmforge.plan.memory import training_memory
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec
from lmforge.train.optim import build_optimizer


def measure(preset: str, micro_batch: int, seq_len: int, recompute: str, *, device: str = "cuda",
            spec: ModelSpec | None = None) -> dict:
    """Peak bytes of two training steps of ``preset`` (or ``spec``, labelled ``preset``)
    beside the planner's ``training_memory(recipe="autocast")`` without its margin.

    On CUDA the peak is ``torch.cuda.max_memory_allocated`` since the model was built. On a
    CPU (``benchmarks/gpu_checks.py --smoke``) it is torch's ``MemTracker`` over the second
    step: a stand-in so that the comparison runs, not a figure to check the planner with."""
    spec = get_preset(preset).spec if spec is None else spec
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(spec).to(device)
    model.gradient_checkpointing = recompute == "full"
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, spec.vocab_size, (micro_batch, seq_len + 1), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the second step has the optimizer states allocated from the start
    measured, meter = _peak_of(step, model, optimizer, device)
    planned = training_memory(spec, micro_batch=micro_batch, seq_len=seq_len, precision="bf16", strategy="single",
                              recompute=recompute, recipe="autocast", margin_fraction=0.0, margin_fixed_bytes=0)
    return {"preset": preset, "params": planned.n_params, "micro_batch": micro_batch, "seq_len": seq_len,
            "recompute": recompute, "measured_peak_bytes": measured, "planned_bytes": planned.total,
            "planned_model_states": planned.model_states, "planned_activations": planned.activations,
            "ratio_measured_over_planned": measured / planned.total, "meter": meter}


def _peak_of(step: Callable[[], None], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             device: str) -> tuple[int, str]:
    """(peak bytes once ``step`` has run, what measured them)."""
    if device == "cuda":
        step()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    from torch.distributed._tools.mem_tracker import MemTracker  # tracks one iteration only

    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")[torch.device(device)]["Total"]
    return int(peak), "torch MemTracker, second step (CPU stand-in)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--presets", nargs="+", default=["gpt2", "gpt2-medium"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check runs on a GPU machine", file=sys.stderr)
        return
    rows = [measure(p, args.micro_batch, args.seq_len, r) for p in args.presets for r in ("selective", "full")]
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
