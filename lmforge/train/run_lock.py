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
        self.created = False  # this process made the directory
        self._file = None

    def acquire(self) -> RunLock:
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "?"
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
