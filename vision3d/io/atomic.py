"""Atomic file writes: write to a temporary file in the same directory, then rename.

``os.replace`` within one directory (one filesystem) is atomic on POSIX and
Windows, so a reader sees either the old file or the complete new one, never a
half-written file, even if the writer is killed or interrupted with Ctrl-C.
The temporary file keeps the target's suffix so that libraries choosing the
format from the extension (PIL, trimesh, plyfile, ...) still do the right thing.

This is the one place files are written atomically (docs/ARCHITECTURE.md,
Errors and files). It also turns the write failures a user can fix -- a full
disk, a read-only or foreign folder, a file where a folder should be -- into
one-line :class:`~vision3d.errors.UserError` messages naming the path
(:func:`write_errors`), so a caller never shows a traceback for them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from vision3d.errors import UserError


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import time.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
#: Modes a plain open()/mkdir() would give; mkstemp/mkdtemp create 0600/0700 entries.
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


# errno -> (what happened, what to do), for OSErrors a user fixes by choosing another place or freeing space.
_WRITE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write somewhere else"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write somewhere else"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "choose a location you may write to"),
    errno.EPERM: ("operation not permitted", "choose a location you may write to"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EISDIR: ("it is a directory", "pass a file path"),
}


def write_error(e: OSError, path: str | os.PathLike | None = None) -> UserError | None:
    """The one-line UserError for an OSError raised while writing ``path``, or None.

    None means the error is not one a user fixes by choosing another place or
    freeing space (e.g. an I/O error of the device): let it propagate.

    Args:
        e: the error.
        path: the file or folder being written (default: the error's own filename).
    """
    what = _WRITE_ERRNOS.get(e.errno)
    if what is None:
        return None
    if path is None:  # the error's own file, which may have been read or written
        return UserError(f"{e.filename or 'a file'}: {what[0]}; {what[1]}")
    return UserError(f"{path}: cannot write ({what[0]}); {what[1]}")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn full-disk / read-only / permission / not-a-folder OSErrors inside the block into one-line UserErrors.

    Usage::

        with write_errors(out):
            np.save(out, array)
    """
    try:
        yield
    except OSError as e:
        err = write_error(e, path)
        if err is None:
            raise
        raise err from None


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and its parents) if missing; returns it.

    Raises:
        UserError: ``path`` (or a parent) exists as a file, or cannot be created
            (read-only, no permission, full disk).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is a file, not a folder; choose another path")
    with write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Fail early -- before a long computation -- when ``path`` cannot become a file.

    Returns:
        ``Path(path)``.
    Raises:
        UserError: ``path`` is a directory, or a part of its folder path is a file.
            (Read-only folders and full disks are reported when writing: see :func:`write_errors`.)
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; the {what} must be a file path (e.g. {path / 'results.json'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: {parent} is a file, not a folder; choose another path for the {what}")
            break
    return path


def _fsync_path(path: Path) -> None:
    # Flush file contents to disk so that a power loss after the rename cannot
    # leave a renamed-but-empty file (the rename itself is atomic regardless).
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Usage::

        with atomic_path("out/mesh.ply") as tmp:
            mesh.export(tmp)          # any writer that takes a path

    The parent directory is created if missing. On any exception (including
    ``KeyboardInterrupt``) the temporary file is deleted and ``path`` is left
    untouched. If the body does not create the temporary file, nothing is
    renamed and ``FileNotFoundError`` is raised.

    Args:
        path: final file path.
        fsync: flush the file to disk before renaming (slower; for files that
            must survive a power loss, such as manifests).
    Yields:
        Path of the temporary file (same directory, same suffix, hidden name).
    Raises:
        UserError: the file cannot be written: full disk, read-only or foreign
            folder, a file where a folder should be, ``path`` is a directory
            (see :func:`write_errors`); ``path`` is left untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass a file path")
    ensure_dir(path.parent)
    with write_errors(path):
        # mkstemp creates the file securely with a unique name; writers overwrite it.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with write_errors(path):
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"atomic_path: nothing was written to the temporary file for {path}")
            if fsync:
                _fsync_path(tmp)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
    except BaseException:
        # BaseException on purpose: Ctrl-C (KeyboardInterrupt) must not leave temp files.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically. Returns ``Path(path)``."""
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically. Returns ``Path(path)``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, fsync: bool = True,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Serialise ``obj`` as JSON (UTF-8, trailing newline) and write it atomically.

    The object is serialised before anything touches the disk, so an
    unserialisable object raises ``TypeError`` and leaves ``path`` untouched.
    ``default`` is ``json.dumps``'s hook for other objects (e.g. ``str``).
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n"
    return atomic_write_text(path, text, fsync=fsync)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; rename it onto ``path`` on success.

    Fill the yielded directory, and when the block exits normally it replaces
    ``path`` (an existing ``path`` is moved aside first and deleted after the
    swap, so readers never see a half-filled folder; the swap itself is two
    renames). On any exception, including ``KeyboardInterrupt``, the temporary
    directory is deleted and ``path`` is untouched.

    Args:
        path: final directory.
        overwrite: replace an existing non-empty ``path``; otherwise
            ``FileExistsError`` is raised before anything is written.
    Raises:
        UserError: the folder cannot be written (see :func:`write_errors`).
    """
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not empty")
    ensure_dir(path.parent)
    with write_errors(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with write_errors(path):
            yield tmp
            os.chmod(tmp, DIR_MODE)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")  # move aside (rename into a fresh dir: never clobbers)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
