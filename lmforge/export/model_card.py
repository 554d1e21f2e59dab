"""The README.md model card of an exported directory: what the model is, what it was
trained on, how far, how well, and how to load it (from the run's config.yaml and
report.json; numbers the run did not measure are left out, never guessed)."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge import __version__
from lmforge.plan.specs import param_counts


def _report(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_card(source, arch, notes: list[str]) -> str:
    """Markdown for ``source`` (an `ExportSource`) exported as ``arch`` (an `HFArch`)."""
    run, spec = source.run, source.run.spec
    measured = _report(run.run_dir).get("measured") or {}
    lines = [
        "---", "library_name: transformers", "tags: [lmforge]", "---", "",
        f"# {run.run_dir.name}", "",
        f"A {spec.family} language model trained with lmforge {__version__}, exported as `{arch.hf_class}`.", "",
        "| | |", "|---|---|",
        f"| parameters | {param_counts(spec).total:,} |",
        f"| layers | {spec.n_layers} (d_model {spec.d_model}, {spec.n_heads} heads) |",
        f"| context | {spec.context} tokens |",
        f"| vocabulary | {spec.vocab_size}{' (byte-level BPE)' if run.tokenizer.is_byte_level else ''} |",
        f"| data | {', '.join(run.config.data.sources)} |",
        f"| objective | {run.config.objective.name or 'the family default'} |",
    ]
    if measured.get("tokens"):
        lines.append(f"| tokens trained | {int(measured['tokens']):,} |")
    overall = (measured.get("validation") or {}).get("all") or {}
    if overall.get("loss") is not None:
        bpb = overall.get("bits_per_byte")
        lines.append(f"| validation loss | {overall['loss']:.4f} nats/token"
                     + (f" ({bpb:.4f} bits/byte) |" if bpb is not None else " |"))
    lines += ["", "## Use", "", "```python",
              f"from transformers import {arch.auto_class}, AutoTokenizer",
              "tokenizer = AutoTokenizer.from_pretrained(PATH)",
              f"model = {arch.auto_class}.from_pretrained(PATH)", "```", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
