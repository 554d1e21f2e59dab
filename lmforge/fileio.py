"""The one atomic text writer and the safetensors writer, and how an OS error reads.

``write_atomic`` writes to ``.NAME.tmp-PID`` beside the target, fsyncs, and renames it
onto the target: a reader sees the old file or the new one, never half of one. On any
failure (disk full, permission denied, a signal) the temp file is removed and the
target is untouched. ``save_safetensors`` turns safetensors' own error for a failed
write into the ``OSError`` it is (safetensors reports ENOSPC as ``SafetensorError``), so
that every failed write reaches the CLI as an ``OSError`` and prints as one line
(`os_error_message`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path


def temp_path(path: Path) -> Path:
    """``.NAME.tmp-PID`` beside ``path`` (`remove_stale_temp_files` removes stale ones)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_figure(figure, path: str | os.PathLike) -> Path:
    """A matplotlib figure as a PNG at ``path``, atomically (a temp file beside it, then
    rename); return the path. The figure's own ``savefig`` writes; nothing is imported here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files in ``directory`` (writes killed half-way); the
    caller holds the directory's lock (`lmforge.dirlock`), so no live process writes them."""
    removed = []
    for path in Path(directory).glob(".*.tmp-*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_SAFETENSORS_ERRNO = {"no space left": errno.ENOSPC, "permission denied": errno.EACCES,
                      "read-only file system": errno.EROFS, "disk quota": errno.EDQUOT}


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with a failed write raised as an ``OSError`` naming
    the path (the partial file removed)."""
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata=dict(metadata) if metadata is not None else None)
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        Path(path).unlink(missing_ok=True)
        text = str(exc)
        code = next((n for words, n in _SAFETENSORS_ERRNO.items() if words in text.lower()), errno.EIO)
        raise OSError(code, os.strerror(code), str(path)) from None


def os_error_message(exc: OSError) -> str:
    """``No space left on device (ENOSPC) ('runs/a/model.safetensors'); free space ...``"""
    name = errno.errorcode.get(exc.errno or 0, "")
    what = exc.strerror or type(exc).__name__
    where = exc.filename2 if exc.filename2 is not None else exc.filename  # a rename: the target
    fix = {errno.ENOSPC: "free disk space or write elsewhere (--out-dir)", errno.EDQUOT: "free disk space",
           errno.EACCES: "check the permissions of the path", errno.EPERM: "check the permissions of the path",
           errno.EROFS: "write to a writable directory", errno.ENOENT: "check the path",
           errno.ENOTDIR: "a part of the path is a file, not a directory",
           errno.EISDIR: "the path is a directory: name a file"}.get(exc.errno, "check the path and the disk")
    head = f"{what} ({name})" if name else what
    return f"{head} ({where!r}); {fix}" if where else f"{head}; {fix}"
