"""A run directory has one owner: an OS file lock on ``RUN_DIR/.lock``, held for the life
of the process that trains it (``fcntl.flock``: the kernel drops it when the process
dies, however it dies, so a lock is never left stale).

The lock is taken before anything is written into the directory. A second process on
the same run (two ``lmforge train`` of one name, two ``--resume`` of one run) is refused
with the owner's pid. Holding the lock also proves that whatever the directory holds
was left by a process that is gone: a first attempt killed before its first complete
checkpoint is then started afresh, and temp files of a killed final write are removed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lmforge.errors import UserError

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # not on Windows: the lock is a no-op there
    fcntl = None


class RunLock:
    """``RunLock(run_dir).acquire()`` creates the directory if needed and locks it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.created: Path | None = None  # the highest directory this process made (the run's, or --out-dir's)
        self._file = None

    def acquire(self) -> RunLock:
        missing = [p for p in [self.run_dir, *self.run_dir.parents] if not p.exists()]
        self.created = missing[-1] if missing else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(handle)
                handle.close()
                raise UserError("the run directory is in use by another lmforge process",
                                f"{self.run_dir} (pid {owner})",
                                "wait for it to finish, or pick another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def discard(self) -> None:
        """Remove the run directory (a run that failed before its first complete checkpoint:
        nothing worth keeping) and the parents this process created, if empty."""
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.created is not None and self.created != self.run_dir:
            for parent in self.run_dir.parents:
                try:
                    parent.rmdir()  # only empty ones
                except OSError:
                    break
                if parent == self.created:
                    break


def _owner(handle, wait_seconds: float = 1.0) -> str:
    """The owner's pid from the lock file (it writes it right after locking: wait for it)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        handle.seek(0)
        text = handle.read().strip()
        if text or time.monotonic() > deadline:
            return text or "?"
        time.sleep(0.02)


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
