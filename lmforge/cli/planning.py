"""The planning verbs: plan, memory, cost, advise. Pure Python: they never import torch.

Each function reads its flags, calls the planner (``lmforge.plan``) and prints the
result as tables (``lmforge.cli.tables``) or JSON.
"""

from __future__ import annotations

from typing import Literal

from lmforge.cli import tables
from lmforge.cli.output import print_json


def memory(
    model: str | None = None,
    /,
    *,
    params: str | None = None,
    gpus: str | None = None,
    n_gpus: int | None = None,
    gpu_memory: str | None = None,
    micro_batch: int = 1,
    seq_len: int | None = None,
    precision: Literal["bf16", "fp16", "fp32"] = "bf16",
    optimizer: Literal["adamw", "sgd", "adam8bit"] = "adamw",
    recompute: Literal["none", "selective", "full"] = "selective",
    offload: bool = False,
    recipe: Literal["master", "autocast"] = "master",
    group_size: int = 128,
    kv_batch: int = 1,
    json: bool = False,
) -> None:
    """Bytes to store and to train a model, per GPU under ddp and ZeRO stages 1-3.

    Prints the weights at fp32/fp16/bf16/int8/int4, the KV cache, then the training
    memory per GPU (weights, gradients, optimizer states, fp32 master weights,
    activations, a stated margin) under each strategy with its reduction against DDP;
    says whether it fits the GPU and the least sharding that does.

    Args:
        model: a preset (e.g. llama-2-7b, gpt2, t5-base); or use --params
        params: a bare parameter count (e.g. 500B): a Llama-style shape is assumed
        gpus: GPUs, e.g. 8xH100 or A100-80GB
        n_gpus: number of GPUs when --gpus names only the kind
        gpu_memory: memory per GPU (e.g. 24GiB), overrides the catalog's
        micro_batch: sequences per GPU per step
        seq_len: tokens per sequence (default: the model's context)
        precision: training precision: bf16/fp16 mixed (fp32 master weights) or pure fp32
        optimizer: adamw (12 B/param of fp32 states), sgd (momentum), adam8bit
        recompute: activation recomputation: none, selective (attention, as SDPA/flash), full
        offload: offload optimizer states and master weights to CPU (ZeRO-Offload)
        recipe: master (16-bit weights + fp32 master: DeepSpeed, Megatron) or autocast (fp32 weights: lmforge train)
        group_size: int4 quantization group size for the storage table
        kv_batch: sequences in the KV-cache figure (at the full context)
        json: print JSON instead of tables

    Examples:
        lmforge memory llama-2-7b --gpus 8xH100
        lmforge memory --params 500B --gpus 64xH100
        lmforge memory gpt2-xl --gpu-memory 24GiB --recompute full
    """
    from lmforge.plan.memory_report import memory_report
    from lmforge.plan.resolve import resolve_gpus, resolve_model

    report = memory_report(
        resolve_model(model, params),
        resolve_gpus(gpus, gpu_memory, n_gpus),
        micro_batch=micro_batch,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        recompute=recompute,
        offload_optimizer=offload,
        recipe=recipe,
        group_size=group_size,
        kv_batch=kv_batch,
    )
    print_json(report.to_dict()) if json else tables.memory(report)


def plan(
    *,
    flops: str | None = None,
    gpus: str | None = None,
    days: float | None = None,
    mfu: float = 0.4,
    dollars: float | None = None,
    price: float | None = None,
    params: str | None = None,
    tokens: str | None = None,
    laws: list[str] | None = None,
    law: str | None = None,
    compare: bool = False,
    emit_config: str | None = None,
    emit_law: str = "20x",
    json: bool = False,
) -> None:
    """Compute-optimal model size and tokens for a budget, under each scaling law side by side.

    The budget is one of: --flops; --gpus with --days (and --mfu); --dollars (with
    --gpus for the GPU kind and --price); or a fixed --params and/or --tokens. For each
    law (Kaplan, Chinchilla rounded and unrounded, Epoch AI's refit, 20 tokens per
    parameter, Chinchilla Approach 1): N_opt, D_opt, tokens per parameter, predicted
    loss, training time and cost on the GPUs, memory per GPU and the least sharding
    that fits. --law adds your own law (law.json from lmforge scaling fit) as one more
    row, its loss on your data and tokenizer. --compare prints how known models sit
    against the laws instead.

    Args:
        flops: training compute in FLOPs, e.g. 5.76e23
        gpus: GPUs, e.g. 64xH100 (with --days, or to price --dollars)
        days: wall-clock days on --gpus
        mfu: model FLOPs utilization, a fraction (0.4 = 40%)
        dollars: money to spend, US dollars
        price: price per GPU-hour in US dollars (default: the catalog's example rate)
        params: fix the model size, e.g. 7B
        tokens: fix the training tokens, e.g. 2T
        laws: only these laws (kaplan, chinchilla, chinchilla-unrounded, epoch, 20x, approach1)
        law: your law.json (lmforge scaling fit): one more row, named fitted
        compare: print known models (Chinchilla, LLaMA-65B, GPT-3, OPT, BLOOM, BloombergGPT) against the laws
        emit_config: write a training config (YAML) for lmforge train with the shape and tokens of --emit-law
        emit_law: the law whose N and D go into --emit-config
        json: print JSON instead of tables

    Examples:
        lmforge plan --flops 5.76e23
        lmforge plan --gpus 64xH100 --days 14 --mfu 0.4
        lmforge plan --dollars 1e6 --gpus H100 --price 2.5
        lmforge plan --params 7B --tokens 2T --gpus 64xH100
        lmforge plan --compare
        lmforge plan --flops 1e18 --law runs/sweep/law.json
        lmforge plan --flops 1e18 --emit-config run.yaml && lmforge train --config run.yaml
    """
    extra = ()
    if law is not None:
        from lmforge.plan.fitted import read_law

        extra = (read_law(law),)
    if compare:
        from lmforge.plan.known_runs import compare_known

        rows = compare_known(laws, extra_laws=extra)
        print_json([r.to_dict() for r in rows]) if json else tables.known_runs(rows)
        return
    from lmforge.plan.allocate import resolve_budget
    from lmforge.plan.planner import make_plan

    budget = resolve_budget(flops=flops, gpus=gpus, days=days, mfu=mfu, dollars=dollars, price_per_hour=price,
                            params=params, tokens=tokens)
    result = make_plan(budget, laws, extra_laws=extra)
    path = None
    if emit_config is not None:  # written first: a refused path prints nothing but the error
        from lmforge.train.from_plan import emit_training_config

        path = emit_training_config(result, emit_law, emit_config)
    print_json(result.to_dict()) if json else tables.plan(result)
    if path is not None and not json:
        tables.print_lines(f"wrote {path}: train it with lmforge train --config {path}")


def cost(
    model: str | None = None,
    /,
    *,
    params: str | None = None,
    tokens: str | None = None,
    gpus: str = "8xH100",
    mfu: float = 0.4,
    price: float | None = None,
    tune_tokens: str = "1B",
    lora_rank: int = 16,
    batch: int = 8,
    prompt_tokens: int = 512,
    new_tokens: int = 256,
    precision: Literal["bf16", "fp16", "fp32", "int8", "int4"] = "bf16",
    json: bool = False,
) -> None:
    """Pretraining, fine-tuning, inference and hosting cost of a model on a kind of GPU.

    Pretraining: 6ND FLOPs / (peak x MFU) -> GPU-hours -> dollars. Fine-tuning: full
    (6N per token) and LoRA (about 4N per token). Inference: prefill compute-bound,
    decode memory-bandwidth-bound at small batch; dollars per million input and output
    tokens at batch 1 and --batch. Hosting: GPUs to hold weights + KV cache at
    --precision, per month. Prices are example rates unless --price is given.

    Args:
        model: a preset (e.g. llama-2-7b); or use --params
        params: a bare parameter count (e.g. 70B)
        tokens: pretraining tokens (default: 20 per parameter, Chinchilla-optimal)
        gpus: GPUs for pretraining, e.g. 64xH100; their kind also serves tuning, inference and hosting
        mfu: model FLOPs utilization for training and prefill, a fraction
        price: price per GPU-hour in US dollars (default: the catalog's example rate)
        tune_tokens: fine-tuning tokens
        lora_rank: LoRA rank
        batch: sequences decoded together for the batched inference row
        prompt_tokens: prompt tokens per request
        new_tokens: generated tokens per request
        precision: weight precision for inference and hosting
        json: print JSON instead of tables

    Examples:
        lmforge cost llama-2-7b --tokens 2T --gpus 64xH100
        lmforge cost --params 70B --gpus 512xH100 --price 2.1
    """
    from lmforge.plan.cost_report import cost_report
    from lmforge.plan.resolve import resolve_model

    report = cost_report(resolve_model(model, params), tokens=tokens, gpus=gpus, mfu=mfu, price_per_hour=price,
                         tune_tokens=tune_tokens, lora_rank=lora_rank, batch=batch, prompt_tokens=prompt_tokens,
                         new_tokens=new_tokens, precision=precision)
    print_json(report.to_dict()) if json else tables.cost(report)


def advise(
    *,
    task: str,
    budget: str | None = None,
    law: str = "chinchilla",
    json: bool = False,
) -> None:
    """Which model family and pretraining objective fit a task, and why.

    Tasks: classification, ner, embeddings, generation, chat, code, translation,
    summarization, question-answering. With --budget (FLOPs), also the compute-optimal
    size and tokens from the scaling law.

    Args:
        task: the task, e.g. summarization
        budget: training compute in FLOPs, e.g. 1e21
        law: scaling law for the size (see lmforge plan)
        json: print JSON instead of tables

    Examples:
        lmforge advise --task summarization
        lmforge advise --task classification --budget 1e20
    """
    from lmforge.plan.advise import advise as advise_task
    from lmforge.plan.units import parse_count

    result = advise_task(task, None if budget is None else parse_count(budget, "--budget"), law)
    print_json(result.to_dict()) if json else tables.advice(result)
