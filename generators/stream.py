"""ClipStream: fresh clips rendered on the fly, never touching disk, for the trainer.

clip(i) is clip i of (recipe, seed), the pure function render_clip defines; the one place clips are
rendered by index (the trainer's RenderSource asks it for clip g). Iterated, global clip indices
start, start+1, ... are dealt round-robin over (rank, DataLoader worker) pairs, so every index is
rendered exactly once across all of them.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from smile_synth.clip import Clip, check_geometry

from .flow import check_annotations
from .recipes import Recipe, get_recipe
from .render import prepare, render_clip


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ClipStream(IterableDataset):
    """Iterable of Clips (or `transform(clip)`), worker- and rank-aware.

    recipe: name, file or Recipe. length: total clips over all ranks and workers (None = endless).
    With a DataLoader, give a `transform` that turns a Clip into tensors (objects per clip vary,
    so Clips themselves do not collate) or use batch_size=None. annotations: names from
    generators.flow.ANNOTATIONS that every clip carries (render_clip's).
    """

    def __init__(self, recipe: str | Recipe, seed: int = 0, frames: int = 16, size: int = 224, start: int = 0,
                 length: int | None = None, transform: Callable[[Any], Any] | None = None,
                 rank: int | None = None, world_size: int | None = None, annotations: tuple[str, ...] = ()):
        check_geometry(frames, size)
        self.annotations = check_annotations(annotations)
        self.recipe = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
        self.seed, self.frames, self.size = seed, frames, size
        self.start, self.length, self.transform = start, length, transform
        self.rank, self.world_size = rank, world_size
        prepare(self.recipe, seed, size)  # bad folders fail here; forked DataLoader workers share the banks

    def clip(self, i: int) -> Clip:
        """Clip i: render_clip(recipe, seed, i, frames, size, annotations)."""
        return render_clip(self.recipe, self.seed, i, self.frames, self.size, annotations=self.annotations)

    def indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """Clip indices this (rank, worker) renders."""
        rank, world = _rank_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        i = self.start + rank * num_workers + worker
        step = world * num_workers
        end = None if self.length is None else self.start + self.length
        while end is None or i < end:
            yield i
            i += step

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        prepare(self.recipe, self.seed, self.size)  # no-op where the banks came with the fork
        for i in self.indices(worker, num_workers):
            clip = self.clip(i)
            yield self.transform(clip) if self.transform else clip
