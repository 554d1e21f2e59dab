"""The checks a session lent one NVIDIA GPU (H100 or H200) runs, in one script, as one JSON object.

Each check is one key; a check that fails records ``{"error": "..."}`` and the others still run.

- ``machine``: card, torch and CUDA versions, the memory the driver shows, the card's entry in
  lmforge's catalog (`lmforge.plan.hardware.GPUS`, matched by ``torch.cuda.get_device_name()``).
- ``mfu``: GPT-2 124M (preset ``gpt2``) training, ``torch.compile``d, bf16 autocast, lmforge's
  AdamW (fused where torch has it), micro-batch 16 x 1024 tokens; tokens/s after warm-up, MFU
  = tokens/s x (6N + 12 L H Q T) / the catalog's dense bf16 peak (`lmforge.plan.flops.mfu`,
  PaLM App. B). Target: >= 40% (llm.c reaches ~35-41% for this model on an H100).
- ``memory``: peak memory of one training step of ``gpt2`` and ``gpt2-medium`` (selective and
  full recompute) against the planner (`benchmarks/gpu_memory_check.py`'s ``measure``).
  Target: every row within 10%.
- ``fp16_gradscaler``: the 124M model in fp16 autocast with ``torch.amp.GradScaler``, in the
  order of lmforge's own training step (`lmforge.train.step`); the loss falls and stays finite.
- ``ddp_nccl``: lmforge's ``ddp`` strategy on a process group of one (nccl) trains a few steps
  that agree (allclose) with lmforge's ``single`` strategy from the same initial weights.
- ``decode``: new tokens/s of `lmforge.generate.engine.generate` (and of a bare KV-cache loop)
  for the 124M model at batch 1 in bf16, as a fraction of the bandwidth roofline: bytes read per
  token (weights + KV cache, `lmforge.plan.storage`) over the bandwidth of a device-to-device
  copy measured here (bytes read + written / time) and over the catalog's.

    python benchmarks/gpu_checks.py --out gpu.json

Expected to take 2-5 minutes on an H100, most of it torch.compile's first step (an estimate: not
yet timed on a GPU); every size is a flag, ``--only`` runs some checks. ``--device cpu --smoke``
runs every check's code path on this CPU with a 2-layer model, gloo for nccl and no compile, in
seconds: the JSON's structure and arithmetic, not its figures (tests/benchmarks/test_gpu_checks.py).
Without CUDA and without ``--device cpu`` it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import copy_bandwidth, decode_bytes_per_token  # noqa: E402
from gpu_memory_check import measure  # noqa: E402

from lmforge.distributed.env import DistEnv, setup, teardown  # noqa: E402
from lmforge.distributed.strategies import apply_ddp, apply_single  # noqa: E402
from lmforge.generate.config import GenerateConfig  # noqa: E402
from lmforge.generate.engine import generate  # noqa: E402
from lmforge.models.build import build_model  # noqa: E402
from lmforge.plan.flops import mfu, palm_flops_per_token  # noqa: E402
from lmforge.plan.hardware import GPU, gpu_for_device_name  # noqa: E402
from lmforge.plan.presets import get_preset  # noqa: E402
from lmforge.plan.specs import ModelSpec  # noqa: E402
from lmforge.train.optim import build_optimizer  # noqa: E402
from lmforge.train.peak import catalog_peak, matmul_rate, peak_flops  # noqa: E402
from lmforge.train.precision import autocast, choose_precision  # noqa: E402

MFU_TARGET = 0.40
MEMORY_TOLERANCE = 0.10  # |measured / planned - 1|
DDP_ATOL = 1e-5  # fp32 weights after the steps; lr 1e-3 moves each weight by ~1e-3 per step
SMOKE_SPEC = get_preset("tiny-gpt2").spec.with_(n_decoder_layers=2, d_model=64, n_heads=4, vocab_size=256,
                                                context=64, name="smoke-2x64")


# ---- the card ---------------------------------------------------------------------------------

# (pattern over the lower-cased name with spaces, dashes and "nvidia" removed, catalog name),
# first match wins; "H100 NVL" (835 TF dense bf16) and "L40S" are not in the catalog.
def match_card(name: str) -> dict:
    """The catalog entry (`lmforge.plan.hardware.GPUS`) of the card ``torch.cuda.get_device_name()``
    calls ``name``: its dense bf16 peak and bandwidth, or nulls and a note for an unknown card."""
    return _card(name, gpu_for_device_name(name))


def _card(name: str, gpu: GPU | None) -> dict:
    if gpu is None:
        return {"name": name, "catalog": None, "bf16_peak_flops": None, "bandwidth_bytes_s": None,
                "note": f"{name!r} is not in lmforge's GPU catalog (lmforge.plan.hardware.GPUS): no catalog peak"}
    return {"name": name, "catalog": gpu.name, "bf16_peak_flops": gpu.bf16_flops,
            "bandwidth_bytes_s": gpu.bandwidth_bytes, "note": f"catalog {gpu.name}: {gpu.source}"}


# ---- what every check shares ------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """The device and the sizes of every check (the GPU's defaults, or tiny ones for --smoke)."""

    device: torch.device
    smoke: bool
    compile: bool
    micro_batch: int  # mfu
    seq_len: int
    warmup_steps: int
    timed_steps: int
    memory_micro_batch: int
    memory_seq_len: int
    fp16_steps: int
    ddp_steps: int
    prompt_tokens: int  # decode
    new_tokens: int
    copy_mib: int

    def spec(self, preset: str) -> ModelSpec:
        """The preset's spec; under --smoke the 2-layer stand-in (a 3-layer one for the 350M)."""
        if not self.smoke:
            return get_preset(preset).spec
        return SMOKE_SPEC.with_(n_decoder_layers=3) if preset == "gpt2-medium" else SMOKE_SPEC

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Free what the last check left (compiled graphs, cached blocks) before the next one."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def random_tokens(spec: ModelSpec, rows: int, seq_len: int, device: torch.device, seed: int) -> torch.Tensor:
    """(rows, seq_len + 1) token ids: inputs and their next-token targets."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.vocab_size, (rows, seq_len + 1), generator=generator).to(device)


def make_optimizer(model: torch.nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """lmforge's AdamW (decay groups; fused where torch has the kernel)."""
    return build_optimizer(model, lr=lr, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)


def train_step(forward: Callable, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               precision: str, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One step in the order of `lmforge.train.step.train_step`: forward under ``precision``'s
    autocast, (scaled) backward, unscale, clip to 1.0, (scaler) step; the loss, not synced."""
    with autocast(batch.device.type, precision):
        _, loss = forward(batch[:, :-1], batch[:, 1:])  # logits (B, T, V), loss in fp32
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def training_precision(setup: Setup) -> str:
    """bf16 on the GPU; on a CPU lmforge's own choice (bf16 only where a probe finds it fast)."""
    return "bf16" if setup.cuda else choose_precision("auto", setup.device).precision


# ---- machine ----------------------------------------------------------------------------------

def check_machine(setup: Setup) -> dict:
    out = {"device": str(setup.device), "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": setup.smoke}
    if not setup.cuda:
        from lmforge.train.machine import cpu_capability, cpu_model

        return {**out, "name": cpu_model(), "cores": os.cpu_count(), "capability": cpu_capability()}
    props = torch.cuda.get_device_properties(setup.device)
    free, total = torch.cuda.mem_get_info(setup.device)
    card = match_card(torch.cuda.get_device_name(setup.device))
    lmforge_peak = catalog_peak(setup.device)  # what `lmforge train` divides by, for comparison
    return {**out, "name": card["name"], "capability": f"{props.major}.{props.minor}",
            "sms": props.multi_processor_count, "memory_total_bytes": int(total), "memory_free_bytes": int(free),
            "card": card,
            "lmforge_catalog_peak_flops": lmforge_peak, "peaks_agree": lmforge_peak == card["bf16_peak_flops"],
            "driver": nvidia_smi()}


def nvidia_smi() -> str | None:
    """``driver version, name, memory`` from nvidia-smi, None where it is missing."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


# ---- mfu --------------------------------------------------------------------------------------

def timed_steps(forward: Callable, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: list[torch.Tensor], precision: str, steps: int) -> tuple[float, float]:
    """(seconds, last loss) of ``steps`` training steps over ``batches`` in turn, synced at both ends."""
    sync(batches[0].device)
    start = time.perf_counter()
    loss = torch.zeros(())
    for i in range(steps):
        loss = train_step(forward, model, optimizer, batches[i % len(batches)], precision)
    sync(batches[0].device)
    return time.perf_counter() - start, float(loss)


def check_mfu(setup: Setup) -> dict:
    spec, precision = setup.spec("gpt2"), training_precision(setup)
    torch.manual_seed(0)
    model = build_model(spec).to(setup.device)
    optimizer = make_optimizer(model)
    forward = torch.compile(model) if setup.compile else model
    batches = [random_tokens(spec, setup.micro_batch, setup.seq_len, setup.device, seed) for seed in range(4)]
    warmup_s, _ = timed_steps(forward, model, optimizer, batches, precision, setup.warmup_steps)  # 1st compiles
    seconds, loss = timed_steps(forward, model, optimizer, batches, precision, setup.timed_steps)
    tokens_per_s = setup.timed_steps * setup.micro_batch * setup.seq_len / seconds
    peak, source = mfu_peak(setup, precision)
    out = {"spec": spec.to_dict(), "params": model.num_params(), "precision": precision,
           "compiled": setup.compile, "fused_adamw": bool(optimizer.defaults.get("fused")),
           "micro_batch": setup.micro_batch, "seq_len": setup.seq_len, "warmup_steps": setup.warmup_steps,
           "warmup_s": warmup_s, "timed_steps": setup.timed_steps, "timed_s": seconds,
           "tokens_per_s": tokens_per_s, "flops_per_token": palm_flops_per_token(spec, setup.seq_len),
           "flops_formula": "6N + 12 L H Q T (lmforge.plan.flops.palm_flops_per_token)",
           "peak_flops": peak, "peak_source": source, "last_loss": loss, "target": MFU_TARGET}
    if not setup.compile:
        out["note"] = "not compiled (--smoke or --no-compile)"
    if setup.cuda:  # whether this card reaches its catalog peak at all (power cap, clocks, PCIe)
        measured = matmul_rate("cuda", torch.bfloat16)
        out.update(measured_matmul_bf16_flops=measured, mfu_vs_measured_matmul=mfu(tokens_per_s, spec, measured,
                                                                                  setup.seq_len))
    if peak is None:
        return {**out, "mfu": None, "pass": None}
    value = mfu(tokens_per_s, spec, peak, setup.seq_len)
    return {**out, "mfu": value, "pass": value >= MFU_TARGET}


def mfu_peak(setup: Setup, precision: str) -> tuple[float | None, str]:
    """The catalog's dense bf16 peak of this card; on a CPU lmforge's measured matmul peak."""
    if not setup.cuda:
        return peak_flops(setup.device, precision)
    card = match_card(torch.cuda.get_device_name(setup.device))
    return card["bf16_peak_flops"], card["note"]


# ---- memory -----------------------------------------------------------------------------------

def check_memory(setup: Setup) -> dict:
    rows = []
    for preset in ("gpt2", "gpt2-medium"):
        for recompute in ("selective", "full"):
            label = preset if not setup.smoke else f"{preset} (smoke stand-in {setup.spec(preset).n_layers} layers)"
            rows.append(measure(label, setup.memory_micro_batch, setup.memory_seq_len, recompute,
                                device=setup.device.type, spec=setup.spec(preset)))
            release(setup.device)
    worst = max(abs(r["ratio_measured_over_planned"] - 1) for r in rows)
    return {"rows": rows, "worst_relative_error": worst, "tolerance": MEMORY_TOLERANCE,
            "pass": worst <= MEMORY_TOLERANCE}


# ---- fp16 + GradScaler ------------------------------------------------------------------------

def check_fp16(setup: Setup) -> dict:
    """Steps on one fixed batch (the loss must fall), fp16 autocast, a GradScaler on this device."""
    spec = setup.spec("gpt2")
    torch.manual_seed(0)
    model = build_model(spec).to(setup.device)
    optimizer = make_optimizer(model, lr=1e-3 if setup.cuda else 1e-2)
    scaler = torch.amp.GradScaler(setup.device.type)  # a CPU GradScaler exists since torch 2.3
    batch = random_tokens(spec, setup.memory_micro_batch, setup.memory_seq_len, setup.device, seed=1)
    initial = scaler.get_scale()
    losses, scales, skipped = [], [], 0
    for _ in range(setup.fp16_steps):
        before = scaler.get_scale()
        losses.append(train_step(model, model, optimizer, batch, "fp16", scaler))
        scales.append(scaler.get_scale())
        skipped += scales[-1] < before  # an inf/nan gradient: the step was skipped, the scale halved
    values = [float(v) for v in torch.stack(losses).cpu()]
    finite = all(math.isfinite(v) for v in values)
    fell = values[-1] < values[0]
    return {"steps": setup.fp16_steps, "losses": values, "first_loss": values[0], "last_loss": values[-1],
            "finite": finite, "loss_fell": fell, "scale": scales[-1], "initial_scale": initial,
            "skipped_steps": skipped, "scaler_device": setup.device.type,
            "pass": finite and fell and skipped < setup.fp16_steps and math.isfinite(scales[-1])}


# ---- DDP over nccl ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def group_of_one(backend: str, device: torch.device):
    """lmforge's process group (`lmforge.distributed.env.setup`) for a world of one: the
    variables torchrun would set, on a free port, for the duration only; destroyed after."""
    saved = dict(os.environ)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env = None
    try:
        env = setup("ddp", backend, str(device), timeout=120.0)
        yield env
    finally:
        if env is not None:
            teardown(env)
        os.environ.clear()
        os.environ.update(saved)


def check_ddp(setup: Setup) -> dict:
    """lmforge's ddp strategy (world 1) against its single strategy, fp32, same init and batches."""
    spec = setup.spec("gpt2")
    backend = "nccl" if setup.cuda else "gloo"
    torch.manual_seed(0)
    reference = build_model(spec).to(setup.device)
    twin = copy.deepcopy(reference)
    batches = [random_tokens(spec, 4 if setup.cuda else 2, min(256, spec.context), setup.device, seed)
               for seed in range(setup.ddp_steps)]
    with group_of_one(backend, setup.device) as env:
        alone = DistEnv(0, 1, 0, 1, setup.device, None, 0)
        single = apply_single(reference, alone, make_optimizer, "fp32")
        ddp = apply_ddp(twin, env, make_optimizer, "fp32")
        pairs = [(float(train_step(single.forward, single.model, single.optimizer, batch, "fp32")),
                  float(train_step(ddp.forward, ddp.model, ddp.optimizer, batch, "fp32"))) for batch in batches]
        wrapped = type(ddp.forward).__name__
    pairs_of_weights = list(zip(reference.parameters(), twin.parameters(), strict=True))
    with torch.no_grad():
        diffs = [float((a - b).abs().max()) for a, b in pairs_of_weights]
        equal = all(torch.allclose(a, b, rtol=0, atol=DDP_ATOL) for a, b in pairs_of_weights)
    loss_diff = max(abs(a - b) for a, b in pairs)
    return {"backend": backend, "world_size": env.world, "wrapper": wrapped, "steps": setup.ddp_steps,
            "losses_single": [a for a, _ in pairs], "losses_ddp": [b for _, b in pairs],
            "max_abs_loss_diff": loss_diff, "max_abs_weight_diff": max(diffs), "atol": DDP_ATOL,
            "allclose": equal, "group_destroyed": not torch.distributed.is_initialized(),
            "pass": equal and loss_diff <= DDP_ATOL}


# ---- decode -----------------------------------------------------------------------------------

class IdTokenizer:
    """Token ids as text ``<17><4>``: what `generate` needs (encode, decode, eos_id), no vocabulary."""

    eos_id = None

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in re.findall(r"<(\d+)>", text)]

    def decode(self, ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)


def engine_tokens_per_s(model, prompt_ids: list[int], new: int, device: torch.device) -> float:
    """New tokens/s of `lmforge.generate.engine.generate`, greedy, batch 1, prefill included."""
    tok = IdTokenizer()
    config = GenerateConfig(max_new_tokens=new, temperature=0.0, top_k=0)
    generate(model, tok, [tok.decode(prompt_ids)], config.replace(max_new_tokens=8))  # warm-up
    sync(device)
    start = time.perf_counter()
    (result,) = generate(model, tok, [tok.decode(prompt_ids)], config)
    sync(device)
    assert len(result.ids) == new and result.finish_reason == "length", (len(result.ids), result.finish_reason)
    return new / (time.perf_counter() - start)


def cache_loop_tokens_per_s(model, prompt_ids: list[int], new: int, device: torch.device) -> float:
    """New tokens/s of the model's KV cache fed its own argmax, no sampling chain, no host sync."""
    def run(n: int) -> None:
        cache = model.new_cache()
        idx = torch.tensor([prompt_ids], device=device)  # (1, P)
        logits = model(idx, cache=cache)[:, -1]  # (1, V)
        for _ in range(n):
            logits = model(logits.argmax(-1, keepdim=True), cache=cache)[:, -1]  # (1, 1) in, (1, V) out

    with torch.inference_mode():
        run(8)
        sync(device)
        start = time.perf_counter()
        run(new)
        sync(device)
    return new / (time.perf_counter() - start)


def check_decode(setup: Setup) -> dict:
    spec = setup.spec("gpt2")
    precision = "bf16" if setup.cuda else "fp32"
    torch.manual_seed(0)
    model = build_model(spec).to(setup.device, dtype=torch.bfloat16 if setup.cuda else torch.float32).eval()
    prompt_ids = torch.randint(0, spec.vocab_size, (setup.prompt_tokens,)).tolist()
    rates = {"engine": engine_tokens_per_s(model, prompt_ids, setup.new_tokens, setup.device),
             "cache_loop": cache_loop_tokens_per_s(model, prompt_ids, setup.new_tokens, setup.device)}
    bandwidth = copy_bandwidth(setup.device, setup.copy_mib, copies=10)
    per_token = decode_bytes_per_token(spec, precision, setup.prompt_tokens, setup.new_tokens)
    catalog = match_card(torch.cuda.get_device_name(setup.device))["bandwidth_bytes_s"] if setup.cuda else None
    out = {"params": model.num_params(), "precision": precision, "batch": 1, "prompt_tokens": setup.prompt_tokens,
           "new_tokens": setup.new_tokens, "bytes_per_token": per_token,
           "copy_bandwidth_bytes_s": bandwidth, "copy_mib": setup.copy_mib,
           "bandwidth_note": "device copy, bytes read + written / time", "catalog_bandwidth_bytes_s": catalog,
           "roofline_tokens_per_s": bandwidth / per_token}
    for name, rate in rates.items():
        out[f"{name}_tokens_per_s"] = rate
        out[f"{name}_roofline_fraction"] = rate * per_token / bandwidth
        out[f"{name}_catalog_roofline_fraction"] = None if catalog is None else rate * per_token / catalog
    return out


# ---- running them -----------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Setup], dict]] = {
    "machine": check_machine,
    "memory": check_memory,  # first: its peak counts only what it allocates
    "mfu": check_mfu,
    "fp16_gradscaler": check_fp16,
    "ddp_nccl": check_ddp,
    "decode": check_decode,
}


def run_checks(setup: Setup, only: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Every check (or ``only`` these), each guarded: an exception becomes ``{"error": ...}``."""
    results: dict = {}
    for name, check in CHECKS.items():
        if only and name not in only and name != "machine":
            continue
        start = time.perf_counter()
        try:
            results[name] = check(setup)
        except Exception as error:  # one failing check must not stop the others
            results[name] = {"error": f"{type(error).__name__}: {error}",
                             "where": traceback.format_exc(limit=-3).strip().splitlines()[-3:]}
        results[name]["seconds"] = time.perf_counter() - start
        log(f"{name}: {results[name]['seconds']:.1f} s" + (" (error)" if "error" in results[name] else ""))
        release(setup.device)
    return results


def plain(value):
    """JSON-safe: non-finite floats as strings ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def make_setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    if args.smoke:
        return Setup(device, True, False, micro_batch=2, seq_len=32, warmup_steps=1, timed_steps=2,
                     memory_micro_batch=2, memory_seq_len=32, fp16_steps=8, ddp_steps=3, prompt_tokens=4,
                     new_tokens=12, copy_mib=8)
    return Setup(device, False, not args.no_compile, args.micro_batch, args.seq_len, args.warmup_steps,
                 args.timed_steps, args.memory_micro_batch, args.memory_seq_len, args.fp16_steps, args.ddp_steps,
                 args.prompt_tokens, args.new_tokens, args.copy_mib)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes: the code paths, in seconds")
    parser.add_argument("--only", nargs="+", choices=[c for c in CHECKS if c != "machine"], default=None)
    parser.add_argument("--micro-batch", type=int, default=16, help="mfu: sequences per step")
    parser.add_argument("--seq-len", type=int, default=1024, help="mfu: tokens per sequence")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--timed-steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--memory-micro-batch", type=int, default=8, help="memory and fp16: sequences per step")
    parser.add_argument("--memory-seq-len", type=int, default=1024)
    parser.add_argument("--fp16-steps", type=int, default=30)
    parser.add_argument("--ddp-steps", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--copy-mib", type=int, default=1024, help="decode: MiB per bandwidth copy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: these checks run on a GPU machine (or pass --device cpu --smoke)")
        return
    setup = make_setup(args)
    results = plain(run_checks(setup, args.only, log=lambda line: print(line, file=sys.stderr, flush=True)))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
