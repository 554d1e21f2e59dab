"""Parsing sizes and counts with units."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.plan.units import format_bytes, format_count, parse_bytes, parse_count


@pytest.mark.parametrize("text, value", [("24GiB", 24 * 2**30), ("80GB", 80 * 10**9), ("512 MiB", 512 * 2**20),
                                         ("1.5TB", 1.5e12), (1e9, 10**9)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize(
    "text, value", [("7B", 7e9), ("1.4T", 1.4e12), ("350M", 3.5e8), ("3e23", 3e23), (125e6, 1.25e8)]
)
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text, needle", [("24 parsecs", "cannot read memory"), ("0GB", "must be greater than zero"),
                                          ("-5GB", "cannot read"), ("1e40B", "absurdly large")])
def test_bad_bytes(text, needle):
    with pytest.raises(UserError, match=needle):
        parse_bytes(text)


@pytest.mark.parametrize("text, needle", [("nan", "cannot read"), ("7X", "cannot read"), ("0", "greater than zero"),
                                          (float("nan"), "must be finite"), (-3.0, "greater than zero")])
def test_bad_counts(text, needle):
    with pytest.raises(UserError, match=needle):
        parse_count(text, "params")


def test_format_says_the_unit():
    assert format_bytes(80 * 2**30, "GiB") == "80.00 GiB"
    assert format_bytes(120e9) == "120 GB"
    assert format_count(6.93e10) == "69.3B"
