"""Advisory locks on named files in a folder's `.locks/` (flock), so that writers sharing a folder
serialize where they would collide and run side by side where they do not.

A lock is held while its file stays open, and the kernel drops it when the holder exits or dies, so
a lock that can be taken proves that nobody is writing what it guards. Lock files are never deleted
(deleting one while another process waits on it would let two holders in). An exclusive holder writes
who it is (pid, host, command) into the lock file, so a process that finds the lock taken can say which
process holds it.

`run_folder` is the one lock of a training run's folder (`pretrain`, `finetune`): a second run into a
folder in use stops with one line naming the other process.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_DIR = ".locks"
RUN_FOLDER = "run-folder"   # the lock a training run holds on its --out for as long as it runs
COMMAND_CHARS = 200         # the holder's command line, cut to this


def this_process() -> str:
    """Who holds a lock, as the lock file records it: 'pid N on HOST: COMMAND'."""
    command = " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])
    if len(command) > COMMAND_CHARS:
        command = command[:COMMAND_CHARS] + "..."
    return f"pid {os.getpid()} on {socket.gethostname()}: {command}"


class FolderLocks:
    """Named locks under `folder/.locks/`. Use as a context manager: every lock still held is released
    on exit. One instance per process and folder; a name is either held by this instance or not."""

    def __init__(self, folder: str | Path):
        self.root = Path(folder) / LOCK_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.held: dict[str, int] = {}   # name -> open fd

    def acquire(self, name: str, shared: bool = False, wait: bool = True,
                on_wait: Callable[[str], None] | None = None) -> bool:
        """Take (or convert) lock `name`; False when wait=False and another process holds it. When it
        has to wait, `on_wait` (if given) is called first with who holds the lock (see `holder`)."""
        fd = self.held.get(name)
        if fd is None:
            fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                if name not in self.held:
                    os.close(fd)
                return False
            if on_wait is not None:
                on_wait(self.holder(name))
            fcntl.flock(fd, kind)
        self.held[name] = fd
        os.ftruncate(fd, 0)   # the holder's name, for whoever finds the lock taken (of shared holders: the last)
        os.pwrite(fd, this_process().encode(errors="replace"), 0)
        return True

    def holder(self, name: str) -> str:
        """Who holds (or last held exclusively) lock `name`, as its file records it; 'another process'
        when it says nothing (a shared holder, or one that has not written yet)."""
        try:
            text = (self.root / f"{name}.lock").read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text or "another process"

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


@contextmanager
def run_folder(folder: str | Path, command: str, part: str | None = None) -> Iterator[FolderLocks]:
    """Hold `folder`'s run lock while the block runs (a `command` run writing into it); one UserError
    naming the holder when another process has it. With `part` (e.g. "fold-2": the run writes only that
    part of the folder) the folder's lock is held shared and the part's exclusively, so runs of other
    parts go side by side. The kernel drops the locks when this process exits or dies, so a killed run
    never blocks the next."""
    with FolderLocks(folder) as locks:
        wanted = [(RUN_FOLDER, folder, part is not None)]   # (lock, what it guards, shared)
        if part is not None:
            wanted.append((part, Path(folder) / part, False))
        for name, where, shared in wanted:
            if not locks.acquire(name, shared=shared, wait=False):
                raise UserError(f"{where} is in use by another run ({locks.holder(name)}); wait for it to "
                                f"finish, or give this {command} another --out")
        yield locks
