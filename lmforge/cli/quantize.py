"""The quantize verb: post-training quantization of a run, with size and quality before/after."""

from __future__ import annotations

import math
from typing import Literal

from lmforge.cli.output import print_json, print_lines, print_table


def quantize(
    run_dir: str,
    /,
    *,
    to: Literal["bf16", "fp16", "int8", "int4"],
    group_size: int | None = None,
    scale: Literal["absmax", "mse"] = "absmax",
    keep_embeddings: bool = True,
    calibration: str | None = None,
    out: str | None = None,
    force: bool = False,
    max_tokens: int = 65536,
    json: bool = False,
) -> None:
    """Quantize a trained run's weights and write a new run directory that generate, eval and
    fill-mask load like any other; print size and quality before and after.

    int8: symmetric, one fp16 scale per output channel. int4: asymmetric, an fp16 scale and
    zero per group of input features, two codes per byte. Norms, biases and position tables
    stay 16-bit (bf16, the compute dtype of int8/int4 runs). Quality is measured on the same
    held-out tokens before and after: the run's validation split, or --calibration text.

    Args:
        run_dir: a run directory written by lmforge train
        to: the precision to store the weights at
        group_size: int4: input features per scale and zero, 32, 64 or 128 (default 32, or the
            run's --qat.group_size after quantization-aware training)
        scale: absmax (the range of each row or group) or mse (the clipping that minimises the
            squared error, weighted by the calibration text's activations when given)
        keep_embeddings: keep the token embedding and output head at 16 bits (--no-keep-embeddings
            quantizes them too)
        calibration: a UTF-8 text file: the held-out text for the quality figures and the MSE scale search
        out: the new run directory (default: RUN_DIR-int8, RUN_DIR-int4-g32, ...)
        force: replace --out if it exists; quantize an already quantized run again
        max_tokens: held-out tokens per source to measure quality on
        json: print JSON instead of a table

    Examples:
        lmforge quantize runs/quickstart --to int8
        lmforge quantize runs/quickstart --to int4 --group-size 32 --scale mse --calibration held_out.txt
        lmforge generate runs/quickstart-int4-g32 --prompt "Return the"
    """
    from lmforge.quantize.report import quantize_run

    report = quantize_run(run_dir, to, group_size=group_size, scale=scale, keep_embeddings=keep_embeddings,
                          calibration=calibration, out=out, force=force, max_tokens=max_tokens)
    if json:
        print_json(report.to_dict())
    else:
        _table(report)


def _bytes(n: int) -> str:
    return f"{n / 1e6:,.2f} MB ({n:,} B)"


def _change(before: float, after: float, relative: bool = True) -> str:
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return ""
    if relative and before:
        return f"{100 * (after / before - 1):+.2f}% ({after / before:.3f}x)"
    return f"{after - before:+.4f}"


def _num(value: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(report) -> None:
    b, a = report.before, report.after
    s = report.scheme
    rows = [
        ["weights on disk (model.safetensors)", _bytes(b.file_bytes), _bytes(a.file_bytes),
         _change(b.file_bytes, a.file_bytes)],
        ["weights in memory, loaded", _bytes(b.memory_bytes), _bytes(a.memory_bytes),
         _change(b.memory_bytes, a.memory_bytes)],
        ["planner's weight bytes (lmforge memory)", _bytes(b.planner_bytes), _bytes(a.planner_bytes),
         _change(b.planner_bytes, a.planner_bytes)],
        ["loss (nats/token)", _num(b.result.loss, 4), _num(a.result.loss, 4),
         _change(b.result.loss, a.result.loss, relative=False)],
        ["perplexity", _num(b.result.perplexity, 3), _num(a.result.perplexity, 3),
         _change(b.result.perplexity, a.result.perplexity)],
        ["bits per byte", _num(b.result.bits_per_byte, 4), _num(a.result.bits_per_byte, 4),
         _change(b.result.bits_per_byte, a.result.bits_per_byte, relative=False)],
    ]
    how = s.label
    if s.quantized:
        how += f", {s.scale_method} scales, embeddings and head {'kept 16-bit' if s.keep_embeddings else 'quantized'}"
    print_table(f"Quantized {report.source} -> {report.out} ({how})", ["", f"before ({b.label})",
                f"after ({a.label})", "change"], rows,
                caption=f"held-out: {report.held_out}, {a.result.tokens:,} tokens; MB = 1e6 bytes; memory counts "
                        "every parameter and buffer once")
    notes = []
    if a.memory_bytes == a.planner_bytes:
        notes.append("the loaded weights take exactly the planner's bytes")
    elif a.memory_bytes == a.planner_memory_bytes:
        notes.append(f"the loaded weights take exactly the planner's bytes with the kept tensors in fp32 "
                     f"({_bytes(a.planner_memory_bytes)}: fp32 computes faster here)")
    notes.append(f"computes here in {report.compute}")
    if report.int4_layout == "cpu-int4pack":
        notes.append("int4 runs on PyTorch's bf16 CPU kernel (_weight_int4pack_mm_for_cpu)")
    elif s.precision == "int8" and "kernel" in report.compute:
        notes.append("int8 runs on PyTorch's CPU kernel (_weight_int8pack_mm) where the shapes allow")
    print_lines(*(f"[dim]{n}[/dim]" for n in notes), f"written: {report.out} ({report.seconds:.1f} s)")
