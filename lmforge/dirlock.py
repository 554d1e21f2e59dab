"""A directory with one owner: an OS file lock on ``DIR/.lock``, held for the life of the
process that writes the directory (``fcntl.flock``: the kernel drops it when the process
dies, however it dies, so a lock is never left stale). Used for run directories
(``lmforge.train.loop``) and shard directories (``lmforge.data.shards``).

A second process on the same directory is refused with the owner's pid. Holding the
lock also proves that whatever the directory holds was left by a process that is gone.
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


def entries_besides_lock(directory: Path) -> list[Path]:
    """What ``directory`` holds besides its lock file (nothing if it does not exist)."""
    directory = Path(directory)
    return [p for p in directory.iterdir() if p.name != LOCK_FILE] if directory.is_dir() else []


class DirectoryLock:
    """``DirectoryLock(path).acquire()`` creates the directory if needed and locks it for
    this process; ``what`` names it in the refusal (run directory, shard directory)."""

    def __init__(self, run_dir: Path, what: str = "run directory"):
        self.run_dir = Path(run_dir)
        self.what = what
        self.created: Path | None = None  # the highest directory this process made (the run's, or --out-dir's)
        self._file = None

    def acquire(self) -> DirectoryLock:
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
                raise UserError(f"the {self.what} is in use by another lmforge process",
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

    def discard_if_unused(self) -> None:
        """`discard`, if this process made the directory and it holds nothing but the lock."""
        if self.created is not None and not entries_besides_lock(self.run_dir):
            self.discard()

    def discard(self) -> None:
        """Remove the directory (a run that failed before its first complete checkpoint:
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
