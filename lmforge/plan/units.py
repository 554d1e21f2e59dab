"""Parsing and printing of quantities with explicit units.

Bytes are integers internally; they are printed as GB (1e9) or GiB (2**30), saying
which. Counts take SI suffixes (K, M, B or G, T). FLOPs are floats.
"""

from __future__ import annotations

import math
import re

from lmforge.errors import UserError, check_positive

_BYTE_UNITS = {
    "b": 1, "": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_COUNT_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"


def parse_bytes(text: str | int | float, name: str = "memory") -> int:
    """'24GiB' -> 25769803776, '80GB' -> 80000000000, 1e9 -> 1000000000."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(check_positive(name, float(text)))
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]*)", str(text).strip())
    if not match or match.group(2).lower() not in _BYTE_UNITS:
        raise UserError(f"cannot read {name} as a size", text, "write it like 24GiB, 80GB or 512MiB")
    value = float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()]
    check_positive(name, value, upper=1e18)
    return int(value)


def parse_count(text: str | int | float, name: str = "count", upper: float = 1e30) -> float:
    """'7B' -> 7e9, '1.4T' -> 1.4e12, '3e23' -> 3e23, 125e6 -> 1.25e8."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return check_positive(name, float(text), upper=upper)
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]?)", str(text).strip())
    if not match or match.group(2).lower() not in _COUNT_SUFFIX:
        raise UserError(f"cannot read {name} as a number", text, "write it like 7B, 1.4T, 350M or 3e23")
    return check_positive(name, float(match.group(1)) * _COUNT_SUFFIX[match.group(2).lower()], upper=upper)


def gb(n_bytes: float) -> float:
    """Bytes -> GB (1e9)."""
    return n_bytes / 1e9


def gib(n_bytes: float) -> float:
    """Bytes -> GiB (2**30)."""
    return n_bytes / 2**30


def format_bytes(n_bytes: float, unit: str = "GB") -> str:
    """Bytes as GB (1e9, default) or GiB (2**30), the unit always printed."""
    if unit == "GiB":
        value = gib(n_bytes)
    elif unit == "GB":
        value = gb(n_bytes)
    else:
        raise ValueError(unit)
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 1:
        return f"{value:.2f} {unit}"
    return f"{value:.3g} {unit}"


def format_count(n: float, unit: str = "") -> str:
    """1.2345e9 -> '1.23B'; suffixes K, M, B, T; the unit appended if given."""
    suffixes = [(1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]
    text = f"{n:.3g}"
    if math.isfinite(n):
        for scale, suffix in suffixes:
            if abs(n) >= scale:
                text = f"{n / scale:.3g}{suffix}"
                break
    return f"{text} {unit}".strip()


def format_flops(flops: float) -> str:
    """FLOPs in scientific notation with the unit: '5.76e+23 FLOP'."""
    return f"{flops:.3g} FLOP"


def format_duration(seconds: float) -> str:
    """Seconds -> a human duration ('3.2 days', '5.1 h', '42 s')."""
    if seconds >= 2 * 365 * 86400:
        return f"{seconds / (365 * 86400):.1f} years"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"


def format_dollars(amount: float) -> str:
    """US dollars with thousands separators: '$1,234,567'."""
    if amount >= 100:
        return f"${amount:,.0f}"
    if amount >= 1 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:.2g}"


_DURATION_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}


def parse_budget(text: str | int | float, name: str = "budget") -> tuple[str, float]:
    """A compute budget as a duration or a FLOP count: '5min' -> ('seconds', 300.0),
    '90s' -> ('seconds', 90.0), '2h' -> ('seconds', 7200.0); '3e13' or '3e13FLOP' ->
    ('flops', 3e13) (a plain number is FLOPs)."""
    raw = str(text).strip()
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]*)", raw)
    unit = match.group(2).lower() if match else None
    if match and unit in _DURATION_UNITS:
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
        return "seconds", check_positive(f"{name} (seconds)", seconds, upper=365 * 86400.0)
    if match and unit in ("", "flop", "flops"):
        return "flops", check_positive(f"{name} (FLOPs)", float(match.group(1)), upper=1e29)
    raise UserError(f"cannot read {name} as a time or a FLOP count", text,
                    "write it like 5min, 90s, 2h or 3e13 (FLOPs)")
