"""Splitting long texts at whitespace: exact concatenation, bounded pieces, cuts at boundaries."""

from __future__ import annotations

import random

import pytest

from lmforge.data.pieces import cut_point, split_long


@pytest.mark.parametrize("max_chars", [1, 2, 7, 50, 10_000])
def test_pieces_concatenate_to_the_text(max_chars):
    rng = random.Random(max_chars)
    text = "".join(rng.choice(["a", "bb", " ", "\n", "\t", "é", "😀", "  "]) for _ in range(3000))
    pieces = list(split_long(text, max_chars))
    assert "".join(pieces) == text
    assert all(0 < len(p) <= max_chars for p in pieces)


def test_cuts_fall_before_whitespace():
    text = "alpha beta gamma delta epsilon " * 50
    pieces = list(split_long(text, 40))
    for left, right in zip(pieces, pieces[1:], strict=False):
        assert not left[-1].isspace() and right[0].isspace()  # a pre-token boundary of GPT-2's regex


def test_no_whitespace_cuts_at_the_limit():
    assert list(split_long("x" * 25, 10)) == ["x" * 10, "x" * 10, "x" * 5]
    assert cut_point("abc def", 0, 100) == 7
    assert cut_point("abc def ghi", 0, 8) == 7
    assert list(split_long("", 5)) == []
    with pytest.raises(ValueError):
        list(split_long("abc", 0))
