"""Where documents come from: the ``--data`` syntax, reading in a fixed order, input fingerprints.

One source is written ``[NAME=]LOCATION[?KEY=VALUE&...][:WEIGHT]``::

    corpus/notes.txt                   a file; .jsonl/.ndjson, .parquet by suffix, else text; .gz read through
    finance=data/fomc/:0.51            a folder: its .txt .text .md .rst .jsonl .ndjson .parquet files
                                       (optionally .gz), recursively, sorted; hidden files and others ignored
    'web=crawl/**/*.jsonl?field=body'  a glob (sorted; matched folders walked as above); field: JSON key
                                       (dotted path allowed) or Parquet column, default text
    'notes/*.md?whole=1'               whole=1: each text file is one document (default: documents are
                                       separated by blank lines)
    builtin:pydocs                     the standard library's docstrings (``builtin``)
    'builtin:markov?order=2&alphabet=8&seed=0&concentration=0.5&docs=2000&length=1000'
                                       alphabet: a letter count (first n of a-z) or the letters themselves
    hf:NAME[:SPLIT][?config=C&revision=R&field=text]   a Hugging Face dataset, streamed (needs ``datasets``)

NAME (letters, digits, ``_ . -``) defaults to the file's stem, the folder's name, ``pydocs``,
``markov`` or the dataset's name; WEIGHT (>= 0, default 1) is the source's mixture weight.
A ``?`` starts options only when what follows is ``key=value`` pairs, so globs keep ``?``.

Reading is deterministic (same input, same documents in the same order) and never crashes
on bad bytes (``readers``). A missing path, a pattern matching nothing, or a source that
yields no text at all is a UserError.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.pieces import MAX_PIECE_CHARS
from lmforge.data.readers import ReadStats, emit_document, file_format, is_known_file, read_file, require_pyarrow
from lmforge.errors import UserError, check_positive, check_whole, unknown_name

READER_VERSION = 1  # bump when reading rules change: every input fingerprint changes with it
BUILTINS = ("markov", "pydocs")
FILE_OPTIONS = ("field", "whole")
HF_OPTIONS = ("config", "field", "revision", "split")
MARKOV_OPTIONS = ("alphabet", "concentration", "docs", "length", "order", "seed")
MARKOV_DEFAULTS = {"order": "2", "alphabet": "8", "seed": "0", "concentration": "0.5", "docs": "2000", "length": "1000"}
_NAME = re.compile(r"^([A-Za-z0-9_][\w.-]*)=(.*)$", re.DOTALL)
_WEIGHT = re.compile(r"^(.*):([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$", re.DOTALL)
_OPTIONS = re.compile(r"^\w+=[^&?]*(?:&\w+=[^&?]*)*$")
_MAGIC = re.compile(r"[*?[]")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class SourceSpec:
    """One corpus source. ``location`` keeps builtin and hf options (``?order=3``); ``field`` and
    ``whole`` are the file options (module docstring)."""

    name: str
    location: str
    weight: float = 1.0
    field: str = "text"
    whole: bool = False


def split_options(location: str) -> tuple[str, dict[str, str]]:
    """``"base?k=v&k2=v2"`` -> ``("base", {"k": "v", "k2": "v2"})``; a glob's ``?`` stays in the base."""
    base, sep, query = location.rpartition("?")
    if not sep or not _OPTIONS.match(query):
        return location, {}
    options: dict[str, str] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key in options:
            raise UserError("option given twice", key, f"give {key}= once in {location!r}")
        options[key] = value
    return base, options


def _kind(base: str) -> str:
    if base.startswith("builtin:"):
        return "builtin"
    return "hf" if base.startswith("hf:") else "files"


def _check_options(kind: str, options: dict[str, str]) -> None:
    allowed = {"files": FILE_OPTIONS, "hf": HF_OPTIONS, "markov": MARKOV_OPTIONS, "pydocs": ()}[kind]
    for key in options:
        if key not in allowed:
            if not allowed:
                raise UserError(f"{kind} takes no options", key, f"remove ?{key}=...")
            raise unknown_name(f"option for a {kind} source", key, allowed)


def _default_name(base: str) -> str:
    if base.startswith("builtin:"):
        name = base.removeprefix("builtin:")
    elif base.startswith("hf:"):
        name = base.removeprefix("hf:").split(":")[0].rstrip("/").split("/")[-1]
    else:
        parts = Path(os.path.expanduser(base)).parts
        plain = []
        for part in parts:
            if _MAGIC.search(part):
                break
            plain.append(part)
        name = (parts[-1] if parts else "") if len(plain) == len(parts) else (plain[-1] if plain else "data")
        name = name.removesuffix(".gz")
        name = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    name = re.sub(r"[^\w.-]", "_", name).strip("._-")
    return name or "data"


def parse_source(arg: str) -> SourceSpec:
    """Parse one ``--data`` value (module docstring) into a SourceSpec; nothing is read yet."""
    if not isinstance(arg, str) or not arg.strip():
        raise UserError("empty data source", arg, "pass a path, a folder, a glob, builtin:pydocs or hf:NAME")
    text = arg.strip()
    name = None
    if m := _NAME.match(text):
        name, text = m.group(1), m.group(2)
    weight = 1.0
    if m := _WEIGHT.match(text):
        text, weight = m.group(1), float(m.group(2))
    base, options = split_options(text)
    if not base:
        raise UserError("data source has no location", arg, "write NAME=PATH or NAME=PATH:WEIGHT")
    kind = _kind(base)
    if kind == "builtin":
        which = base.removeprefix("builtin:")
        if which not in BUILTINS:
            raise unknown_name("built-in corpus", which, [f"builtin:{b}" for b in BUILTINS])
        _check_options(which, options)
    else:
        _check_options(kind, options)
    name = name or _default_name(base)
    check_positive(f"weight of source {name!r}", weight, allow_zero=True, upper=1e9)
    field = options.pop("field", "text") if kind != "builtin" else "text"
    if not field:
        raise UserError("empty field name", arg, "write ?field=NAME")
    whole = _flag("whole", options.pop("whole", "0"))
    rest = "&".join(f"{k}={v}" for k, v in options.items())
    return SourceSpec(name=name, location=f"{base}?{rest}" if rest else base, weight=weight, field=field, whole=whole)


def _flag(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UserError(f"option {key} must be 1 or 0", value, f"write ?{key}=1")


def parse_sources(args: Iterable[str]) -> list[SourceSpec]:
    """Parse several ``--data`` values; two sources with one name is a UserError."""
    specs = [parse_source(a) for a in args]
    seen: dict[str, str] = {}
    for s in specs:
        if s.name in seen:
            fix = f"name them: --data A={seen[s.name]} --data B={s.location}"
            raise UserError("two sources share a name", s.name, fix)
        seen[s.name] = s.location
    return specs


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in files if not f.startswith(".") and is_known_file(Path(f))]
    return found


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    plain = []
    for p in parts:
        if _MAGIC.search(p):
            break
        plain.append(p)
    return Path(*plain) if plain else Path(".")


def source_files(spec: SourceSpec) -> tuple[Path, list[Path]]:
    """(root, files) of a file source: files sorted by their path relative to root."""
    base, _ = split_options(spec.location)
    if _kind(base) != "files":
        raise ValueError(f"{spec.location} is not a file source")
    pattern = os.path.expanduser(base)
    if _MAGIC.search(pattern):
        import glob

        root, files = _glob_root(pattern), []
        for hit in glob.glob(pattern, recursive=True):
            files += _walk(Path(hit)) if os.path.isdir(hit) else [Path(hit)] if os.path.isfile(hit) else []
        if not files:
            raise UserError("no files match", base, "check the pattern (quote it so that the shell leaves it alone)")
    elif os.path.isdir(pattern):
        root, files = Path(pattern), _walk(Path(pattern))
        if not files:
            raise UserError(
                "folder has no text files", base, "it needs .txt .md .rst .jsonl .parquet files (others are ignored)"
            )
    elif os.path.isfile(pattern):
        root, files = Path(pattern).parent, [Path(pattern)]
    else:
        raise UserError("no such file or folder", base, "check the path")
    files = sorted(set(files), key=lambda p: _relative(p, root))
    return root, files


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def markov_from_location(location: str):
    """(MarkovSource, n_docs, doc_len) for a ``builtin:markov?...`` location (defaults filled in)."""
    from lmforge.data.builtin import MarkovSource

    _, options = split_options(location)
    _check_options("markov", options)
    o = {**MARKOV_DEFAULTS, **options}

    def number(key: str, kind: type):
        try:
            return kind(o[key])
        except ValueError:
            fix = f"write e.g. {key}={MARKOV_DEFAULTS[key]}"
            raise UserError(f"markov option {key} must be a number", o[key], fix) from None

    alphabet = o["alphabet"]
    if alphabet.isdigit():
        n = int(alphabet)
        if not 2 <= n <= 26:
            raise UserError("markov alphabet size must be 2 to 26", n, "write alphabet=8 or alphabet=xyz")
        alphabet = "abcdefghijklmnopqrstuvwxyz"[:n]
    source = MarkovSource(number("order", int), alphabet, number("seed", int), number("concentration", float))
    n_docs = check_whole("markov docs", number("docs", int), upper=10**9)
    return source, n_docs, check_whole("markov length", number("length", int), upper=10**8)


def iter_documents(
    spec: SourceSpec, stats: ReadStats | None = None, *, max_chars: int = MAX_PIECE_CHARS
) -> Iterator[str]:
    """The documents of ``spec`` in a fixed order, as strings of at most ``max_chars`` characters.

    Paths, options and optional packages are checked now (UserError before any reading);
    ``stats`` (optional) accumulates what was read. A source that yields no document at
    all raises UserError at the end of the iteration.
    """
    stats = stats if stats is not None else ReadStats()
    base, options = split_options(spec.location)
    kind = _kind(base)
    if kind == "files":
        _, files = source_files(spec)
        if any(file_format(f) == "parquet" for f in files):
            require_pyarrow()
        field, whole = spec.field, spec.whole
        documents = (d for f in files for d in read_file(f, stats, field=field, whole=whole, max_chars=max_chars))
    elif kind == "hf":
        from lmforge.data.hub import dataset_documents, open_dataset

        _check_options("hf", options)
        name, dataset = open_dataset(base, options)
        documents = dataset_documents(name, dataset, spec.field, stats, max_chars)
    elif base == "builtin:markov":
        source, n_docs, length = markov_from_location(spec.location)
        documents = (d for doc in source.documents(n_docs, length) for d in emit_document(doc, stats, max_chars))
    elif base == "builtin:pydocs":
        _check_options("pydocs", options)
        from lmforge.data.builtin import pydocs_documents

        documents = (d for doc in pydocs_documents() for d in emit_document(doc, stats, max_chars))
    else:
        raise unknown_name("built-in corpus", base.removeprefix("builtin:"), [f"builtin:{b}" for b in BUILTINS])
    return _nonempty(spec, documents, stats)


def _nonempty(spec: SourceSpec, documents: Iterator[str], stats: ReadStats) -> Iterator[str]:
    skipped, bad = stats.skipped_files, stats.bad_records
    n = 0
    for doc in documents:
        n += 1
        yield doc
    if n == 0:
        skipped, bad = stats.skipped_files - skipped, stats.bad_records - bad
        if skipped:
            fix = f"its {skipped} file(s) look binary or not UTF-8"
        elif bad:
            fix = f"none of its {bad:,} records has a string field {spec.field!r}; choose one with ?field=NAME"
        else:
            fix = "add text to it or leave it out"
        raise UserError(f"source {spec.name} has no text", spec.location, fix)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as e:
        raise UserError("cannot read file", str(path), f"check its permissions ({e.strerror or e})") from None
    return h.hexdigest()


def input_fingerprint(spec: SourceSpec) -> str:
    """sha256 identifying a source's documents: file contents (streamed), or builtin/hf parameters.

    Files count by their paths relative to the source's root, sizes and content hashes, so a
    moved folder keeps its fingerprint. Built-ins hash their parameters and the Python version
    (numpy's too for markov). An hf source hashes its name and options only: its content is
    not downloaded to hash it (pin ``?revision=`` for reproducibility).
    """
    base, options = split_options(spec.location)
    kind = _kind(base)
    payload: dict = {"reader": READER_VERSION, "max_piece_chars": MAX_PIECE_CHARS, "kind": kind, "field": spec.field}
    if kind == "files":
        root, files = source_files(spec)
        payload["whole"] = spec.whole
        payload["files"] = [[_relative(f, root), f.stat().st_size, file_sha256(f)] for f in files]
    elif kind == "hf":
        payload.update(base=base, options=dict(sorted(options.items())))
    elif base == "builtin:markov":
        source, n_docs, length = markov_from_location(spec.location)
        payload.update(source.parameters(), docs=n_docs, length=length, python=sys.version)
    elif base == "builtin:pydocs":
        from lmforge.data.builtin import pydocs_parameters

        payload.update(pydocs_parameters())
    else:
        raise unknown_name("built-in corpus", base.removeprefix("builtin:"), [f"builtin:{b}" for b in BUILTINS])
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
