"""The one config mechanism: typed dataclasses, YAML files, dotted overrides, flags, help.

Every setting a user gives lmforge goes through this module:

- run configs (`lmforge.train.config.RunConfig`): ``lmforge train --config run.yaml
  --train.lr 3e-4 --model.d-model=256``, written back to the run as ``config.yaml``;
- generation configs (`lmforge.generate.config.GenerateConfig`): ``lmforge generate
  --config gen.yaml --top-p 0.9``;
- the verbs' own flags (`lmforge.cli.signature`): a flag's value is converted by the same
  `coerce` (so ``--max-new-tokens 1k`` and ``--train.batch_tokens 64K`` read alike), and a
  flag backed by a dataclass field shows that field's default and comment as its help.

A dataclass is the schema: its fields' types say what a value may be (``int | None``,
``Literal[...]``, ``list[str]``, nested dataclasses for sections), its defaults are the
defaults, and the comment beside (or above) a field is that key's help text, which
``--help`` prints with the default taken from the dataclass, never restated in prose
(`field_docs`, `help_lines`). Keys are dotted (``train.lr``); hyphens and underscores are
the same key (``--train.max-steps``). Every error is one line (`lmforge.errors.UserError`)
naming the key, the value and the fix: an unknown key with the closest valid names
("did you mean train.lr?"), a value with the type it must have.

Why our own layer rather than tyro (torchtitan) or jsonargparse (litgpt): both build a
parser from dataclasses too, but tyro prints its errors as multi-line panels and
jsonargparse keeps underscores in flags (``--gpu_memory``), wants a value after a boolean
(``--json true``) and reports a bad value across several lines naming parser internals.
The CLI promises hyphenated flags, bare boolean flags, counts like ``20M`` and one-line
errors with a fix (tests/cli), which would take a wrapper about as large as this module
around either library; this is that module, on the standard library and PyYAML. Nothing
here imports torch.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import UserError, unknown_name
from lmforge.plan.units import parse_count

# ---- the schema: keys, types, defaults, help --------------------------------------------------------------------


@cache
def keys(cls: type) -> dict[str, Any]:
    """Dotted key -> type for every leaf field of dataclass ``cls`` (sections flattened)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update({f"{f.name}.{k}": v for k, v in keys(kind).items()})
        else:
            out[f.name] = kind
    return out


def defaults(cls: type) -> dict[str, Any]:
    """Dotted key -> default value of every leaf field of ``cls``."""
    return flatten(dataclasses.asdict(cls()))


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Dotted key -> the comment beside the field in the source (or the comment lines just
    above it); sections recurse. The same convention as tyro's and simple-parsing's help."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update({f"{f.name}.{k}": v for k, v in field_docs(hints[f.name]).items()})
        elif comments.get(f.name):
            out[f.name] = comments[f.name]
    return out


def _field_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen app): help without comments
        return {}
    lines = source.splitlines()
    comments = {start: text.lstrip("#").strip() for (kind, text, (start, _), _, _)
                in tokenize.generate_tokens(io.StringIO(source).readline) if kind == tokenize.COMMENT}
    alone = {n for n in comments if lines[n - 1].lstrip().startswith("#")}  # comment-only lines
    (node,) = ast.parse(source).body
    out: dict[str, str] = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        beside = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
        above, line = [], statement.lineno - 1
        while line in alone and not beside:
            above.insert(0, comments[line])
            line -= 1
        out[statement.target.id] = " ".join(beside or above)
    return out


def type_name(kind: Any) -> str:
    """How a type reads in an error: ``one of auto, fp32``, ``an integer or null``."""
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false", type(None): "null"}.get(
        kind, str(kind))


def metavar(kind: Any) -> str:
    """The placeholder of a value in help: INT, FLOAT, TEXT, {a,b}, BOOL, ..."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (kind, *_) = [a for a in typing.get_args(kind) if a is not type(None)] or [str]
        origin = typing.get_origin(kind)
    if origin is Literal:
        return "{" + ",".join(map(str, typing.get_args(kind))) + "}"
    if origin is list:
        return "TEXT..."
    return {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}.get(kind, "VALUE")


def help_lines(cls: type, title: str) -> str:
    """The keys of ``cls`` as ``--help`` lines: flag, placeholder, default (from the
    dataclass) and the field's comment."""
    docs, values = field_docs(cls), defaults(cls)
    lines = [title]
    for key, kind in keys(cls).items():
        lines.append(f"  --{key} {metavar(kind)}  (default: {shown(values[key])})")
        if key in docs:
            lines.append(textwrap.fill(docs[key], width=100, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return "\n".join(lines)


def shown(value: Any) -> str:
    """A default as a user would type it: null, true, 8192, a,b."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


# ---- values -------------------------------------------------------------------------------------------------------


def coerce(key: str, value: Any, kind: Any, what: str = "config key") -> Any:
    """``value`` (from YAML or the command line) as ``kind``; a UserError if it cannot be.

    Text converts: ``"3e-4"`` to a number, ``"64K"`` / ``"20M"`` to a whole count,
    ``"true"``/``"no"`` to a bool, ``"null"`` to None where the type allows it; a single
    value where a list goes is a list of one."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in options:
                return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(key, value, option, what)
            except UserError:
                continue
    elif origin is Literal:
        if value in typing.get_args(kind):
            return value
    elif origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(key, item, typing.get_args(kind)[0], what) for item in items]
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                number = parse_count(value, key) if value[-1:].isalpha() else None
                if number is not None and number == int(number):
                    return int(number)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"{what} {key} must be {type_name(kind)}", value, f"fix the value of {key}")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def parse_overrides(args: list[str]) -> dict[str, str | bool]:
    """['--train.lr', '3e-4', '--model.d_model=256', '--train.compile'] -> {key: raw value}.

    A key with no value (next item is another flag, or the end) means true.
    """
    out: dict[str, str | bool] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError("unexpected argument", arg, "overrides look like --train.lr 3e-4")
        key, eq, value = arg[2:].partition("=")
        if eq:
            out[key] = value
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            out[key] = args[index + 1]
            index += 1
        else:
            out[key] = True
        index += 1
    return out


def read_yaml(path: Path, what: str = "config file", option: str = "--config",
              example: str = "train: {lr: 3e-4}") -> dict[str, Any]:
    """The mapping in YAML file ``path``, flattened to dotted keys; one-line UserErrors for
    a missing, unreadable or non-mapping file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", str(path), f"check the path given to {option}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the {what}", str(path), f"it must be YAML ({type(exc).__name__})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise UserError(f"the {what} must hold a mapping", str(path), f"write keys like {example}")
    return flatten(tree)


# ---- building -----------------------------------------------------------------------------------------------------


def canonical(given: Mapping[str, Any], cls: type, *, shorthands: Mapping[str, str] | None = None,
              what: str = "config key") -> dict[str, Any]:
    """``given`` with hyphens read as underscores, shorthands expanded (``qat`` ->
    ``qat.precision``) and every key checked against ``cls`` (unknown -> did you mean)."""
    known = keys(cls)
    out: dict[str, Any] = {}
    for key, value in given.items():
        key = str(key).replace("-", "_")
        key = (shorthands or {}).get(key, key)
        if key not in known:
            raise unknown_name(what, key, known)
        out[key] = value
    return out


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of ``cls`` from already-typed dotted ``values`` over the defaults (a
    frozen dataclass is built in one call, so its ``__post_init__`` checks run once)."""
    if cls.__dataclass_params__.frozen:
        return cls(**values)
    out = cls()
    for key, value in values.items():
        _set(out, key, value)
    return out


def load(cls: type, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
         shorthands: Mapping[str, str] | None = None, what: str = "config key",
         file_what: str = "config file", example: str = "train: {lr: 3e-4}") -> Any:
    """Defaults of ``cls``, then the YAML file at ``path``, then ``overrides`` (dotted keys;
    raw text or typed values), each key checked and each value coerced."""
    given = read_yaml(Path(path), file_what, example=example) if path is not None else {}
    given.update(overrides or {})
    values = canonical(given, cls, shorthands=shorthands, what=what)
    known = keys(cls)
    return build(cls, {key: coerce(key, value, known[key], what) for key, value in values.items()})


def with_overrides(config: Any, overrides: Mapping[str, Any], what: str = "config key") -> Any:
    """A copy of ``config`` with dotted ``overrides`` applied (each key checked and coerced)."""
    known = keys(type(config))
    out = copy.deepcopy(config)
    for key, value in canonical(overrides, type(config), what=what).items():
        _set(out, key, coerce(key, value, known[key], what))
    return out


def _set(target: Any, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        target = getattr(target, part)
    setattr(target, leaf, value)


def to_yaml(config: Any) -> str:
    """The dataclass as YAML text, in field order (what ``load`` reads back equal)."""
    import yaml

    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def save_yaml(config: Any, path: Path) -> Path:
    """Write the dataclass as YAML, atomically (`lmforge.fileio.write_atomic`)."""
    from lmforge.fileio import write_atomic

    return write_atomic(path, to_yaml(config))
