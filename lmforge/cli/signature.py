"""Build an argparse sub-command from a typed function: its signature is the flags,
its docstring the ``--help``.

This is the flag side of lmforge's one config mechanism, `lmforge.configs` (whose
docstring says why it is lmforge's own rather than tyro or jsonargparse): a flag's value
is converted by `configs.coerce` (so ``--max-new-tokens 1k`` reads as 1000), a verb
marked ``@settings_from(GenerateConfig)`` shows that dataclass's default and field comment
for each flag named like one of its fields, and a verb marked
``@passthrough("overrides", config=RunConfig)`` lists every dotted key of the config,
with its default, after its flags.

Rules:
- a parameter without a default is positional, unless keyword-only (after ``*``): then
  it is a required ``--flag``; a positional-only one (before ``/``) with a default is
  a positional that may be left out; any other is ``--name-with-hyphens``;
- ``bool`` is a flag (``--json``; ``--no-x`` when the default is True);
- ``Literal[...]`` gives choices; ``list[str]`` takes one or more values;
- ``X | None`` is X, defaulting to None;
- a verb marked ``@passthrough("overrides")`` gets every undeclared argument in that
  parameter (dotted config overrides);
- the docstring's first paragraph is the description, its ``Args:`` section the help
  of each flag, and any ``Examples:`` section is printed after the flags.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable

from lmforge import configs
from lmforge.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line ``error: ...``, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"error: {message}; see '{self.prog} --help'\n")
        raise SystemExit(2)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {arg: help}, epilog)."""
    text = inspect.cleandoc(doc or "")
    sections = re.split(r"^(Args|Examples|Returns):\s*$", text, flags=re.MULTILINE)
    description = sections[0].strip()
    helps: dict[str, str] = {}
    epilog = ""
    for title, body in zip(sections[1::2], sections[2::2], strict=True):
        if title == "Args":
            current = None
            for line in body.splitlines():
                match = re.match(r"^\s{0,8}(\w+):\s*(.*)$", line)
                if match and (current is None or not line.startswith(" " * 9)):
                    current = match.group(1)
                    helps[current] = match.group(2).strip()
                elif current and line.strip():
                    helps[current] += " " + line.strip()
        elif title == "Examples":
            epilog = "examples:\n" + "\n".join("  " + line.strip() for line in body.strip().splitlines())
    return description, helps, epilog


def _unwrap_optional(annotation: object) -> object:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _argument_kwargs(annotation: object, default: object, help_text: str) -> dict:
    annotation = _unwrap_optional(annotation)
    kwargs: dict = {"help": help_text or None}
    origin = typing.get_origin(annotation)
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
    elif origin is typing.Literal:
        kwargs["choices"] = list(typing.get_args(annotation))
    elif origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        kwargs.update(nargs="+", action="extend", type=_typed(item))
    elif annotation in (int, float, str):
        kwargs["type"] = _typed(annotation)
        kwargs["metavar"] = annotation.__name__.upper()
    if default is not inspect.Parameter.empty:
        kwargs["default"] = default
        if default not in (None, False, True) and kwargs["help"]:
            kwargs["help"] += f" (default: {default})"
    return kwargs


def _typed(kind: type) -> Callable[[str], object]:
    """A converter through `configs.coerce` whose error names the expected type (argparse shows it)."""

    def convert(text: str) -> object:
        try:
            return configs.coerce("", text, kind)
        except UserError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    convert.__name__ = kind.__name__
    return convert


def add_verb(subparsers: argparse._SubParsersAction, name: str, function: Callable) -> argparse.ArgumentParser:
    """Add sub-command ``name`` whose flags come from ``function``'s signature."""
    description, helps, epilog = parse_docstring(function.__doc__)
    config = getattr(function, "config", None)
    if config is not None:  # the dotted keys a passthrough verb takes, with their defaults
        keys = configs.help_lines(config, "config keys (--section.key VALUE, or section: {key: VALUE} in --config; "
                                          "hyphens or underscores):")
        epilog = f"{keys}\n\n{epilog}" if epilog else keys
    parser = subparsers.add_parser(
        name,
        help=description.split("\n\n")[0].replace("\n", " ").replace("%", "%%") if description else None,
        description=description,
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(function)
    passthrough = getattr(function, "passthrough", None)
    settings = getattr(function, "settings", None)
    setting_docs = configs.field_docs(settings) if settings else {}
    setting_defaults = configs.defaults(settings) if settings else {}
    for param in inspect.signature(function).parameters.values():
        if param.name == passthrough:
            continue
        text = helps.get(param.name, "") or setting_docs.get(param.name, "")
        if param.default is None and param.name in setting_defaults:  # None: the dataclass's default
            text += f" (default: {configs.shown(setting_defaults[param.name])})"
        # argparse formats help with %: a literal one (40%) must be %%
        text = text.strip().replace("%", "%%")
        kwargs = _argument_kwargs(hints.get(param.name, str), param.default, text)
        required = param.default is inspect.Parameter.empty
        positional = param.kind is inspect.Parameter.POSITIONAL_ONLY or (
            required and param.kind is not inspect.Parameter.KEYWORD_ONLY
        )
        if required:
            kwargs.pop("default", None)
        if positional:
            kwargs.pop("metavar", None)
            if not required:
                kwargs["nargs"] = "?"
            parser.add_argument(param.name, **kwargs)
        else:
            flag = "--" + param.name.replace("_", "-")
            parser.add_argument(flag, dest=param.name, required=required, **kwargs)
    parser.set_defaults(_function=function, _passthrough=passthrough)
    return parser


def passthrough(name: str, config: type | None = None) -> Callable[[Callable], Callable]:
    """Mark a verb whose parameter ``name`` (a ``list[str]``) receives every argument the
    signature does not declare, e.g. dotted config overrides ``--train.lr 3e-4``; the keys
    of dataclass ``config`` are listed in its ``--help``."""

    def mark(function: Callable) -> Callable:
        function.passthrough = name
        function.config = config
        return function

    return mark


def settings_from(config: type) -> Callable[[Callable], Callable]:
    """Mark a verb whose flags named like fields of dataclass ``config`` default to None
    (the dataclass's value): their help shows that default and the field's comment."""

    def mark(function: Callable) -> Callable:
        function.settings = config
        return function

    return mark


def call(function: Callable, namespace: argparse.Namespace, extra: list[str] | None = None) -> object:
    """Call ``function`` with the parsed flags that belong to it (and ``extra`` for a
    passthrough parameter)."""
    params = inspect.signature(function).parameters.values()
    name = getattr(function, "passthrough", None)
    if name is not None:
        setattr(namespace, name, list(extra or []))
    positional = [getattr(namespace, p.name) for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    keywords = {p.name: getattr(namespace, p.name) for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return function(*positional, **keywords)
