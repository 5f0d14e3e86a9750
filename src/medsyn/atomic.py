"""The one way medsyn writes a file or a folder: into a temporary name beside it, then an atomic rename.

A crash, Ctrl-C, SIGTERM, a full disk or a read-only folder therefore leaves either the previous
complete file (or nothing) or the new complete one, never half of either. Temporary names are
removed on every exception; only a process killed outright (SIGKILL, an unhandled SIGTERM outside
training, power loss) can leave a hidden ``.NAME.tmp-PID`` behind. An ``OSError`` while writing becomes a ``WriteError`` that names the path and the problem,
which the command line prints as one line with exit status 2.

Every writer in medsyn goes through ``atomic_file`` (or the helpers built on it) and, for whole
folders (a sample set, a refined set), ``atomic_dir``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from medsyn.errors import WriteError

_HINTS = {
    errno.ENOSPC: "the disk is full; free space or choose another --out",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another --out",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another --out",
}


def describe_os_error(err: OSError) -> str:
    """A short reason for a failed write, with what to do next when it is a common one."""
    return _HINTS.get(err.errno or -1, err.strerror or type(err).__name__)


def _temporary_name(path: Path, suffix: str = "") -> Path:
    # Hidden, beside the target (same file system, so the rename is atomic), unique per process.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_file(path: str | Path, sync: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    Args:
        path: the file to (re)place. Its folder is created when missing.
        sync: fsync the file before the rename (checkpoints: the rename must not outrun the data).
        suffix: added to the temporary name, for writers that pick a format by extension (".png").

    Raises:
        WriteError: the file could not be written (disk full, permission, read-only, ...). The
            temporary file is removed and any previous ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _temporary_name(path, suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if sync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, describe_os_error(err)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, sync: bool = False) -> Path:
    with atomic_file(path, sync=sync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """UTF-8 whatever the locale (reports hold Δ and –), and no newline translation: the bytes are ``text``'s."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, default: Callable | None = None) -> Path:
    """JSON text (NaN allowed: results may hold undefined statistics), written atomically."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=True, default=default))


def write_with(path: str | Path, writer: Callable[[Path], Any], sync: bool = False, suffix: str = "") -> Path:
    """``writer(tmp_path)`` writes the file (torch.save, np.save, PIL ...); it appears at ``path`` whole."""
    with atomic_file(path, sync=sync, suffix=suffix) as tmp:
        writer(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(out: str | Path, replace_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it becomes ``out`` only if the block succeeds.

    Args:
        out: the folder to create. An empty folder is replaced; a non-empty one only with
            ``replace_existing`` (the caller checked earlier that it may be).

    Raises:
        WriteError: the folder could not be written; nothing is left behind. A failure of a file
            inside names that file under ``out``, not under the temporary folder the user never sees.
    """
    out = Path(out)
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _make_temporary_dir(out)
        yield tmp
        _put_in_place(tmp, out, replace_existing)
        tmp = None
    except OSError as err:
        raise WriteError(out, describe_os_error(err)) from None
    except WriteError as err:
        inner = _relative_to(Path(err.path), tmp)
        if inner is None:
            raise
        raise WriteError(out / inner, err.problem) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _make_temporary_dir(out: Path) -> Path:
    # Not tempfile.mkdtemp: its 0700 mode would become the mode of ``out``, hiding a sample set from
    # the rest of a lab; mkdir applies the umask as for any folder the user makes.
    while True:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def _put_in_place(tmp: Path, out: Path, replace_existing: bool) -> None:
    if not out.exists() and not out.is_symlink():
        os.replace(tmp, out)
        return
    if not out.is_dir() or out.is_symlink() or (any(out.iterdir()) and not replace_existing):
        raise WriteError(out, "already exists; choose another --out or remove it")
    # The old folder moves aside whole before the new one takes its name, so a failure in between
    # leaves one complete folder (it is moved back), never a half-deleted one.
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _relative_to(path: Path, folder: Path | None) -> Path | None:
    if folder is None:
        return None
    try:
        return path.relative_to(folder)
    except ValueError:
        return None
