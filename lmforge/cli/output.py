"""Printing for the CLI: rich tables with units, or JSON with ``--json``."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence


def _console():
    from rich.console import Console

    # Piped output (files, CI logs, README examples) is wide enough not to wrap tables.
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _clean(value: object) -> object:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(data: object) -> None:
    """Dump ``data`` (dicts, lists, numbers, strings) as indented JSON on stdout."""
    print(json.dumps(_clean(data), indent=2, allow_nan=False))


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    caption: str | None = None,
    right_align_from: int = 1,
    header: bool = True,
) -> None:
    """A rich table; columns from ``right_align_from`` on are numbers, right-aligned;
    ``header=False`` for a two-column "what: value" table."""
    from rich.table import Table

    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left", show_header=header)
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index >= right_align_from else "left", overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _console().print(table)


def print_lines(*lines: str) -> None:
    """Plain lines (rich markup allowed), e.g. a verdict under a table."""
    console = _console()
    for line in lines:
        console.print(line, highlight=False)
