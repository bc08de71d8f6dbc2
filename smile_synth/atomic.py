"""Whole files or none: write to a temporary name, then rename over the target.

A full disk (or quota) while writing is one UserError naming the file, the folder and the bytes
needed (`disk_full_error`); the partial temporary file is removed.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError


TMP = ".tmp"   # `replacing` writes .NAME.tmpPID beside NAME
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def temporaries_of(path: str | Path) -> list[Path]:
    """The temporary files `replacing` left beside `path` (any writer's)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}{TMP}*"))


@contextmanager
def replacing(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write the file there. On success it replaces `path`
    (one rename, so a file that exists is complete); on failure it is removed. A full disk is one
    UserError (`disk_full_error`; `size_hint`: about how many bytes the file takes, when known)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        if is_disk_full(e):
            written = file_size(tmp)
            tmp.unlink(missing_ok=True)   # first, so the free space the message gives is what a rerun has
            raise disk_full_error(path, size_hint, written) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def is_disk_full(e: BaseException) -> bool:
    """Whether error `e`, or an error that caused it, says the disk (or quota) is full: an OSError's errno,
    or the text of a native library's error that carries none (safetensors: "... (os error 28)")."""
    while e is not None and not isinstance(e, UserError):
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        if any(f"(os error {code})" in str(e) for code in DISK_FULL):
            return True
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
    return False


def disk_full_error(path: str | Path, needed: int | None = None, written: int | None = None) -> UserError:
    """One line for a write of `path` that ran out of disk: the file, the folder, the bytes it needs
    (`needed`, an estimate; else more than the `written` so far), the bytes free there, and the fix."""
    path = Path(path)
    folder = path.parent
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        free = f"in {folder}"
    need = f"it needs about {_size(needed)}, " if needed else f"it needs more than {_size(written)}, " if written else ""
    return UserError(f"disk full while writing {path} ({need}{free}); free space there or choose another output "
                     "folder, then rerun the same command (finished files are kept)")


def _size(n: int) -> str:
    """Bytes as a person reads them: 512 bytes, 20.8 MB (decimal units, as df -H)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def file_size(path: Path) -> int | None:
    """Bytes in file `path` (e.g. a partial write's so far); None when it is not a readable file."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, someone else's
        return True
    return True


def remove_stale_temporaries(folder: str | Path, pattern: str = "*") -> list[Path]:
    """Remove the temporary files `replacing` left for files matching `pattern` in `folder` when their
    writer (the pid in the name) is no longer alive on this machine. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".{pattern}{TMP}*"):
        pid = tmp.name.rpartition(TMP)[2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """`data` at `path`, written whole or not at all (a full disk is one line naming the bytes needed)."""
    with replacing(path, len(data)) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON at `path`, written whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def ensure_writable_folder(path: str | Path, option: str = "--out") -> Path:
    """Create `path` if needed and prove a file can be written there; else one UserError naming `option`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{option} {path} is not a writable folder ({e.strerror or e}); choose another") from None
    return path
