"""The one atomic text writer, atomic files and directories, the safetensors writer, and
how an OS error reads.

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
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import UserError


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


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def check_output(out: Path, *, force: bool, directory: bool, source: Path | None = None) -> None:
    """UserError when ``out`` is the ``source`` run itself, exists without ``force``, or is a
    file where a directory goes (or the other way round)."""
    out = Path(out)
    what = "output directory" if directory else "output file"
    if source is not None and out.resolve() == Path(source).resolve():
        raise UserError(f"the {what} is the source run", str(out), "pass --out NEW_PATH")
    if out.exists() and not force:
        raise UserError(f"the {what} exists", str(out), "pass --force to replace it, or another --out")
    if out.exists() and directory and not out.is_dir():
        raise UserError("the output path is a file", str(out), "pass --out NEW_DIR")
    if out.exists() and not directory and out.is_dir():
        raise UserError("the output path is a directory", str(out), "name a file: --out DIR/model.gguf")


@contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty ``.tmp-NAME-PID`` directory beside ``out`` to fill; when the block
    ends without error it is renamed onto ``out`` (an existing ``out`` is moved aside first
    and removed after), so ``out`` is the old directory or the complete new one, never half
    of one. On any error the temporary directory is removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``out`` for a writer that takes a path (GGUF, PNG, ...); when
    the block ends without error it is fsynced and renamed onto ``out``; on error removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` is moved aside first and removed after."""
    if out.exists():
        old = out.parent / f".tmp-old-{out.name}-{os.getpid()}"
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.rename(tmp, out)
    try:
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


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
