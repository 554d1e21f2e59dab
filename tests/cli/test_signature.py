"""The function-signature -> argparse adapter behind every verb."""

from __future__ import annotations

from typing import Literal

import pytest

from lmforge.cli.signature import OneLineErrorParser, add_verb, call, parse_docstring


def sample(
    model: str,
    gpu_memory: str | None = None,
    n_gpus: int = 1,
    mfu: float = 0.4,
    precision: Literal["bf16", "fp32"] = "bf16",
    laws: list[str] | None = None,
    json: bool = False,
    margin: bool = True,
) -> dict:
    """Do a sample thing.

    More words.

    Args:
        model: a preset name
        gpu_memory: memory per GPU,
            e.g. 24GiB
        n_gpus: how many GPUs

    Examples:
        lmforge sample gpt2
    """
    return dict(locals())


def _parser():
    parser = OneLineErrorParser(prog="t")
    sub = parser.add_subparsers(parser_class=OneLineErrorParser)
    add_verb(sub, "sample", sample)
    return parser


def test_flags_use_hyphens_and_types():
    ns = _parser().parse_args(["sample", "gpt2", "--gpu-memory", "24GiB", "--n-gpus", "8", "--json", "--no-margin"])
    out = call(ns._function, ns)
    assert out == {
        "model": "gpt2", "gpu_memory": "24GiB", "n_gpus": 8, "mfu": 0.4, "precision": "bf16",
        "laws": None, "json": True, "margin": False,
    }


def test_list_and_literal():
    ns = _parser().parse_args(["sample", "m", "--laws", "a", "b", "--precision", "fp32"])
    assert ns.laws == ["a", "b"] and ns.precision == "fp32"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sample", "m", "--n-gpus", "eight"], "expected int, got 'eight'"),
        (["sample", "m", "--precision", "int3"], "invalid choice: 'int3'"),
        (["sample"], "the following arguments are required: model"),
        (["sample", "m", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_docstring_parts():
    description, helps, epilog = parse_docstring(sample.__doc__)
    assert description == "Do a sample thing.\n\nMore words."
    assert helps["gpu_memory"] == "memory per GPU, e.g. 24GiB"
    assert helps["n_gpus"] == "how many GPUs"
    assert "lmforge sample gpt2" in epilog


def optional_positional(model: str | None = None, /, *, params: str | None = None) -> tuple:
    """A verb whose model may be left out."""
    return model, params


def test_positional_only_with_default_is_optional():
    parser = OneLineErrorParser(prog="t")
    add_verb(parser.add_subparsers(parser_class=OneLineErrorParser), "o", optional_positional)
    ns = parser.parse_args(["o", "--params", "500B"])
    assert call(ns._function, ns) == (None, "500B")
    ns = parser.parse_args(["o", "gpt2"])
    assert call(ns._function, ns) == ("gpt2", None)
