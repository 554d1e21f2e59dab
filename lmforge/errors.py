"""Errors a user can cause, printed by the CLI as one line with exit code 2.

Convention (DESIGN.md): ``error: <what> (<the value>); <what to do>``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input: bad path, bad value, a config that cannot fit.

    The CLI prints ``error: {message}`` on one line and exits with code 2; a traceback
    appears only with ``--debug``.
    """

    exit_code = 2

    def __init__(self, what: str, value: object = None, fix: str | None = None):
        self.what = what
        self.value = value
        self.fix = fix
        message = what if value is None else f"{what} ({value!r})" if isinstance(value, str) else f"{what} ({value})"
        if fix:
            message = f"{message}; {fix}"
        super().__init__(" ".join(message.split()))  # always one line


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``choices`` closest to ``name`` (case-insensitive), best first."""
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    if not hits:  # fall back to a shared prefix, then to looser similarity
        hits = [c.lower() for c in choices if c.lower().startswith(name.lower()[:3])][:n]
    if not hits:
        hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.4)
    return [lower[h] for h in hits]


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A UserError for an unknown preset / GPU / task that suggests the closest names."""
    choices = sorted(choices)
    near = closest(name, choices)
    if near:
        fix = "did you mean " + " or ".join(near) + "?"
    else:
        fix = "choose one of " + ", ".join(choices)
    return UserError(f"unknown {kind}", name, fix)


def check_positive(name: str, value: float, *, allow_zero: bool = False, upper: float | None = None) -> float:
    """Return ``value`` if it is a finite positive number (below ``upper`` when given).

    Raises UserError naming the value for zero, negative, NaN, infinite or absurd input.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number", value, f"pass a positive number for {name}")
    if math.isnan(value) or math.isinf(value):
        raise UserError(f"{name} must be finite", value, f"pass a positive number for {name}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise UserError(f"{name} must be {bound}", value, f"pass a positive number for {name}")
    if upper is not None and value > upper:
        raise UserError(f"{name} is absurdly large", value, f"pass a value of at most {upper:g}")
    return value


def check_fraction(name: str, value: float, *, allow_one: bool = True) -> float:
    """Return ``value`` if 0 < value <= 1 (or < 1 when ``allow_one`` is False)."""
    check_positive(name, value)
    if value > 1 or (value == 1 and not allow_one):
        raise UserError(f"{name} must be a fraction in (0, 1]", value, f"pass e.g. 0.4 for 40% (not 40) for {name}")
    return value


def check_whole(name: str, value: object, upper: int = 10**9, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is a whole number in [1, upper] ([0, upper] with ``allow_zero``).

    Raises UserError for a float (even 2.0), a bool, a negative or zero count, or an
    absurd one.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number", value, f"pass {name} as an integer")
    if value < 0 or (value == 0 and not allow_zero):
        bound, least = ("zero or more", 0) if allow_zero else ("positive", 1)
        raise UserError(f"{name} must be {bound}", value, f"pass an integer of at least {least} for {name}")
    if value > upper:
        raise UserError(f"{name} is absurdly large", value, f"pass at most {upper:,}")
    return value


def check_choice(kind: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else a UserError listing them all.

    For short fixed lists (precisions, strategies); ``unknown_name`` suggests the closest
    names instead, for long catalogs (presets, GPUs).
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"unknown {kind}", value, "choose one of " + ", ".join(choices))
    return value
