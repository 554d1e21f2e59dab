"""Hugging Face datasets as a source (``hf:NAME[:SPLIT][?config=C&revision=R&field=text]``).

Streams with ``datasets.load_dataset(NAME, split=SPLIT, streaming=True)`` (Lhoest et al. 2021,
"Datasets: A Community Library for Natural Language Processing"), so nothing is downloaded
whole. ``datasets`` is optional: without it, or offline, the error says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator

from lmforge.data.readers import ReadStats, emit_document
from lmforge.errors import UserError


def open_dataset(base: str, options: dict[str, str]):
    """Open a Hugging Face dataset for streaming; UserError when not installed or unreachable."""
    name, _, split = base.removeprefix("hf:").partition(":")
    if split and options.get("split", split) != split:
        raise UserError("split given twice", base, "write hf:NAME:SPLIT or hf:NAME?split=SPLIT, not both")
    if not name:
        raise UserError("hf: source needs a dataset name", base, "write hf:NAME, e.g. hf:roneneldan/TinyStories")
    try:
        import datasets
    except ImportError:
        fix = "pip install datasets (or lmforge[hf])"
        raise UserError("hf: sources need the datasets package", name, fix) from None
    kwargs = {"split": split or options.get("split", "train"), "streaming": True}
    if options.get("config"):
        kwargs["name"] = options["config"]
    if options.get("revision"):
        kwargs["revision"] = options["revision"]
    try:
        return name, datasets.load_dataset(name, **kwargs)
    except Exception as e:  # offline, unknown name or split, gated: all user-fixable
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        fix = f"check the name, split and network, or use a local path ({reason})"
        raise UserError("cannot load Hugging Face dataset", name, fix) from None


def dataset_documents(name: str, dataset, field: str, stats: ReadStats, max_chars: int) -> Iterator[str]:
    bad, keys = 0, None
    try:
        for row in dataset:
            value = row.get(field) if isinstance(row, dict) else None
            if not isinstance(value, str):
                bad, keys = bad + 1, keys or (sorted(row)[:10] if isinstance(row, dict) else None)
                continue
            yield from emit_document(value, stats, max_chars)
    except Exception as e:
        raise UserError("lost the Hugging Face dataset while reading", name, f"check the network ({e})") from None
    if bad:
        stats.bad_records += bad
        seen = f"; fields seen: {', '.join(keys)}" if keys else ""
        stats.warn(f"hf:{name}: skipped {bad:,} row(s) without a string field {field!r}{seen}")
