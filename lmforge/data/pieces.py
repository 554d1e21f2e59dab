"""Split very long texts into pieces at whitespace, so that memory and time stay bounded.

A 50 MB line is read, tokenized and stored as pieces of at most ``MAX_PIECE_CHARS``
characters. A cut is made just after the last non-space character followed by a space in
the window, so ``"".join(pieces) == text``. For a GPT-2-style byte-level pre-tokenizer,
whose regex never puts a non-space and a following space in one pre-token (Radford et al.
2019, GPT-2 ``encoder.py``), encoding the pieces and concatenating the ids gives exactly
the ids of the whole text. A window with no whitespace at all is cut at its end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

MAX_PIECE_CHARS = 1_000_000

# Greedy ``.*`` backtracks from the window's end, so the last boundary is found in time
# proportional to its distance from the end, not to the window's length.
_LAST_BOUNDARY = re.compile(r".*\S(?=\s)", re.DOTALL)


def cut_point(text: str, start: int, max_chars: int) -> int:
    """The end of the piece that starts at ``start``: at most ``start + max_chars``.

    Returns ``len(text)`` when the rest fits; otherwise the position just after the last
    non-space character that is followed by a space inside the window, or the window's
    end when the window holds no such boundary.
    """
    end = start + max_chars
    if end >= len(text):
        return len(text)
    m = _LAST_BOUNDARY.match(text, start, end + 1)  # the lookahead may see text[end]
    return m.end() if m is not None else end


def split_long(text: str, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Yield consecutive pieces of ``text`` of at most ``max_chars`` characters.

    ``"".join(split_long(text)) == text``; a text that fits is yielded whole.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    start = 0
    while start < len(text):
        end = cut_point(text, start, max_chars)
        yield text[start:end]
        start = end
