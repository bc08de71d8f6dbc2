"""Per-process caches of the video reader: frame counts, seek indexes and whole decoded videos.

Everything lives in one ``VideoCache``; the reader uses the module's instance ``CACHE``, shared by the
threads of a process (DataLoader workers are processes, each with its own). Keys: a *file key* is
``(path, mtime_ns, size)``, so a rewritten file misses; decoded videos are keyed by
``(*file key, short_side)``.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

CACHE_BYTES = 512 * 2**20  # default per-process budget for fully decoded videos (VideoCache.budget_bytes)
CACHE_SHARE = 4  # a video is cached whole only if its decoded frames take <= budget_bytes / CACHE_SHARE
SEEK_INDEXES = 4096  # how many per-video seek indexes to keep (a few KiB each)
MISSES_KEPT = 4096  # how many recent cache misses `admit` remembers

FileKey = tuple[str, int, int]  # (path, mtime_ns, size)


class VideoCache:
    """Frame counts (file key -> int), seek indexes (file key -> `decode.SeekIndex`: sorted frame
    timestamps, seek points, whether landings are exact; or None when frames cannot be told apart), and
    decoded videos ((*file key, short_side) -> uint8 (N, H, W, 3)) kept in LRU order within
    `budget_bytes`.

    `budget_bytes` is read at every call: set it to change the budget; 0 disables caching of decoded
    videos (counts and seek indexes are still kept). Frame counts are read and written without the
    lock (a single dict operation is atomic under the GIL); everything else takes it.
    """

    def __init__(self, budget_bytes: int = CACHE_BYTES):
        self.budget_bytes = budget_bytes
        self.lengths: dict[FileKey, int] = {}
        self.seek_indexes: OrderedDict[FileKey, object] = OrderedDict()  # decode.SeekIndex or None
        self.frames: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.frames_bytes = 0  # sum of the nbytes of `frames`
        self.misses: OrderedDict[tuple, int] = OrderedDict()  # decoded-video key -> clock of its last miss
        self.clock = 0  # decode calls so far (`tick`)
        self._lock = threading.Lock()
        _INSTANCES.add(self)

    # ------------------------------------------------------------------------------- frame counts

    def length(self, key: FileKey, default: int | None = None) -> int | None:
        return self.lengths.get(key, default)

    def store_length(self, key: FileKey, n: int) -> None:
        self.lengths[key] = n

    # ------------------------------------------------------------------------------- seek indexes

    def get_seek_index(self, key: FileKey) -> tuple[bool, object]:
        """(known, seek index): a stored index may itself be None (the video's frames cannot be told apart)."""
        with self._lock:
            if key in self.seek_indexes:
                self.seek_indexes.move_to_end(key)
                return True, self.seek_indexes[key]
        return False, None

    def store_seek_index(self, key: FileKey, index: object) -> None:
        with self._lock:
            self.seek_indexes[key] = index
            while len(self.seek_indexes) > SEEK_INDEXES:
                self.seek_indexes.popitem(last=False)

    # ------------------------------------------------------------------------------ decoded videos

    def tick(self) -> None:
        """Count one decode call (the clock `admit` measures recency with)."""
        self.clock += 1

    def get_frames(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            arr = self.frames.get(key)
            if arr is not None:
                self.frames.move_to_end(key)
            return arr

    def admit(self, key: tuple, nbytes: int) -> bool:
        """Decode this video whole and cache it?

        Yes if it fits the free budget, or if it would have been a cache hit: its last miss was fewer
        calls ago than the number of videos this size the budget holds. So a small set of videos is
        cached at once, while a large dataset visited once per epoch does not thrash the cache with full
        decodes (a partial decode is several times cheaper)."""
        budget = self.budget_bytes
        if nbytes <= 0 or nbytes > budget // CACHE_SHARE:
            return False
        with self._lock:
            last = self.misses.get(key)
            self.misses[key] = self.clock
            self.misses.move_to_end(key)
            while len(self.misses) > MISSES_KEPT:
                self.misses.popitem(last=False)
            if nbytes <= budget - self.frames_bytes:
                return True
            return last is not None and self.clock - last <= budget // nbytes

    def store_frames(self, key: tuple, arr: np.ndarray) -> None:
        """Keep `arr` (the caller must not modify it), evicting the least recently used beyond the budget."""
        with self._lock:
            if key in self.frames:
                self.frames_bytes -= self.frames.pop(key).nbytes
            self.frames[key] = arr
            self.frames_bytes += arr.nbytes
            while self.frames_bytes > self.budget_bytes and len(self.frames) > 1:
                self.frames_bytes -= self.frames.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        """Forget every count, seek index and decoded video, and restart the clock."""
        with self._lock:
            self.lengths.clear()
            self.seek_indexes.clear()
            self.frames.clear()
            self.misses.clear()
            self.frames_bytes = self.clock = 0


_INSTANCES: weakref.WeakSet[VideoCache] = weakref.WeakSet()


def _reset_locks() -> None:  # a lock held by another thread at fork time would stay held in the child
    for cache in list(_INSTANCES):
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks)

CACHE = VideoCache()  # the one the reader uses


def clear_caches() -> None:
    """Forget every cached length, seek index and decoded video of this process."""
    CACHE.clear()
