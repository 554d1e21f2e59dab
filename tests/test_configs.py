"""The one config mechanism (lmforge.configs): schema, help from the dataclasses, YAML,
overrides and flags all read the same way."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from lmforge import configs
from lmforge.cli.main import _verbs, build_parser
from lmforge.cli.signature import parse_docstring
from lmforge.errors import UserError
from lmforge.generate.config import GenerateConfig
from lmforge.train.config import KEYS, RunConfig, load_config
from tests.cli.cli_run import run


@dataclass
class Inner:
    # a comment above the field
    # on two lines
    depth: int = 2
    kind: Literal["a", "b"] = "a"  # beside the field
    plain: float | None = None


@dataclass
class Outer:
    width: int = 8  # the width; the next field's doc must not take this comment
    name: str = "x"
    tags: list[str] = field(default_factory=lambda: ["t"])
    inner: Inner = field(default_factory=Inner)


def test_schema_keys_defaults_and_comments():
    assert configs.keys(Outer) == {"width": int, "name": str, "tags": list[str], "inner.depth": int,
                                   "inner.kind": Literal["a", "b"], "inner.plain": float | None}
    assert configs.defaults(Outer) == {"width": 8, "name": "x", "tags": ["t"], "inner.depth": 2, "inner.kind": "a",
                                       "inner.plain": None}
    assert configs.field_docs(Outer) == {
        "width": "the width; the next field's doc must not take this comment",
        "inner.depth": "a comment above the field on two lines",
        "inner.kind": "beside the field",
    }


def test_load_coerces_checks_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("width: 16K\ninner:\n  kind: b\n")
    config = configs.load(Outer, path, {"inner.plain": "null", "inner.depth": "3", "name": 5, "tags": "one"})
    assert config == Outer(width=16_000, name="5", tags=["one"], inner=Inner(depth=3, kind="b"))
    assert configs.load(Outer, None, {"inner.plain": "2"}).inner.plain == 2.0
    with pytest.raises(UserError, match=r"did you mean inner\.kind"):
        configs.load(Outer, None, {"inner.knd": "a"})
    with pytest.raises(UserError, match="config key inner.kind must be one of a, b"):
        configs.load(Outer, None, {"inner.kind": "c"})


def test_every_run_config_key_is_documented_beside_its_field():
    assert set(configs.field_docs(RunConfig)) == set(KEYS)


def test_train_help_lists_each_key_with_the_dataclass_default(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    listing = out[out.index("config keys ("):].splitlines()
    for key, default in configs.defaults(RunConfig).items():
        line = next((line for line in listing if line.startswith(f"  --{key} ")), None)
        assert line is not None, key
        assert line.endswith(f"(default: {configs.shown(default)})"), line


def test_generate_help_defaults_come_from_generate_config():
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in verbs.choices["generate"]._actions}
    for name, default in configs.defaults(GenerateConfig).items():
        assert helps[name].endswith(f"(default: {configs.shown(default)})"), (name, helps[name])
    assert helps["top_k"].startswith(configs.field_docs(GenerateConfig)["top_k"])


def test_every_flag_of_every_verb_has_help():
    """A docstring whose Args section does not parse leaves every flag without help (generate's
    did: a "\\n\\n" in its examples broke the section split)."""
    for verb, entry in _verbs().items():
        for name, function in (entry.items() if isinstance(entry, dict) else [(verb, entry)]):
            _, helps, _ = parse_docstring(function.__doc__)
            documented = set(helps) | set(configs.field_docs(function.settings) if hasattr(function, "settings")
                                          else {})
            params = set(inspect.signature(function).parameters) - {getattr(function, "passthrough", None)}
            assert params <= documented, (name, params - documented)


def test_flags_convert_like_config_values(capsys, monkeypatch):
    """--max-new-tokens 1k reads as a config value would (configs.coerce): 1000."""
    seen = {}

    def fake_load_run(path):
        seen["loaded"] = path
        raise UserError("stop here", path, "test")

    monkeypatch.setattr("lmforge.runs.load_run", fake_load_run)
    monkeypatch.setattr(GenerateConfig, "replace", lambda self, **c: seen.update(c) or self)
    code, _, err = run(capsys, "generate", "nowhere", "--prompt", "x", "--max-new-tokens", "1k", "--top-p", "0.5")
    assert code == 2 and "stop here" in err
    assert seen["max_new_tokens"] == 1000 and seen["top_p"] == 0.5
    code, _, err = run(capsys, "generate", "nowhere", "--prompt", "x", "--top-k", "five")
    assert code == 2 and "expected int, got 'five'" in err and err.count("\n") == 1


def test_generation_yaml_through_the_same_mechanism(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("top_k: 10\nstop: END\nmax_new_tokens: 2k\n")
    assert GenerateConfig.from_yaml(path) == GenerateConfig(top_k=10, stop=["END"], max_new_tokens=2000)
    path.write_text("topk: 10\n")
    with pytest.raises(UserError, match="unknown generation setting.*did you mean top_k"):
        GenerateConfig.from_yaml(path)
    path.write_text("top_k: 2.5\n")
    with pytest.raises(UserError, match="generation setting top_k must be an integer"):
        GenerateConfig.from_yaml(path)
    path.write_text("top_k: 0\ntop_p: 0\n")
    with pytest.raises(UserError, match="top_p"):  # the dataclass's own checks still run
        GenerateConfig.from_yaml(path)
    with pytest.raises(UserError, match="generation config not found"):
        GenerateConfig.from_yaml(tmp_path / "missing.yaml")


def test_print_config_resolves_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "train", "--print-config", "--model.preset", "tiny-llama", "--train.max-steps", "7",
                       "--qat", "int8", "--name", "shown")
    assert code == 0
    printed = yaml.safe_load(out)
    expected = load_config(None, {"model.preset": "tiny-llama", "train.max_steps": "7", "qat": "int8",
                                  "name": "shown"})
    assert printed == dataclasses.asdict(expected)
    code, out, _ = run(capsys, "train", "--print-config", "--json", "--train.lr", "3e-4")
    assert code == 0 and json.loads(out)["train"]["lr"] == 3e-4
    assert list(tmp_path.iterdir()) == []
    code, _, err = run(capsys, "train", "--print-config", "--train.lrr", "1")
    assert code == 2 and "did you mean train.lr" in err


def test_print_config_and_generate_help_load_no_torch():
    """Reading a config is planning work: neither the run config nor the generation config imports torch."""
    code = ("import sys; from lmforge.cli.main import main\n"
            "for argv in (['train', '--print-config'], ['generate', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
