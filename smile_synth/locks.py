"""Advisory locks on named files in a folder's `.locks/` (flock), so that writers sharing a folder
serialize where they would collide and run side by side where they do not.

A lock is held while its file stays open, and the kernel drops it when the holder exits or dies, so
a lock that can be taken proves that nobody is writing what it guards. Lock files are never deleted
(deleting one while another process waits on it would let two holders in).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_DIR = ".locks"


class FolderLocks:
    """Named locks under `folder/.locks/`. Use as a context manager: every lock still held is released
    on exit. One instance per process and folder; a name is either held by this instance or not."""

    def __init__(self, folder: str | Path):
        self.root = Path(folder) / LOCK_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.held: dict[str, int] = {}   # name -> open fd

    def acquire(self, name: str, shared: bool = False, wait: bool = True) -> bool:
        """Take (or convert) lock `name`; False when wait=False and another process holds it."""
        fd = self.held.get(name)
        if fd is None:
            fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            if name not in self.held:
                os.close(fd)
            return False
        self.held[name] = fd
        return True

    def release(self, name: str) -> None:
        fd = self.held.pop(name, None)
        if fd is not None:
            os.close(fd)   # closing the file drops the lock

    def release_all(self) -> None:
        for name in list(self.held):
            self.release(name)

    def __enter__(self) -> FolderLocks:
        return self

    def __exit__(self, *exc) -> None:
        self.release_all()
