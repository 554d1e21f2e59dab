"""Rich tables for the planning verbs: presentation only, every number with its unit."""

from __future__ import annotations

from lmforge.cli.output import print_lines, print_table
from lmforge.plan.units import format_bytes, format_count, format_dollars, format_duration, format_flops


def _both(n_bytes: float) -> str:
    """'26.95 GB (25.10 GiB)'."""
    return f"{format_bytes(n_bytes)} ({format_bytes(n_bytes, 'GiB')})"


def _hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _x(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


# ---- memory ---------------------------------------------------------------------------


def memory(report) -> None:
    c = report.counts
    lines = [f"[bold]{report.model}[/bold]: {c.total:,} parameters "
             f"({format_count(c.non_embedding)} non-embedding, {format_count(c.embedding)} embedding)"]
    if report.note:
        lines.append(f"note: {report.note}")
    print_lines(*lines)
    print_table(
        "To store: weights",
        ["precision", "bytes/param", "size"],
        [[r.precision + (f" (group {report.group_size})" if r.precision == "int4" else ""),
          f"{r.bytes_per_param:.3f} B", _both(r.bytes)] for r in report.storage],
        caption="int8: one fp16 scale per output channel; int4: fp16 scale + zero point per group; "
        "norms and biases stay 16-bit",
    )
    if report.kv_cache_per_token:
        print_lines(f"KV cache (bf16): {report.kv_cache_per_token:,} bytes per token; "
                    f"{_both(report.kv_cache)} for {report.kv_batch} x {report.kv_context:,} tokens")
    first = report.strategies[0]
    title = (f"To train, per GPU on {report.gpus}: micro-batch {first.micro_batch} x {first.seq_len:,} tokens, "
             f"{first.precision}{' mixed precision' if first.precision != 'fp32' else ''}"
             f"{' (autocast: fp32 weights)' if first.recipe == 'autocast' else ''}, {first.optimizer}, "
             f"recompute {first.recompute}")
    capacity = report.capacity_bytes
    rows = []
    for m in report.strategies:
        name = m.strategy + (" +offload" if m.offload_optimizer else "")
        limit = "linear in N" if m.reduction_limit is None else f"up to {m.reduction_limit:.0f}x"
        rows.append([
            name, format_bytes(m.weights), format_bytes(m.gradients),
            format_bytes(m.optimizer_states + m.master_weights), format_bytes(m.activations),
            format_bytes(m.gathered_params + m.margin), _both(m.total),
            f"{_x(m.reduction_vs_ddp)} ({limit})" if m.strategy not in ("ddp", "single") else "1.00x",
            "" if capacity is None else ("yes" if m.fits(capacity) else "no"),
        ])
    print_table(
        title,
        ["strategy", "weights", "gradients", "optimizer + master", "activations", "buffers + margin", "total per GPU",
         "model states vs DDP", "fits" + ("" if capacity is None else f" {format_bytes(capacity, 'GiB')}")],
        rows,
        caption=f"margin: {first.margin_fraction:.0%} of the rest + {format_bytes(first.margin_fixed_bytes, 'GiB')} "
        "(CUDA context, buffers, fragmentation); zero3 adds the gathered weights of two layers"
        + ("; zero2 the gathered 16-bit copy of all weights" if first.recipe == "autocast" else "")
        + ("; offload: optimizer states and master weights in CPU memory" if report.strategies[-1].offload_optimizer
           else ""),
    )
    print_lines(*_memory_verdict(report))
    r = report.rule
    print_lines(
        f"rule of thumb: 4 GB per 1B parameters to store in fp32 -> {format_bytes(r.rule_store_bytes)}; "
        f"about 20x that to train (80 GB per 1B) -> {format_bytes(r.rule_train_bytes)}.",
        f"lmforge's accounting: {format_bytes(r.store_fp32_bytes)} to store in fp32; to train on one GPU "
        f"{format_bytes(r.model_state_bytes)} of model states (16 B/param with mixed-precision AdamW) + "
        f"{format_bytes(first.activations)} activations + margin = {format_bytes(first.total)} "
        f"({first.total / r.rule_train_bytes:.2f}x the rule; activations depend on batch, sequence and recompute).",
    )


def _memory_verdict(report) -> list[str]:
    if report.capacity_bytes is None:
        return ["no GPU given: pass --gpus 8xH100 or --gpu-memory 24GiB to check the fit"]
    where = f"{report.gpus} ({format_bytes(report.capacity_bytes, 'GiB')} each)"
    if report.least_sharding is not None:
        m = report.least_sharding_memory
        return [f"[green]fits[/green] on {where} with [bold]{report.least_sharding}[/bold] "
                f"(the least sharding that fits): {_both(m.total)} per GPU"]
    lines = [f"[red]does not fit[/red] on {where} under any strategy"]
    if report.zero3_gpus_needed is not None:
        lines.append(f"zero3 would fit on {report.zero3_gpus_needed:,} such GPUs")
    else:
        lines.append("activations alone overflow one GPU: lower --micro-batch or --seq-len, or --recompute full")
    if report.least_sharding_full_recompute is not None:
        lines.append(f"with --recompute full it fits with [bold]{report.least_sharding_full_recompute}[/bold]")
    elif report.zero3_gpus_needed_full_recompute is not None:
        lines.append(f"with --recompute full, zero3 fits on {report.zero3_gpus_needed_full_recompute:,} such GPUs")
    return lines


# ---- plan -----------------------------------------------------------------------------


def plan(result) -> None:
    b, c = result.budget, result.rows[0].cost
    cluster = f"{result.cluster.count}x {result.cluster.gpu.name}"
    same_compute = len({round(row.cost.flops, -10) for row in result.rows}) == 1
    assumed = " (assumed; pass --gpus)" if result.cluster_assumed else ""
    where = f"on {cluster}{assumed} at MFU {result.mfu:.0%}"
    lines = [f"[bold]budget[/bold]: {format_flops(b.flops)} (from {b.source})"]
    lines += [f"note: {n}" for n in b.notes]
    if same_compute:
        lines.append(f"{where}: {format_duration(c.wall_seconds)}, {_hours(c.gpu_hours)} GPU-hours, "
                     f"{format_dollars(c.dollars)} (the same for every law: C = 6ND is fixed)")
    else:
        lines.append(f"time and cost {where}, per law (each law picks its own D for this N)")
    print_lines(*lines)
    fixed = b.fixed != "none"
    show_optimal = fixed and same_compute
    rows = []
    for row in result.rows:
        a = row.allocation
        mark = {"kaplan": "*", "fitted": "†"}.get(a.loss_law or "", "")
        loss = "" if a.predicted_loss is None else f"{a.predicted_loss:.3f}" + mark
        if row.shape is None:
            memory = "no shape: " + row.shape_note.split(";")[0]
        elif row.strategy is not None:
            memory = f"{format_bytes(row.memory.total, 'GiB')} {row.strategy}"
        elif row.zero3_gpus_needed is not None:
            memory = f"no fit: zero3 needs {row.zero3_gpus_needed:,}"
        else:
            memory = "no fit"
        cells = [a.law, format_count(a.n_params), format_count(a.n_tokens), f"{a.tokens_per_param:.1f}", loss]
        if show_optimal:
            cells += [format_count(a.optimal_n_params), format_count(a.optimal_n_tokens)]
        if not same_compute:
            cells += [format_flops(row.cost.flops), format_duration(row.cost.wall_seconds),
                      format_dollars(row.cost.dollars)]
        shape = "" if row.shape is None else f"{row.shape.n_decoder_layers} x {row.shape.d_model}"
        rows.append(cells + [shape, memory])
    columns = ["law", "params N", "tokens D", "tokens/param", "loss nats/tok"]
    if show_optimal:
        columns += ["optimal N", "optimal D"]
    if not same_compute:
        columns += ["compute", "time", "cost"]
    print_table(
        "Compute-optimal allocation by scaling law" if not fixed else "Your allocation under each scaling law",
        columns + ["layers x d_model", "per GPU, least sharding"],
        rows,
        caption="loss: Chinchilla-family laws on MassiveText (20x and approach1 borrow chinchilla's L(N,D)); "
        "* Kaplan on WebText2: not comparable.\n" + _fitted_note(result.rows)
        + "chinchilla uses the rounded constants of Eq. 10, which favour smaller models than the paper's own "
        "Table 3 (Besiroglu et al. 2024).\n"
        + ("optimal N, D: each law's compute-optimal split of the same compute.\n" if show_optimal
           else "")
        + "per GPU: Llama-style shape, 1 x 2,048-token micro-batch, bf16 mixed precision, AdamW, selective recompute.\n"
        + price_note(c.price_is_example, c.price_per_hour, c.gpu),
    )


def _fitted_note(rows) -> str:
    """The caption line for a fitted law's row (``plan --law``), or ''."""
    fitted = [r.allocation for r in rows if r.allocation.law == "fitted"]
    if not fitted:
        return ""
    a = fitted[0]
    extra = "; N counts non-embedding parameters" if any("non-embedding" in n for n in a.notes) else ""
    return f"† fitted: {a.source}; loss on {a.loss_dataset}{extra}.\n"


def known_runs(rows) -> None:
    laws = [v.law for v in rows[0].verdicts]
    main_law = rows[0].main.law if rows[0].main else laws[0]
    shown = [law for law in ("chinchilla", "epoch", "fitted") if law in laws]
    table_rows = []
    for r in rows:
        main = r.main or r.verdicts[0]
        table_rows.append([
            r.run, format_count(r.n_params), format_count(r.n_tokens), format_count(r.twenty_x_tokens),
            f"{r.tokens_per_param:.1f}", format_flops(r.flops), format_count(main.optimal_n_params),
            format_count(main.optimal_n_tokens),
            f"{main.undertrained:.2f}x", *[f"{r.verdict(law).predicted_loss:.3f}" for law in shown],
        ])
    print_table(
        f"Known models against compute-optimal training ({main_law})",
        ["model", "params", "tokens", "compute-optimal tokens (~20x parameters)", "tokens/param", "compute 6ND",
         "N_opt", "D_opt", "under-trained", *[f"loss {law}" for law in shown]],
        table_rows,
        caption="compute-optimal tokens (~20x parameters): 20 N for the model's own size (Hoffmann et al. 2022).\n"
        "N_opt, D_opt, under-trained: the same compute 6ND split anew; under-trained = D_opt / actual tokens "
        "(> 1: too few tokens).\n"
        "losses: nats/token on MassiveText predicted for the actual N and D (--json for every law).",
    )
    print_table(
        "Under-training (D_opt / D) by law",
        ["model", *laws],
        [[r.run, *[f"{v.undertrained:.2f}x" for v in r.verdicts]] for r in rows],
    )


# ---- cost -----------------------------------------------------------------------------


def cost(report) -> None:
    lines = [f"[bold]{report.model}[/bold]: {report.n_params:,} parameters"]
    if report.note:
        lines.append(f"note: {report.note}")
    print_lines(*lines)
    p = report.pretraining
    tokens = format_count(p.n_tokens) + (" (20 per parameter; pass --tokens)" if report.tokens_assumed else "")
    print_table(
        f"Pretraining on {p.n_gpus}x {p.gpu} at MFU {p.mfu:.0%}",
        ["tokens", "compute 6ND", "GPU-hours", "wall time", "cost (USD)"],
        [[tokens, format_flops(p.flops), _hours(p.gpu_hours), format_duration(p.wall_seconds),
          format_dollars(p.dollars)]],
        right_align_from=0,
    )
    print_table(
        "Fine-tuning",
        ["method", "tokens", "trainable params", "FLOPs/token", "training state", "GPU-hours", "cost (USD)"],
        [[t.method + (f" (rank {t.lora_rank}, {t.lora_targets})" if t.method == "lora" else ""),
          format_count(t.n_tokens), format_count(t.trainable_params), f"{t.flops_per_token:.3g}",
          format_bytes(t.state_bytes), _hours(t.compute.gpu_hours), format_dollars(t.dollars)] for t in report.tuning],
        caption="training state: weights + gradients + Adam states, activations excluded",
    )
    print_table(
        f"Inference on {report.inference[0].gpu} ({report.inference[0].precision} weights)",
        ["batch", "GPUs", "prompt + new tokens", "prefill", "per decode step", "decode bound", "output tok/s per GPU",
         "USD per 1M input", "USD per 1M output"],
        [[str(i.batch), str(i.n_gpus), f"{i.prompt_tokens} + {i.new_tokens}", format_duration(i.prefill_seconds),
          f"{i.decode_step_seconds * 1e3:.2f} ms", i.decode_bound,
          "" if i.output_tokens_per_second_per_gpu is None else f"{i.output_tokens_per_second_per_gpu:,.0f}",
          format_dollars(i.dollars_per_million_input),
          "" if i.dollars_per_million_output is None else format_dollars(i.dollars_per_million_output)]
         for i in report.inference],
        caption="prefill compute-bound at the MFU; decode reads all weights + KV cache each step "
        "(memory-bound at small batch; Pope et al. 2022)",
    )
    h = report.hosting
    print_table(
        f"Hosting on {h.gpu} ({h.precision})",
        ["weights", "KV cache", "needed (+margin)", "GPUs per replica", "replicas", "USD per month", "USD per year"],
        [[format_bytes(h.weight_bytes), f"{format_bytes(h.kv_cache_bytes)} ({h.batch} x {h.context:,} tokens)",
          format_bytes(h.needed_bytes), str(h.gpus_per_replica), str(h.replicas), format_dollars(h.dollars_per_month),
          format_dollars(h.dollars_per_year)]],
        right_align_from=0,
        caption=f"{h.hours_per_month:.0f} hours per month, always on",
    )
    print_lines(price_note(p.price_is_example, p.price_per_hour, p.gpu))


# ---- advise ---------------------------------------------------------------------------


def advice(result) -> None:
    rows = [["family", result.family], ["objective", result.objective],
            ["start from", f"lmforge preset {result.preset}"],
            ["try it on a CPU", result.command]]
    if result.n_params is not None:
        rows += [["compute-optimal size", f"{format_count(result.n_params)} parameters on "
                  f"{format_count(result.n_tokens)} tokens ({result.law}, {format_flops(result.budget_flops)})"]]
    print_table(f"Advice for {result.task}", ["", ""], rows, right_align_from=99)
    print_lines("[bold]why[/bold]", *[f"  - {r}" for r in result.reasons])
    print_lines("[bold]alternatives[/bold]", *[f"  - {a}" for a in result.alternatives])
    print_lines("[bold]references[/bold]", *[f"  - {r}" for r in result.references])
    if result.note:
        print_lines(f"note: {result.note}")


# ---- helpers ----------------------------------------------------------------------------


def price_note(is_example: bool, price: float, gpu: str) -> str:
    if is_example:
        return f"price: ${price:.2f} per {gpu} GPU-hour is an EXAMPLE rate; pass --price for yours"
    return f"price: ${price:.2f} per {gpu} GPU-hour (given)"
