"""A run directory has one owner (`lmforge.dirlock`, on ``RUN_DIR/.lock``), taken before
anything is written into it: two ``lmforge train`` of one name, or two ``--resume`` of one
run, cannot both run. With the lock held, what the directory holds was left by a process
that is gone: a first attempt killed before its first complete checkpoint is started
afresh, and temp files of a killed final write are removed.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.dirlock import LOCK_FILE, DirectoryLock

RunLock = DirectoryLock  # the lock of a run directory


def leftover_entries(run_dir: Path) -> list[Path]:
    """What the directory holds besides its lock file."""
    return [p for p in Path(run_dir).iterdir() if p.name != LOCK_FILE] if Path(run_dir).is_dir() else []


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID`` files in RUN_DIR (a final write killed half-way); the
    caller holds the lock, so no live process is writing them."""
    removed = []
    for path in Path(run_dir).glob(".*.tmp-*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
