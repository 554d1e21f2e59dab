"""The one way to write a file or a directory atomically, stale-temp cleanup, the safetensors
write call, and how an OS error reads.

Every writer in the package goes through here (tensors: ``lmforge.tensorfile``, which
calls `save_safetensors`). The protocol is write-temp-then-rename (Pillai et al., "All File
Systems Are Not Created Equal", OSDI 2014, Sec. 2): write the new content beside the
target under a temporary name, fsync it, ``rename`` it onto the target (atomic on POSIX),
fsync the parent directory so the rename survives a power cut. A reader sees the old
content or the new, never half of it; on any failure (disk full, permission denied, a
signal) the temporary is removed and the target is untouched. `_rename_into_place` is the
only rename in the package.

Temporary names (one scheme; `remove_stale_temp_files` knows it)::

    .NAME.tmp-PID     a file on its way to NAME           (`temp_path`: write_atomic, atomic_file)
    .tmp-NAME-PID     a directory on its way to NAME      (`temp_dir_path`: atomic_directory,
                      checkpoints' .tmp-step-000500-PID, shards' .tmp-prepare-PID)
    .tmp-old-NAME-PID the directory NAME moved aside while a new one is renamed onto it

A process killed half-way leaves only such names; loaders never read them, and the next
writer (holding the directory's lock, `lmforge.dirlock`) removes those whose process is gone.

This module imports neither torch nor numpy (planning verbs import it; tests/cli/test_no_torch.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import UserError

# .NAME.tmp-PID (a file's temp) or .tmp-NAME-PID (a directory's, and .tmp-old-NAME-PID)
_TEMP_NAME = re.compile(r"^\.(?:.+\.tmp-(\d+)|tmp-.+-(\d+))$")


def temp_path(path: Path, pid: int | None = None) -> Path:
    """``.NAME.tmp-PID`` beside ``path``: where a new file is written before its rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def temp_dir_path(path: Path, pid: int | None = None) -> Path:
    """``.tmp-NAME-PID`` beside ``path``: where a new directory is filled before its rename."""
    path = Path(path)
    return path.with_name(f".tmp-{path.name}-{os.getpid() if pid is None else pid}")


# --------------------------------------------------------------------------- fsync and the one rename


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk (fsync(2) on a fresh descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | os.PathLike) -> None:
    """Make the entries of ``path`` (a rename into it) durable (POSIX); a no-op where a
    directory cannot be opened or fsynced (Windows, some network filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (deepest first)."""
    if not path.is_dir():
        fsync_file(path)
        return
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                fsync_file(os.path.join(root, name))
        fsync_directory(root)


def _rename_into_place(tmp: Path, out: Path) -> None:
    """fsync ``tmp`` (a file, or a directory and all it holds), rename it onto ``out``, fsync
    ``out``'s parent. The only rename in lmforge.

    A file replaces an existing file in one ``rename``: no moment without ``out``. A
    directory cannot be renamed onto a non-empty one, so an existing ``out`` is renamed
    aside to ``.tmp-old-NAME-PID`` first (and back if the second rename fails) and removed
    after; a kill between the two renames leaves ``out`` absent and the old one aside,
    which `remove_stale_temp_files` removes. (Checkpoints never hit this window for the
    directory ``latest`` names: only a re-saved step is swapped.)
    """
    _fsync_tree(tmp)
    if tmp.is_dir() and (out.exists() or out.is_symlink()):
        old = temp_dir_path(out.with_name(f"old-{out.name}"))
        _remove(old)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        fsync_directory(out.parent)
        _remove(old)
    else:
        os.replace(tmp, out)
        fsync_directory(out.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- atomic files


@contextmanager
def _file_beside(out: Path) -> Iterator[Path]:
    tmp = temp_path(out)
    try:
        yield tmp
        _rename_into_place(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path. ``IsADirectoryError``
    when ``path`` is a directory; the parent directory must exist."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    with _file_beside(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``out`` (parents created) for a writer that takes a path
    (GGUF, PNG, safetensors...); when the block ends without error it is fsynced and renamed
    onto ``out``; on error it is removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_beside(out) as tmp:
        yield tmp


def save_figure(figure, path: str | os.PathLike) -> Path:
    """A matplotlib figure as a PNG at ``path``, atomically (`atomic_file`); return the path.
    The figure's own ``savefig`` writes; nothing is imported here."""
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


# --------------------------------------------------------------------------- atomic directories


def new_temp_directory(out: str | os.PathLike, pid: int | None = None) -> Path:
    """A fresh, empty ``.tmp-NAME-PID`` beside ``out`` (parents created; a leftover of the
    same name removed first) to fill and then `commit_directory` onto ``out``."""
    tmp = temp_dir_path(Path(out), pid)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _remove(tmp)
    tmp.mkdir()
    return tmp


def commit_directory(tmp: Path, out: Path) -> None:
    """Rename a filled `new_temp_directory` onto ``out`` (an existing ``out`` swapped out,
    see `_rename_into_place`); on failure ``tmp`` is removed and ``out`` is as it was."""
    try:
        _rename_into_place(Path(tmp), Path(out))
    except BaseException:
        _remove(Path(tmp))
        raise


@contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty ``.tmp-NAME-PID`` directory beside ``out`` to fill; when the block
    ends without error it is fsynced and renamed onto ``out`` (an existing ``out`` is moved
    aside first and removed after), so ``out`` is the old directory or the complete new one,
    never half of one. On any error the temporary directory is removed and ``out`` is
    untouched. Split in two (`new_temp_directory`, `commit_directory`) where the filling is
    not one block of code (a checkpoint that all ranks write, `lmforge.train.checkpoint`)."""
    out = Path(out)
    tmp = new_temp_directory(out)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    commit_directory(tmp, out)


@contextmanager
def staging_directory(directory: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield an empty ``.tmp-NAME-PID`` inside ``directory`` for new files that replace some
    of ``directory``'s own one by one (`move_into`), for a directory that cannot be swapped
    whole: a shard directory holds its lock file (`lmforge.dirlock`) and maybe files that
    are not lmforge's. Removed when the block ends, however it ends. The caller keeps the
    directory consistent by its own marker written last (shards: ``manifest.json``)."""
    tmp = new_temp_directory(Path(directory) / name)
    try:
        yield tmp
    finally:
        _remove(tmp)


def move_into(staging: Path, names: Iterable[str], directory: Path) -> None:
    """Rename each of ``names`` from ``staging`` onto ``directory/NAME`` (fsynced; an
    existing file replaced in one rename), in the order given."""
    for name in names:
        _rename_into_place(Path(staging) / name, Path(directory) / name)


# --------------------------------------------------------------------------- stale temporaries


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `temp_path` and `temp_dir_path` in ``directory`` (files and
    directories: writes killed half-way) whose process is gone or is this one; return them.

    Call it before this process writes in ``directory``, holding the directory's lock
    (`lmforge.dirlock`); a temporary of another live process is kept. Nothing else is touched.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        match = _TEMP_NAME.match(path.name)
        if not match:
            continue
        pid = int(match.group(1) or match.group(2))
        if pid != os.getpid() and _alive(pid):
            continue
        _remove(path)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (signal 0); unsure (not ours to signal) counts as alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# --------------------------------------------------------------------------- hashes and output checks


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


# --------------------------------------------------------------------------- safetensors and OS errors


_SAFETENSORS_ERRNO = {"no space left": errno.ENOSPC, "permission denied": errno.EACCES,
                      "read-only file system": errno.EROFS, "disk quota": errno.EDQUOT}


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with a failed write raised as an ``OSError`` naming
    the path (the partial file removed): safetensors reports ENOSPC as ``SafetensorError``,
    and every failed write must reach the CLI as an ``OSError`` (`os_error_message`).
    Not atomic by itself: `lmforge.tensorfile.save_tensors` is the writer to call."""
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
