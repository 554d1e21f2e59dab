"""Token shards: tokenize sources once into numpy memmap files plus a manifest, and open them safely.

``prepare`` streams each source's documents through the tokenizer in batches (Hugging Face
``tokenizers``' ``encode_batch`` runs on all cores), appends eos after every document,
sends each document to train or validation by a hash of (seed, source name, document
index), and writes raw little-endian token arrays (uint16 when the vocabulary fits, else
uint32), at most ``shard_tokens`` tokens per file, as nanoGPT's ``prepare.py`` does with
``np.memmap`` (Karpathy, nanoGPT, data/openwebtext/prepare.py). Everything is written in a
temporary directory ``OUT/.tmp-prepare-PID/`` first (`lmforge.fileio.staging_directory`:
the shard directory holds its lock file and maybe files that are not ours, so it is not
swapped whole), the old manifest removed, the shards renamed into place one by one, and
the manifest written last (atomically): it marks a finished shard directory, as
``state.json`` marks a checkpoint (write-temp-then-rename, Pillai et al., OSDI 2014,
Sec. 2). An interrupted or failed prepare leaves the previous state (or no manifest) and
never a half-written file; the next prepare removes its temporaries
(`lmforge.fileio.remove_stale_temp_files`).

Opening them (``open_shards``, ``TokenStore``) lives in ``lmforge.data.store`` and is
re-exported here.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmforge.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    ShardFile,
    SourceEntry,
    SplitEntry,
    read_manifest,
    write_manifest,
)
from lmforge.data.store import TokenStore, TokenView, open_shards, shard_problems
from lmforge.dirlock import DirectoryLock
from lmforge.errors import UserError, check_whole
from lmforge.fileio import move_into, remove_stale_temp_files, staging_directory

__all__ = ["prepare", "open_shards", "TokenStore", "TokenView", "token_dtype", "split_of", "DEFAULT_SHARD_TOKENS"]

DEFAULT_SHARD_TOKENS = 64 * 2**20  # 128 MiB of uint16 per file
DEFAULT_BATCH_DOCUMENTS = 1000
_BATCH_CHARS = 1 << 24  # also cut a batch at 16 Mi characters, so that huge documents do not pile up
_STAGING = "prepare"  # OUT/.tmp-prepare-PID/ while shards are written


class _TokenizerLike(Protocol):  # lmforge.data.tokenizer.Tokenizer
    vocab_size: int
    eos_id: int
    sha256: str

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class _SpecLike(Protocol):  # lmforge.data.sources.SourceSpec
    name: str
    location: str
    field: str


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65535), else uint32; little-endian on disk."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    return {2: "uint16", 4: "uint32"}[np.dtype(dtype).itemsize]


def split_of(seed: int, source: str, index: int, val_fraction: float) -> str:
    """'val' when a hash of (seed, source name, document index) falls below ``val_fraction``.

    Deterministic across runs, machines and Python versions (BLAKE2b, not ``hash()``), and
    independent of the tokenizer and of the other sources.
    """
    digest = hashlib.blake2b(f"{seed}\x00{source}\x00{index}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2.0**64 < val_fraction else "train"


def _source_api() -> tuple[Callable[[Any], tuple[Iterable[str], Any]], Callable[[Any], str]]:
    """(read, input_fingerprint) on lmforge.data.sources, imported when needed.

    ``read(spec)`` returns (documents, stats): the iterator of ``iter_documents`` and the
    ``ReadStats`` it fills as it goes (replaced characters, skipped files, ...).
    """
    from lmforge.data.readers import ReadStats
    from lmforge.data.sources import input_fingerprint, iter_documents

    def read(spec: Any) -> tuple[Iterable[str], Any]:
        stats = ReadStats()
        return iter_documents(spec, stats), stats

    return read, input_fingerprint


def _stats_dict(stats: Any) -> dict:
    if stats is None:
        return {}
    data = stats.as_dict() if hasattr(stats, "as_dict") else dict(vars(stats))
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


_NOTABLE = ("replaced_chars", "skipped_files", "bad_records", "split_documents")


def _whole(spec: Any) -> bool:
    return bool(getattr(spec, "whole", False))


def _file_stems(names: Sequence[str]) -> list[str]:
    """File-name-safe, unique stems for the source names."""
    stems: list[str] = []
    for i, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or f"source{i}"
        while stem in stems:
            stem = f"{stem}-{i}"
        stems.append(stem)
    return stems


class _SplitWriter:
    """Appends token arrays to ``STEM.SPLIT.NNN.bin`` files of at most ``cap`` tokens, hashing as it goes."""

    def __init__(self, directory: Path, stem: str, split: str, dtype: np.dtype, cap: int):
        self.directory, self.stem, self.split, self.dtype, self.cap = directory, stem, split, dtype, cap
        self.shards: list[ShardFile] = []
        self.documents = 0
        self.tokens = 0
        self._file: Any = None
        self._name = ""
        self._hash: Any = None
        self._in_file = 0

    def write(self, tokens: np.ndarray) -> None:  # (n,) of self.dtype
        while tokens.size:
            if self._file is None:
                self._name = f"{self.stem}.{self.split}.{len(self.shards):03d}.bin"
                self._file = open(self.directory / self._name, "wb")  # noqa: SIM115 - closed in _close_file
                self._hash, self._in_file = hashlib.sha256(), 0
            chunk, tokens = tokens[: self.cap - self._in_file], tokens[self.cap - self._in_file :]
            data = chunk.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._in_file += chunk.size
            self.tokens += chunk.size
            if self._in_file == self.cap:
                self._close_file()

    def _close_file(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.shards.append(ShardFile(self._name, self._in_file, self._hash.hexdigest()))
        self._file = None

    def finish(self) -> SplitEntry:
        if self._file is not None:
            self._close_file()
        return SplitEntry(self.documents, self.tokens, tuple(self.shards))

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _batches(documents: Iterable[str], size: int, max_chars: int = _BATCH_CHARS) -> Iterator[list[str]]:
    """Lists of up to ``size`` documents, cut early once they hold ``max_chars`` characters."""
    batch: list[str] = []
    chars = 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= size or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _tokenize_source(
    spec: _SpecLike,
    documents: Iterable[str],
    tokenizer: _TokenizerLike,
    writers: dict[str, _SplitWriter],
    *,
    seed: int,
    val_fraction: float,
    batch_size: int,
) -> tuple[int, int]:
    """Tokenize one source into the writers; return (documents kept, empty documents skipped).

    The most recent document is held back until the next one arrives, so that the last one
    can be sent to whichever split is still empty: with two or more documents (and
    ``val_fraction > 0``) both splits get at least one.
    """
    dtype, eos, vocab = writers["train"].dtype, int(tokenizer.eos_id), int(tokenizer.vocab_size)
    kept = skipped = 0
    pending: tuple[list[int], str] | None = None
    parts: dict[str, list[list[int]]] = {"train": [], "val": []}

    def flush() -> None:
        for split, docs in parts.items():
            if not docs:
                continue
            n = sum(len(d) for d in docs) + len(docs)
            arr = np.fromiter(itertools.chain.from_iterable(d + [eos] for d in docs), dtype=np.int64, count=n)
            if arr.min() < 0 or arr.max() >= vocab:
                raise RuntimeError(f"tokenizer produced an id outside [0, {vocab}) for source {spec.name!r}")
            writers[split].write(arr.astype(dtype))
            writers[split].documents += len(docs)
            docs.clear()

    index = 0
    for batch in _batches(documents, batch_size):
        for ids in tokenizer.encode_batch(batch):
            if not ids:
                skipped += 1
            else:
                if pending is not None:
                    parts[pending[1]].append(pending[0])
                pending = (list(ids), split_of(seed, spec.name, index, val_fraction))
                kept += 1
            index += 1
        flush()
    if pending is not None:
        ids, split = pending
        n_val = writers["val"].documents + len(parts["val"])
        n_train = writers["train"].documents + len(parts["train"])
        if kept >= 2 and val_fraction > 0 and n_val == 0:
            split = "val"
        elif n_train == 0:
            split = "train"
        parts[split].append(ids)
        flush()
    if kept == 0:
        raise UserError(
            f"source {spec.name!r} has no documents with any tokens",
            spec.location,
            "check the path, the file contents and the field/column name",
        )
    return kept, skipped


def _differences(old: Manifest, new: Manifest) -> list[str]:
    """What differs between an existing manifest and the one these inputs would produce."""
    diffs: list[str] = []
    if old.tokenizer_sha256 != new.tokenizer_sha256 or old.vocab_size != new.vocab_size:
        diffs.append(f"the tokenizer changed (sha256 {old.tokenizer_sha256[:12]} -> {new.tokenizer_sha256[:12]})")
    old_keys = [(s.name, s.location, s.field, s.whole) for s in old.sources]
    new_keys = [(s.name, s.location, s.field, s.whole) for s in new.sources]
    if old_keys != new_keys:
        diffs.append(f"the sources changed ({old.names} -> {new.names})")
    else:
        for o, n in zip(old.sources, new.sources, strict=True):
            if o.fingerprint != n.fingerprint:
                diffs.append(f"the input of source {o.name!r} changed ({o.location})")
    for key in ("seed", "val_fraction", "shard_tokens"):
        if getattr(old, key) != getattr(new, key):
            diffs.append(f"{key} changed ({getattr(old, key)} -> {getattr(new, key)})")
    return diffs


def _check_prepare_args(sources: Sequence[_SpecLike], val_fraction: float, seed: int, shard_tokens: int) -> None:
    if not sources:
        raise UserError("no sources to prepare", None, "pass at least one --data PATH")
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError("two sources share a name", dupes[0], "name them apart with --data NAME=PATH")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise UserError("val_fraction must be a fraction in [0, 1)", val_fraction, "pass e.g. 0.05 for 5%")
    check_whole("seed", seed, 2**63 - 1, allow_zero=True)
    check_whole("shard_tokens", shard_tokens, 2**40)


def prepare(
    sources: Sequence[_SpecLike],
    tokenizer: _TokenizerLike,
    out_dir: Path | str,
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    batch_size: int = DEFAULT_BATCH_DOCUMENTS,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Tokenize ``sources`` into shards and ``manifest.json`` in ``out_dir``; return the manifest.

    Unchanged inputs (same input fingerprints, tokenizer, seed, val_fraction, shard size)
    and intact shards: nothing is written and the existing manifest is returned with
    ``reused=True``. A manifest made from other inputs or another tokenizer is refused
    with a UserError unless ``force``. Each document ends with ``tokenizer.eos_id``; empty
    documents are skipped and counted.
    """
    _check_prepare_args(sources, val_fraction, seed, shard_tokens)
    check_whole("batch_size", batch_size, 10**7)
    say = log or (lambda _msg: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("the shard output path is a file, not a directory", str(out_dir), "choose another --out")
    lock = DirectoryLock(out_dir, "shard directory").acquire()  # one writer (or reader) at a time
    try:
        return _prepare_locked(sources, tokenizer, out_dir, val_fraction=val_fraction, seed=seed, force=force,
                               shard_tokens=shard_tokens, batch_size=batch_size, say=say)
    except BaseException:
        lock.discard_if_unused()  # only a directory this process made, and only while it is empty
        raise
    finally:
        lock.release()


def _prepare_locked(sources: Sequence[_SpecLike], tokenizer: _TokenizerLike, out_dir: Path, *, val_fraction: float,
                    seed: int, force: bool, shard_tokens: int, batch_size: int,
                    say: Callable[[str], None]) -> Manifest:
    """`prepare` once the shard directory is locked (it exists)."""
    read_documents, input_fingerprint = _source_api()
    dtype = token_dtype(int(tokenizer.vocab_size))
    from lmforge import __version__

    def manifest_for(entries: tuple[SourceEntry, ...]) -> Manifest:
        return Manifest(
            sources=entries,
            tokenizer_sha256=str(tokenizer.sha256),
            vocab_size=int(tokenizer.vocab_size),
            eos_id=int(tokenizer.eos_id),
            dtype=dtype_name(dtype),
            seed=seed,
            val_fraction=float(val_fraction),
            shard_tokens=shard_tokens,
            lmforge_version=__version__,
        )

    fingerprints = [input_fingerprint(spec) for spec in sources]
    empty = SplitEntry()
    wanted = manifest_for(
        tuple(
            SourceEntry(s.name, s.location, s.field, fp, 0, 0, empty, empty, _whole(s))
            for s, fp in zip(sources, fingerprints, strict=True)
        )
    )
    old: Manifest | None = None
    if (out_dir / MANIFEST_NAME).exists():
        try:
            old = read_manifest(out_dir)
        except UserError:
            if not force:
                raise
        if old is not None:
            diffs = _differences(old, wanted)
            if diffs and not force:
                raise UserError(
                    f"the shard directory was prepared from other inputs: {'; '.join(diffs)}",
                    str(out_dir),
                    "re-run prepare with --force to overwrite it, or prepare into a new directory",
                )
            if not diffs:
                problems = shard_problems(out_dir, old, verify=False)
                if not problems:
                    say(f"shards up to date in {out_dir} (inputs and tokenizer unchanged); nothing to do")
                    old.reused = True
                    return old
                say(f"shards damaged ({problems[0]}); rebuilding")

    remove_stale_temp_files(out_dir)
    with staging_directory(out_dir, _STAGING) as tmp:  # removed when the block ends, however it ends
        entries = _write_sources(sources, read_documents, fingerprints, tokenizer, tmp, dtype, seed=seed,
                                 val_fraction=val_fraction, shard_tokens=shard_tokens, batch_size=batch_size, say=say)
        manifest = manifest_for(entries)
        # Commit: drop the old manifest first, so that no moment exists where a manifest
        # describes files that are being replaced; then move the shards, then the manifest.
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        new_files = {s.file for e in entries for split in SPLITS for s in e.split(split).shards}
        move_into(tmp, sorted(new_files), out_dir)
        write_manifest(out_dir, manifest)
        if old is not None:
            for name in {s.file for e in old.sources for split in SPLITS for s in e.split(split).shards} - new_files:
                if Path(name).name == name:
                    (out_dir / name).unlink(missing_ok=True)
    say(f"wrote {len(new_files)} shard files and {out_dir / MANIFEST_NAME}")
    return manifest


def _write_sources(sources: Sequence[_SpecLike], read_documents: Callable[[Any], tuple[Iterable[str], Any]],
                   fingerprints: Sequence[str], tokenizer: _TokenizerLike, tmp: Path, dtype: np.dtype, *, seed: int,
                   val_fraction: float, shard_tokens: int, batch_size: int,
                   say: Callable[[str], None]) -> tuple[SourceEntry, ...]:
    """Tokenize every source into shard files in ``tmp`` (each fsynced); their manifest entries."""
    writers: list[_SplitWriter] = []
    entries = []
    try:
        for spec, stem, fp in zip(sources, _file_stems([s.name for s in sources]), fingerprints, strict=True):
            pair = {split: _SplitWriter(tmp, stem, split, dtype, shard_tokens) for split in SPLITS}
            writers.extend(pair.values())
            documents, stats = read_documents(spec)
            kept, skipped = _tokenize_source(
                spec,
                documents,
                tokenizer,
                pair,
                seed=seed,
                val_fraction=val_fraction,
                batch_size=batch_size,
            )
            train, val = pair["train"].finish(), pair["val"].finish()
            read_stats = _stats_dict(stats)
            entries.append(
                SourceEntry(
                    spec.name, spec.location, spec.field, fp, kept, skipped, train, val, _whole(spec), read_stats
                )
            )
            notes = [f"{skipped:,} empty documents skipped"] if skipped else []
            notes += [f"{read_stats[k]:,} {k.replace('_', ' ')}" for k in _NOTABLE if read_stats.get(k)]
            say(
                f"{spec.name}: {kept:,} documents, {train.tokens:,} train + {val.tokens:,} val tokens"
                + (f" ({'; '.join(notes)})" if notes else "")
            )
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return tuple(entries)
