"""Run the CLI in-process and capture what it prints."""

from __future__ import annotations

from lmforge.cli.main import main


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
