"""Where the shared text corpora are (README of ../shared/corpora): ``$LMFORGE_CORPORA`` when
set, else the first ``shared/corpora`` beside the checkout or beside any folder above it.
Tests that need a corpus skip, naming where they looked, when there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def corpora_dir() -> Path | None:
    if os.environ.get("LMFORGE_CORPORA"):
        return Path(os.environ["LMFORGE_CORPORA"])
    for folder in [ROOT, *ROOT.parents]:
        candidate = folder.parent / "shared" / "corpora"
        if candidate.is_dir():
            return candidate
    return None


def corpus(name: str) -> Path:
    """The path of one shared corpus file, or a skip saying it is not here."""
    folder = corpora_dir()
    if folder is None or not (folder / name).is_file():
        pytest.skip(f"shared corpus {name} not found (looked beside {ROOT} and above; set LMFORGE_CORPORA)")
    return folder / name
