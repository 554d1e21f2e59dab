"""Weight-name maps between lmforge and another library, one table per layout, read both ways.

A `Rule` ties one lmforge tensor to one or more tensors of the other layout:

- ``copy``: the same tensor under another name;
- ``transpose``: the other side stores the transpose (GPT-2's ``Conv1D`` keeps its weight
  as (in, out), ``nn.Linear`` as (out, in));
- ``split``: lmforge fuses what the other side keeps apart (rows of ``qkv`` = [q | k | v],
  rows of a gated ``fc`` = [gate | up]); ``sizes`` are the rows of each part.

`to_theirs` applies a table to lmforge's tensors (export), `to_ours` the inverse (import);
both are exact (no arithmetic but transposes and concatenation), so a round trip returns
the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lmforge.errors import UserError


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]
    kind: str = "copy"  # copy | transpose | split
    sizes: tuple[int, ...] = ()  # split: rows of each of ``theirs``


def copy(ours: str, theirs: str) -> Rule:
    return Rule(ours, (theirs,))


def transpose(ours: str, theirs: str) -> Rule:
    return Rule(ours, (theirs,), "transpose")


def split(ours: str, theirs: tuple[str, ...], sizes: tuple[int, ...]) -> Rule:
    return Rule(ours, tuple(theirs), "split", tuple(sizes))


def to_theirs(rules: list[Rule], ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The other layout's tensors (contiguous) from lmforge's, by ``rules``."""
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        t = ours[rule.ours]
        if rule.kind == "copy":
            parts = [t]
        elif rule.kind == "transpose":
            parts = [t.t()]
        else:
            parts = list(t.split(rule.sizes, dim=0))
        for name, part in zip(rule.theirs, parts, strict=True):
            out[name] = part.contiguous()
    return out


def to_ours(rules: list[Rule], theirs: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """lmforge's tensors from the other layout's, by ``rules``; UserError naming the first
    tensor that is missing or has the wrong shape."""
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        missing = [name for name in rule.theirs if name not in theirs]
        if missing:
            raise UserError(f"the checkpoint lacks the tensor {missing[0]}", where,
                            "pass a complete checkpoint whose config.json matches its weights")
        parts = [theirs[name] for name in rule.theirs]
        if rule.kind == "copy":
            t = parts[0]
        elif rule.kind == "transpose":
            t = parts[0].t()
        else:
            for name, part, rows in zip(rule.theirs, parts, rule.sizes, strict=True):
                if part.shape[0] != rows:
                    raise UserError(f"tensor {name} has {part.shape[0]} rows, the config says {rows}", where,
                                    "the checkpoint's config.json does not match its weights")
            t = torch.cat(parts, dim=0)
        out[rule.ours] = t.contiguous()
    return out


def used_names(rules: list[Rule]) -> set[str]:
    """Every tensor name of the other layout that ``rules`` read."""
    return {name for rule in rules for name in rule.theirs}
