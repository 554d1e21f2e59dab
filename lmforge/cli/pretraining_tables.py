"""Tables and lines for the pretraining verbs (presentation only)."""

from __future__ import annotations

import math

from lmforge.cli.output import print_lines, print_table
from lmforge.plan.units import format_count


def log(message: str) -> None:
    """A progress or warning line from the loop."""
    print_lines(message.replace("[", r"\["))


def tokenizer(result: dict) -> None:
    print_table("Tokenizer", ["file", "vocabulary", "bytes per token", "sha256"],
                [[result["path"], f"{result['vocab_size']:,}", f"{result['bytes_per_token']:.3f}",
                  result["sha256"][:16]]], right_align_from=1)


def manifest(manifest, out: str) -> None:
    data = manifest.to_dict()
    rows = []
    for source in data["sources"]:
        rows.append([source["name"], source["location"], f"{source['documents']:,}",
                     f"{source['train_tokens']:,}", f"{source['val_tokens']:,}"])
    print_table(f"Token shards in {out} ({data['dtype']})", ["source", "location", "documents", "train tokens",
                                                              "validation tokens"], rows, right_align_from=2)


def _fmt(value: float, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def evaluation(results: dict, run_dir: str) -> None:
    accuracy = any(r.accuracy is not None for r in results.values())
    rows = [[name, f"{r.tokens:,}", _fmt(r.loss), _fmt(r.perplexity, 2), _fmt(r.bits_per_byte)]
            + ([_fmt(r.accuracy)] if accuracy else []) for name, r in results.items()]
    columns = ["source", "tokens", "loss (nats/token)", "perplexity", "bits per byte"]
    print_table(f"Evaluation of {run_dir}", columns + (["masked-token accuracy"] if accuracy else []), rows,
                caption=None if all(r.bytes for r in results.values()) else
                "tokens: predicted target tokens; bits per byte is defined for causal models only")


def train_result(result) -> None:
    evaluation(result.validation, str(result.run_dir))
    if len(result.tokens_by_source) > 1:
        print_lines("tokens seen by source: " + ", ".join(
            f"{name} {format_count(tokens)} ({result.epochs_by_source[name]:.2f} epochs)"
            for name, tokens in result.tokens_by_source.items()))
    print_lines(
        f"{result.steps:,} steps, {format_count(result.tokens)} tokens, final training loss "
        f"{_fmt(result.final_loss)}; {result.tokens_per_second:,.0f} tokens/s in {result.precision}, "
        f"MFU {result.mfu:.1%}; "
        f"stopped by {result.stopped_by}",
        f"run directory: {result.run_dir} (report.json has predicted vs measured)",
    )

