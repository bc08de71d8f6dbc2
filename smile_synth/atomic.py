"""Whole files or none: write to a temporary name, then rename over the target."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError


TMP = ".tmp"   # `replacing` writes .NAME.tmpPID beside NAME


def temporaries_of(path: str | Path) -> list[Path]:
    """The temporary files `replacing` left beside `path` (any writer's)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}{TMP}*"))


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write the file there. On success it replaces `path`
    (one rename, so a file that exists is complete); on failure it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
