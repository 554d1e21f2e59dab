"""Opening prepared token shards: check the manifest against the files and hand out memmap views.

``open_shards`` checks that the manifest exists and is of this format version, that every
shard file is present with exactly tokens x itemsize bytes (optionally its SHA-256), that
the tokenizer is the one the shards were made with, and (optionally) that the inputs did
not change; anything else is a UserError. ``TokenStore.tokens`` returns ``np.memmap``
views (nanoGPT's ``get_batch`` reads its ``train.bin`` the same way), so nothing is read
into memory until it is indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmforge.data.manifest import SPLITS, Manifest, read_manifest
from lmforge.errors import UserError
from lmforge.fileio import sha256_of


class _TokenizerLike(Protocol):  # lmforge.data.tokenizer.Tokenizer
    vocab_size: int
    sha256: str


def _disk_dtype(name: str) -> np.dtype:
    if name not in ("uint16", "uint32"):
        raise UserError("unknown token dtype in the shard manifest", name, "re-run `lmforge prepare --force`")
    return np.dtype("<u2") if name == "uint16" else np.dtype("<u4")


def shard_problems(directory: Path, manifest: Manifest, *, verify: bool = False) -> list[str]:
    """Missing, wrongly sized or (with ``verify``) wrongly hashed shard files."""
    itemsize = _disk_dtype(manifest.dtype).itemsize
    problems: list[str] = []
    for source in manifest.sources:
        for split in SPLITS:
            entry = source.split(split)
            if sum(s.tokens for s in entry.shards) != entry.tokens:
                problems.append(f"{source.name} {split}: shard token counts do not add up to {entry.tokens}")
            for shard in entry.shards:
                path = directory / shard.file
                if Path(shard.file).name != shard.file:
                    problems.append(f"shard name {shard.file!r} is not a plain file name")
                elif not path.is_file():
                    problems.append(f"shard file missing: {path}")
                elif (size := path.stat().st_size) != shard.tokens * itemsize:
                    problems.append(
                        f"shard file truncated or corrupt: {path} has {size:,} bytes, "
                        f"expected {shard.tokens * itemsize:,}"
                    )
                elif verify and sha256_of(path) != shard.sha256:
                    problems.append(f"shard file corrupt (sha256 mismatch): {path}")
    return problems


class TokenView:
    """A read-only 1-D view over several shard memmaps, sliced without concatenating them.

    Supports ``len``, ``.shape``, ``.dtype``, integer indexing and slices with step 1 (a
    slice returns an ndarray copy of just that range).
    """

    def __init__(self, parts: list[np.ndarray]):  # each (n_i,)
        self._parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])  # (k+1,)
        self.dtype = parts[0].dtype
        self.shape = (int(self._starts[-1]),)
        self.ndim = 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> Any:
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[start:stop][::step]
            if stop <= start:
                return np.empty(0, self.dtype)
            first = int(np.searchsorted(self._starts, start, side="right")) - 1
            pieces = []
            i = first
            while i < len(self._parts) and self._starts[i] < stop:
                lo, hi = max(start, self._starts[i]), min(stop, self._starts[i + 1])
                pieces.append(self._parts[i][lo - self._starts[i] : hi - self._starts[i]])
                i += 1
            return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)
        index = int(key) + n if int(key) < 0 else int(key)
        if not 0 <= index < n:
            raise IndexError(f"index {key} out of range for {n} tokens")
        i = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._parts[i][index - self._starts[i]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class TokenStore:
    """An opened, checked shard directory. ``tokens(source, split)`` gives a 1-D view of its token ids."""

    directory: Path
    manifest: Manifest

    def __post_init__(self) -> None:
        self._dtype = _disk_dtype(self.manifest.dtype)
        self._cache: dict[tuple[str, str], Any] = {}

    @property
    def sources(self) -> list[str]:
        return self.manifest.names

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def eos_id(self) -> int:
        return self.manifest.eos_id

    def n_tokens(self, source: str, split: str = "train") -> int:
        return self.manifest.source(source).split(split).tokens

    def tokens(self, source: str, split: str = "train") -> np.ndarray | TokenView:
        """The token ids of one source and split, in document order, each document ending with eos.

        A ``np.memmap`` (read-only) when the split is one shard file, a :class:`TokenView`
        over the memmaps when it spans several, an empty array when the split is empty.
        Nothing is read from disk until it is indexed.
        """
        key = (source, split)
        if key not in self._cache:
            entry = self.manifest.source(source).split(split)
            parts = [
                np.memmap(self.directory / s.file, dtype=self._dtype, mode="r", shape=(s.tokens,))
                for s in entry.shards
                if s.tokens
            ]
            if not parts:
                self._cache[key] = np.empty(0, dtype=self._dtype)
            elif len(parts) == 1:
                self._cache[key] = parts[0]
            else:
                self._cache[key] = TokenView(parts)
        return self._cache[key]


def open_shards(
    out_dir: Path | str,
    tokenizer: _TokenizerLike | None = None,
    *,
    verify: bool = False,
    check_inputs: bool = False,
) -> TokenStore:
    """Open a prepared shard directory after checking it; UserError for anything that does not match.

    Always checked: the manifest exists and is of this format version, and every shard file
    exists with exactly tokens x itemsize bytes. ``tokenizer`` given: its sha256 and vocab
    size must equal the manifest's. ``verify``: also the SHA-256 of every shard (reads every
    byte). ``check_inputs``: re-fingerprint the input sources and refuse changed inputs.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    fix = f"re-run `lmforge prepare --force` into {out_dir} or prepare into a new directory"
    if tokenizer is not None and (
        str(tokenizer.sha256) != manifest.tokenizer_sha256 or int(tokenizer.vocab_size) != manifest.vocab_size
    ):
        raise UserError(
            f"the shards in {out_dir} were tokenized with another tokenizer (sha256 "
            f"{manifest.tokenizer_sha256[:12]}, vocab {manifest.vocab_size}; this one: "
            f"{str(tokenizer.sha256)[:12]}, vocab {tokenizer.vocab_size})",
            None,
            f"use the tokenizer.json the shards were made with, or {fix} with this tokenizer",
        )
    problems = shard_problems(out_dir, manifest, verify=verify)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise UserError(problems[0] + more, None, fix)
    if check_inputs:
        from lmforge.data.sources import SourceSpec, input_fingerprint

        for s in manifest.sources:
            spec = SourceSpec(name=s.name, location=s.location, field=s.field, whole=s.whole)
            if input_fingerprint(spec) != s.fingerprint:
                raise UserError(f"the input of source {s.name!r} changed since prepare", s.location, fix)
    return TokenStore(out_dir, manifest)
