"""Stream documents out of files: plain text, JSON lines and Parquet, optionally gzipped.

- Text (``.txt`` and anything not listed below): documents are separated by one or more
  blank lines (lines holding only spaces); with ``whole=True`` each file is one document.
  Read in chunks of ``READ_CHARS`` characters, so a 50 MB line never sits whole in memory.
- JSON lines (``.jsonl``, ``.ndjson``): one object per line, the document is the string
  under ``field`` (a dotted path such as ``meta.body`` also works). A line that is not
  JSON, or lacks a string ``field``, is skipped and counted in ``ReadStats.bad_records``.
- Parquet (``.parquet``): the string column ``field``, streamed by row groups (needs
  ``pyarrow``).

Bytes that are not UTF-8 are replaced by U+FFFD and counted (``replaced_chars``); a file
whose first 64 KiB are more than 30% NUL bytes or undecodable bytes is binary (or UTF-16):
it is skipped, counted (``skipped_files``) and named in ``ReadStats.warnings``, never a
crash. Documents are stripped of surrounding whitespace; empty ones are dropped; one longer
than ``max_chars`` is yielded as consecutive pieces cut at whitespace (``pieces``).
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from lmforge.data.pieces import MAX_PIECE_CHARS, cut_point, split_long
from lmforge.errors import UserError

log = logging.getLogger("lmforge.data")

READ_CHARS = 1 << 20
SNIFF_BYTES = 1 << 16
BINARY_FRACTION = 0.30
MAX_WARNINGS = 100
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")  # what a folder walk picks up, besides the above
_GENUINE_FFFD = "\ufffd".encode()
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass
class ReadStats:
    """What reading a source met; pass one to ``iter_documents(spec, stats=...)``."""

    files: int = 0  # files read (skipped ones not included)
    documents: int = 0  # strings yielded (a split document counts once per piece)
    bytes: int = 0  # UTF-8 bytes of the strings yielded
    input_bytes: int = 0  # bytes read from files (after gunzip)
    replaced_chars: int = 0  # undecodable bytes or lone surrogates replaced by U+FFFD
    skipped_files: int = 0  # binary, corrupt or unreadable files left out
    bad_records: int = 0  # JSON lines / rows without a string field, left out
    split_documents: int = 0  # documents longer than max_chars, yielded in pieces
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        log.warning(message)
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def as_dict(self) -> dict:
        return asdict(self)


def file_format(path: Path) -> str:
    """``"jsonl"``, ``"parquet"`` or ``"text"`` from the name (a ``.gz`` ending is looked through)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def is_known_file(path: Path) -> bool:
    """Whether a folder walk reads this file (text, JSON lines or Parquet by suffix)."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for reading bytes, gunzipping ``.gz``; an unreadable file is a UserError."""
    try:
        f = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise UserError("cannot read file", str(path), f"check its permissions ({e.strerror or e})") from None
    with f:
        yield f


def _replaced(text: str, raw_fffd: int) -> int:
    """U+FFFD characters in ``text`` that were not already U+FFFD in the raw bytes."""
    return max(0, text.count("\ufffd") - raw_fffd)


def looks_binary(head: bytes) -> bool:
    """True if more than ``BINARY_FRACTION`` of the characters are NUL or undecodable."""
    if not head:
        return False
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    bad = _replaced(text, head.count(_GENUINE_FFFD)) + text.count("\x00")
    return bad > BINARY_FRACTION * max(1, len(text))


class _CountingReader(io.RawIOBase):
    """Counts bytes and genuine U+FFFD sequences (EF BF BD) passing through a binary file."""

    def __init__(self, f: BinaryIO):
        self._read = getattr(f, "read1", f.read)
        self.total = 0
        self.genuine_fffd = 0
        self._tail = b""
        self.error: Exception | None = None  # a truncated or corrupt .gz ends the stream here

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.error is not None:
            return 0
        try:
            data = self._read(len(buffer))  # read1: a corrupt .gz loses no decoded data
        except (OSError, EOFError, zlib.error) as e:
            self.error = e
            return 0
        n = len(data)
        buffer[:n] = data
        self.total += n
        joined = self._tail + data  # a sequence split across reads is counted once
        self.genuine_fffd += joined.count(_GENUINE_FFFD)
        self._tail = joined[-2:]
        return n


def _emit(text: str, stats: ReadStats) -> Iterator[str]:
    text = text.strip()
    if text:
        stats.documents += 1
        stats.bytes += len(text.encode("utf-8"))
        yield text


def emit_document(text: str, stats: ReadStats, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Yield one document already in memory, in pieces if longer than ``max_chars``."""
    if len(text) <= max_chars:
        yield from _emit(text, stats)
        return
    stats.split_documents += 1
    for piece in split_long(text, max_chars):
        yield from _emit(piece, stats)


def _text_chunks(path: Path, stats: ReadStats) -> Iterator[str]:
    with open_binary(path) as f:
        counter = _CountingReader(f)
        reader = io.TextIOWrapper(io.BufferedReader(counter, READ_CHARS), "utf-8-sig", errors="replace", newline=None)
        fffd = 0
        try:
            while chunk := reader.read(READ_CHARS):
                fffd += chunk.count("\ufffd")
                yield chunk
        finally:
            stats.input_bytes += counter.total
            stats.replaced_chars += max(0, fffd - counter.genuine_fffd)
        if counter.error is not None:
            stats.warn(f"{path}: unreadable after {counter.total:,} bytes, rest skipped ({counter.error})")


def split_documents(chunks: Iterable[str], stats: ReadStats, *, whole: bool, max_chars: int) -> Iterator[str]:
    """Documents from consecutive chunks of one text: blank-line separated, or whole."""
    pending = ""
    split = False
    for chunk in chunks:
        pending += chunk
        if not whole:
            start = 0
            for m in _BLANK_LINE.finditer(pending):
                yield from _emit(pending[start : m.start()], stats)
                stats.split_documents += split  # the document that just ended came in pieces
                split = False
                start = m.end()
            pending = pending[start:]
        while len(pending) > max_chars:  # no separator in sight: cut at whitespace, keep the rest
            end = cut_point(pending, 0, max_chars)
            yield from _emit(pending[:end], stats)
            split = True
            pending = pending[end:]
    yield from _emit(pending, stats)
    stats.split_documents += split


def read_text(path: Path, stats: ReadStats, *, whole: bool = False, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Documents of a text file (module docstring)."""
    yield from split_documents(_text_chunks(path, stats), stats, whole=whole, max_chars=max_chars)


def _get_field(obj: object, name: str) -> object:
    if isinstance(obj, dict) and name in obj:
        return obj[name]
    for part in name.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def clean_string(text: str, stats: ReadStats) -> str:
    """Replace lone surrogates (from JSON ``\\ud800`` escapes) by U+FFFD, counting them."""
    text, n = _SURROGATE.subn("\ufffd", text)
    stats.replaced_chars += n
    return text


def read_jsonl(path: Path, stats: ReadStats, *, field: str = "text", max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Documents under ``field`` of a JSON-lines file; bad lines skipped and counted."""
    bad, first_bad, keys = 0, "", None
    with open_binary(path) as f:
        lineno = 0
        try:
            for lineno, raw in enumerate(f, 1):
                stats.input_bytes += len(raw)
                if not raw.strip():
                    continue
                line = raw.decode("utf-8", "replace")
                stats.replaced_chars += _replaced(line, raw.count(_GENUINE_FFFD))
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad, first_bad = bad + 1, first_bad or f"line {lineno} is not JSON"
                    continue
                value = _get_field(obj, field)
                if not isinstance(value, str):
                    if keys is None and isinstance(obj, dict):
                        keys = sorted(obj)[:10]
                    bad, first_bad = bad + 1, first_bad or f"line {lineno} has no string field {field!r}"
                    continue
                yield from emit_document(clean_string(value, stats), stats, max_chars)
        except (OSError, EOFError, zlib.error) as e:
            stats.warn(f"{path}: unreadable after line {lineno}, rest skipped ({e})")
    if bad:
        stats.bad_records += bad
        seen = f"; fields seen: {', '.join(keys)}" if keys else ""
        stats.warn(f"{path}: skipped {bad:,} bad line(s) ({first_bad}{seen})")


def require_pyarrow() -> None:
    """Raise a UserError saying how to install pyarrow when it is missing."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError("reading .parquet files needs pyarrow", None, "pip install pyarrow") from None


def read_parquet(
    path: Path, stats: ReadStats, *, field: str = "text", max_chars: int = MAX_PIECE_CHARS
) -> Iterator[str]:
    """Documents in the string column ``field`` of a Parquet file, streamed by batches."""
    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # not Parquet, or corrupt: skipped like a binary file
        stats.skipped_files += 1
        stats.warn(f"{path}: not a readable Parquet file, skipped ({str(e).splitlines()[0] if str(e) else e!r})")
        return
    names = pf.schema_arrow.names
    if field not in names:
        raise UserError(f"Parquet file has no column {field!r}", str(path), "choose one of: " + ", ".join(names))
    stats.files += 1
    stats.input_bytes += path.stat().st_size
    bad = 0
    for batch in pf.iter_batches(batch_size=1024, columns=[field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, bytes):
                text = value.decode("utf-8", "replace")
                stats.replaced_chars += _replaced(text, value.count(_GENUINE_FFFD))
                value = text
            if not isinstance(value, str):
                bad += 1
                continue
            yield from emit_document(value, stats, max_chars)
    if bad:
        stats.bad_records += bad
        stats.warn(f"{path}: skipped {bad:,} row(s) whose {field!r} is not a string")


def read_file(
    path: Path, stats: ReadStats, *, field: str = "text", whole: bool = False, max_chars: int = MAX_PIECE_CHARS
) -> Iterator[str]:
    """Documents of one file by its format (``file_format``); binary files skipped and counted."""
    fmt = file_format(path)
    if fmt == "parquet":
        yield from read_parquet(path, stats, field=field, max_chars=max_chars)
        return
    with open_binary(path) as f:
        try:
            head = f.read(SNIFF_BYTES)
        except (OSError, EOFError, zlib.error) as e:
            head, corrupt = b"", e
        else:
            corrupt = None
    if corrupt is not None or looks_binary(head):
        stats.skipped_files += 1
        why = f"unreadable ({corrupt})" if corrupt is not None else "binary or not UTF-8 (UTF-16?)"
        stats.warn(f"{path}: {why}, skipped")
        return
    stats.files += 1
    if fmt == "jsonl":
        yield from read_jsonl(path, stats, field=field, max_chars=max_chars)
    else:
        yield from read_text(path, stats, whole=whole, max_chars=max_chars)
