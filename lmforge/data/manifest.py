"""The manifest of a prepared shard directory: what was tokenized, how, and into which files.

``manifest.json`` sits next to the shards written by ``lmforge prepare``
(:func:`lmforge.data.shards.prepare`). It records, per source, the input fingerprint,
document and token counts, and every shard with its token count and SHA-256, plus the
tokenizer's hash and vocabulary size, the token dtype, the split seed and the validation
fraction. State is JSON (never pickle), written to a temporary name and renamed
(DESIGN.md conventions).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.errors import UserError
from lmforge.fileio import write_atomic

MANIFEST_NAME = "manifest.json"
FORMAT = "lmforge-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardFile:
    """One shard: a raw little-endian array of ``tokens`` token ids of the manifest's dtype."""

    file: str  # name relative to the shard directory
    tokens: int
    sha256: str


@dataclass(frozen=True)
class SplitEntry:
    """The documents of one source that fell into one split, as a stream of shards."""

    documents: int = 0
    tokens: int = 0  # eos included
    shards: tuple[ShardFile, ...] = ()


@dataclass(frozen=True)
class SourceEntry:
    """One prepared source: where it came from and what it became."""

    name: str
    location: str
    field: str
    fingerprint: str  # lmforge.data.sources.input_fingerprint of the input
    documents: int  # documents with at least one token (empty ones are skipped)
    skipped_documents: int
    train: SplitEntry
    val: SplitEntry
    whole: bool = False  # SourceSpec.whole: each text file one document
    read_stats: dict = field(default_factory=dict, compare=False)  # lmforge.data.readers.ReadStats, for reporting

    @property
    def train_tokens(self) -> int:
        return self.train.tokens

    @property
    def val_tokens(self) -> int:
        return self.val.tokens

    def split(self, split: str) -> SplitEntry:
        if split not in SPLITS:
            raise UserError("unknown split", split, "choose train or val")
        return self.train if split == "train" else self.val


@dataclass
class Manifest:
    """Everything ``open_shards`` needs to trust a shard directory.

    ``reused`` is not stored: ``prepare`` sets it when the inputs were unchanged and it
    returned the existing manifest without writing anything.
    """

    sources: tuple[SourceEntry, ...]
    tokenizer_sha256: str
    vocab_size: int
    eos_id: int
    dtype: str  # "uint16" or "uint32"
    seed: int
    val_fraction: float
    shard_tokens: int  # the cap on tokens per shard file
    lmforge_version: str
    format: str = FORMAT
    version: int = FORMAT_VERSION
    reused: bool = field(default=False, compare=False)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def source(self, name: str) -> SourceEntry:
        for s in self.sources:
            if s.name == name:
                return s
        from lmforge.errors import unknown_name

        raise unknown_name("source in the shard manifest", name, self.names)

    def to_json(self) -> dict:
        """The content of manifest.json."""
        out = asdict(self)
        out.pop("reused")
        return out

    def to_dict(self) -> dict:
        """manifest.json's content plus, for reports, ``reused`` and per source flat ``train_tokens``,
        ``val_tokens``, ``train_documents`` and ``val_documents``."""
        out = self.to_json()
        out["reused"] = self.reused
        for source, entry in zip(out["sources"], self.sources, strict=True):
            source["train_tokens"], source["val_tokens"] = entry.train.tokens, entry.val.tokens
            source["train_documents"], source["val_documents"] = entry.train.documents, entry.val.documents
        return out

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """Build a manifest from parsed JSON; KeyError/TypeError/ValueError when malformed."""

        def split(d: dict) -> SplitEntry:
            shards = tuple(ShardFile(str(s["file"]), int(s["tokens"]), str(s["sha256"])) for s in d["shards"])
            return SplitEntry(int(d["documents"]), int(d["tokens"]), shards)

        sources = tuple(
            SourceEntry(
                name=str(s["name"]),
                location=str(s["location"]),
                field=str(s["field"]),
                fingerprint=str(s["fingerprint"]),
                documents=int(s["documents"]),
                skipped_documents=int(s["skipped_documents"]),
                train=split(s["train"]),
                val=split(s["val"]),
                whole=bool(s["whole"]),
                read_stats=dict(s.get("read_stats") or {}),
            )
            for s in data["sources"]
        )
        return cls(
            sources=sources,
            tokenizer_sha256=str(data["tokenizer_sha256"]),
            vocab_size=int(data["vocab_size"]),
            eos_id=int(data["eos_id"]),
            dtype=str(data["dtype"]),
            seed=int(data["seed"]),
            val_fraction=float(data["val_fraction"]),
            shard_tokens=int(data["shard_tokens"]),
            lmforge_version=str(data["lmforge_version"]),
            format=str(data["format"]),
            version=int(data["version"]),
        )


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically; return its path."""
    path = Path(directory) / MANIFEST_NAME
    write_atomic(path, json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read ``directory/manifest.json``; UserError when absent, unreadable or of another format version."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise UserError("no such shard directory", str(directory), "run `lmforge prepare` to create it")
    if not path.is_file():
        raise UserError(
            "no manifest.json in the shard directory", str(directory), "run `lmforge prepare` into that directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            "corrupt manifest.json", str(path), f"re-run `lmforge prepare --force` ({type(e).__name__})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError("not an lmforge shard manifest", str(path), "re-run `lmforge prepare --force`")
    if data.get("version") != FORMAT_VERSION:
        raise UserError(
            f"shard manifest format version {data.get('version')} is not supported (this lmforge reads "
            f"version {FORMAT_VERSION})",
            str(path),
            "re-run `lmforge prepare --force` with this lmforge",
        )
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError("corrupt manifest.json", str(path), f"re-run `lmforge prepare --force` (bad {e})") from None
