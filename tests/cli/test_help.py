"""--help of every verb works (a % in a help string once broke lmforge plan --help)."""

from __future__ import annotations

import pytest

from lmforge.cli.main import _verbs
from tests.cli.cli_run import run

VERBS = [[name, *([] if sub is None else [sub])] for name, entry in _verbs().items()
         for sub in ([None] if callable(entry) else entry)]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_a_working_help(capsys, verb):
    code, out, err = run(capsys, *verb, "--help")
    assert code == 0, err
    assert out.startswith("usage: lmforge " + " ".join(verb)) and "options:" in out


def test_the_top_level_help_lists_every_verb(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in _verbs():
        assert name in out
