"""The ``lmforge`` command: one typed function per verb, no logic here.

Errors a user can cause print one line ``error: ...`` and exit with code 2;
``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from lmforge import __version__
from lmforge.cli.signature import OneLineErrorParser, add_verb, call
from lmforge.errors import UserError


def _verbs() -> dict[str, Callable | dict[str, Callable]]:
    """Verb name -> function (or sub-verb -> function). Verb modules import nothing heavy
    at module level: torch is imported inside the verbs that need it."""
    from lmforge.cli import environment, export, inference, planning, pretraining, quantize, report, scaling, study

    return {
        "plan": planning.plan,
        "memory": planning.memory,
        "cost": planning.cost,
        "advise": planning.advise,
        "tokenizer": {"train": pretraining.tokenizer_train},
        "prepare": pretraining.prepare,
        "train": pretraining.train,
        "eval": pretraining.evaluate,
        "generate": inference.generate,
        "fill-mask": inference.fill_mask,
        "quantize": quantize.quantize,
        "export": export.export,
        "import": export.import_checkpoint,
        "scaling": {"sweep": scaling.sweep, "fit": scaling.fit, "plot": scaling.plot},
        "study": {"domain": study.domain},
        "quickstart": pretraining.quickstart,
        "report": report.report,
        "env": environment.env,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="lmforge",
        description="Plan, pretrain, evaluate, quantize and sample language models.",
        epilog="Add --debug to any command for a full traceback on error.",
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    subparsers = parser.add_subparsers(title="verbs", metavar="VERB", parser_class=OneLineErrorParser)
    for name, entry in _verbs().items():
        if isinstance(entry, dict):  # a verb with sub-verbs: lmforge tokenizer train
            group = subparsers.add_parser(name, help=f"{name} commands: {', '.join(entry)}")
            inner = group.add_subparsers(title=f"{name} verbs", metavar="VERB", parser_class=OneLineErrorParser)
            for sub_name, function in entry.items():
                add_verb(inner, sub_name, function)
        else:
            add_verb(subparsers, name, entry)
    return parser


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """['--flops', '-1e20'] -> ['--flops=-1e20'], so that argparse passes a negative
    value to the verb (which explains why it is wrong) instead of taking it for a flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"^-[0-9.]", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmforge`` console script and ``python -m lmforge``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = _attach_negative_numbers([a for a in argv if a != "--debug"])
    parser = build_parser()
    try:
        namespace, extra = parser.parse_known_args(argv)
        if not hasattr(namespace, "_function"):
            parser.print_help()
            return 2
        if extra and not namespace._passthrough:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        call(namespace._function, namespace, extra)
    except UserError as exc:
        if debug:
            raise
        rank = os.environ.get("RANK", "0")  # under torchrun every rank reports; rank 0 plainly
        line = f"error: {exc}" if rank == "0" else f"error (rank {rank}): {exc}"
        sys.stderr.write(line + "\n")  # one write: ranks sharing a terminal do not split each other's lines
        sys.stderr.flush()
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except OSError as exc:  # disk full, permissions, a path that is a file: one line, no traceback
        if debug:
            raise
        from lmforge.fileio import os_error_message

        sys.stderr.write(f"error: {os_error_message(exc)}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
