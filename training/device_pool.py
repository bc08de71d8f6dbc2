"""Clips held and drawn on the training device: the GPU study's data (eval/gpu_study.py).

Planning a clip in Python costs about a millisecond a core, so a run fed at 10^5 clips/s cannot plan
each presentation. A run draws a POOL once instead: clips 0..P-1 of its (recipe, seed), exactly
render_clip's clips (generators.plan), planned by a process pool, stacked and uploaded once
(BatchPlan.to). Every step samples B pool rows uniformly, with replacement, from a host rng of (seed,
step), so a batch is a pure function of its step as BatchStream's are, and paints them on the device
(generators.torch_render). Each clip is then seen about presentations / P times, with fresh masks
each time, like the epochs over a fixed dataset.

Natural clips are held on the device as uint8 frames, end to end; each presentation takes a random
window (VideoMAE sampling) and a multi-scale crop there (one grid_sample), and the objects of a row
of an overlay pool on top.

Batches are BatchStream's dicts: video uint8 (B, T, S, S, 3) and coverage float32 (B, N) on the device.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import count
from multiprocessing import get_context

import numpy as np
import torch
import torch.nn.functional as F

from generators.recipes import Recipe
from generators.torch_render import BatchPlan, concat_plans, plan_batch, plan_overlay_batch, rasterise

from .masking import object_token_coverage
from .crop_scales import CROP_SCALES, MAX_DISTORT

CHUNK = 512          # plans per process-pool task: a few MB to send back, many tasks to spread
ROWS_SALT = 11       # the host rng's stream of a step's pool rows
NATURAL_SALT = 12    # ... of its natural windows and crops
OBJECTS_SALT = 13    # ... of the overlay rows put on its natural clips


@dataclass(frozen=True)
class PoolSpec:
    """Clips 0..clips-1 of (recipe, seed) at frames x size px; overlay: their objects only
    (plan_overlay), to paint onto given frames."""
    recipe: Recipe
    seed: int
    clips: int
    frames: int
    size: int
    overlay: bool = False


def draw_chunk(spec: PoolSpec, start: int, stop: int) -> BatchPlan:
    """The stacked plans of clips start..stop-1 of `spec` (numpy; what a pool worker returns)."""
    draw = plan_overlay_batch if spec.overlay else plan_batch
    return draw(spec.recipe, spec.seed, range(start, stop), spec.frames, spec.size)


def draw_pools(specs: Sequence[PoolSpec], workers: int) -> list[BatchPlan]:
    """Every spec's pool as one numpy BatchPlan, planned in CHUNK-clip tasks by `workers` processes
    (0 or 1: in this process). All specs share the workers, so every core plans until the last chunk."""
    jobs = [(k, a, min(a + CHUNK, s.clips)) for k, s in enumerate(specs) for a in range(0, s.clips, CHUNK)]
    args = ([specs[k] for k, _, _ in jobs], [a for _, a, _ in jobs], [b for _, _, b in jobs])
    if workers <= 1:
        parts = list(map(draw_chunk, *args))
    else:   # forked, as DataLoader workers are: planning is numpy and OpenCV, it never touches CUDA
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            parts = list(pool.map(draw_chunk, *args))
    return [concat_plans([p for (k, _, _), p in zip(jobs, parts) if k == i]) for i in range(len(specs))]


def step_rng(seed: int, step: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, salt])


def as_batch(step: int, video: torch.Tensor, objects: torch.Tensor | None, tubelet: int, patch: int) -> dict:
    """BatchStream's batch dict of clips painted on the device: video uint8 (B, T, S, S, 3), objects
    bool (B, T, S, S) -> coverage float32 (B, N); objects None (clips without objects: tube masks) ->
    coverage None."""
    coverage = None if objects is None else object_token_coverage(objects, tubelet, patch)
    return {"video": video, "coverage": coverage, "bad": 0, "step": step, "error": None}


class PoolBatches:
    """Endless batches of `batch_size` rows of a device-resident pool (BatchPlan.to(device)), steps
    start, start + 1, ..."""

    def __init__(self, pool: BatchPlan, batch_size: int, tubelet: int, patch: int, seed: int, start: int = 0):
        self.pool, self.batch_size, self.tubelet, self.patch = pool, batch_size, tubelet, patch
        self.seed, self.start, self.device = seed, start, pool.sprites.device

    def batch(self, step: int) -> dict:
        rows = step_rng(self.seed, step, ROWS_SALT).integers(0, len(self.pool.counts), self.batch_size)
        out = rasterise(self.pool.take(rows), self.device)
        return as_batch(step, out.video, out.objects(), self.tubelet, self.patch)

    def __iter__(self) -> Iterator[dict]:
        return (self.batch(step) for step in count(self.start))


# ---- natural clips on the device ----------------------------------------------------------------

def window_starts(lengths: np.ndarray, frames: int, stride: int, rng: np.random.Generator, n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random windows over videos of `lengths` (each >= frames), as training.natural.sample_indices:
    a video with probability proportional to its length, its stride lowered to fit (length // frames),
    a start uniform over the positions that fit. -> (video int64 (n,), start int64 (n,), stride int64 (n,))."""
    video = rng.choice(len(lengths), size=n, p=lengths / lengths.sum())
    rate = np.clip(lengths[video] // frames, 1, stride)
    last = lengths[video] - ((frames - 1) * rate + 1)                      # the last start that fits
    start = np.floor(rng.random(n) * (last + 1)).astype(np.int64)
    return video, start, rate


def crop_grids(n: int, source: int, size: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """n multi-scale crops of square source frames (source px a side) resized to size px, as
    training.natural.multi_scale_crop (sides from crop_scales.CROP_SCALES, their scale indices at most MAX_DISTORT
    apart, offsets uniform): float32 (n, size, size, 2) grid_sample coordinates (align_corners=False)."""
    i = rng.integers(0, len(CROP_SCALES), n)
    j = np.clip(i + rng.integers(-MAX_DISTORT, MAX_DISTORT + 1, n), 0, len(CROP_SCALES) - 1)
    side = np.maximum(1, (source * np.asarray(CROP_SCALES)[np.stack([j, i], 1)]).astype(np.int64))  # (n, 2) w, h
    corner = np.floor(rng.random((n, 2)) * (source - side + 1))                                     # (n, 2) x, y
    centres = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size                 # (size,)
    lo = torch.as_tensor(corner, dtype=torch.float32, device=device)
    span = torch.as_tensor(side, dtype=torch.float32, device=device)
    xy = (lo[:, None, :] + centres[None, :, None] * span[:, None, :]) * (2.0 / source) - 1       # (n, size, 2)
    return torch.stack([xy[:, None, :, 0].expand(n, size, size), xy[:, :, None, 1].expand(n, size, size)], -1)


class NaturalBatches:
    """Endless batches of natural clips held on the device, with a device-resident overlay pool's objects
    on top (or none: plain clips, tube masks). videos: uint8 (T_i, S0, S0, 3) each, T_i >= frames."""

    def __init__(self, videos: Sequence[np.ndarray], overlay: BatchPlan | None, batch_size: int, frames: int,
                 size: int, stride: int, tubelet: int, patch: int, seed: int, device: torch.device, start: int = 0):
        usable = [v for v in videos if len(v) >= frames]
        if not usable:
            raise ValueError(f"no natural video has {frames} frames")
        self.lengths = np.array([len(v) for v in usable], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.frames_held = torch.cat([torch.from_numpy(np.ascontiguousarray(v)) for v in usable]).to(device)
        self.source = usable[0].shape[1]
        self.overlay, self.batch_size, self.frames, self.size, self.stride = overlay, batch_size, frames, size, stride
        self.tubelet, self.patch, self.seed, self.device, self.start = tubelet, patch, seed, device, start

    def clips(self, step: int) -> torch.Tensor:
        """The step's clips: uint8 (B, T, S, S, 3), each a random window and crop of a held video."""
        rng, B, T, S = step_rng(self.seed, step, NATURAL_SALT), self.batch_size, self.frames, self.size
        video, start, rate = window_starts(self.lengths, T, self.stride, rng, B)
        index = self.offsets[video, None] + start[:, None] + rate[:, None] * np.arange(T)        # (B, T)
        x = self.frames_held[torch.as_tensor(index, device=self.device)]                      # (B, T, S0, S0, 3)
        x = x.permute(0, 1, 4, 2, 3).reshape(B, T * 3, self.source, self.source).float()
        grid = crop_grids(B, self.source, S, rng, self.device)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8).view(B, T, 3, S, S).permute(0, 1, 3, 4, 2).contiguous()

    def batch(self, step: int) -> dict:
        clips = self.clips(step)
        if self.overlay is None:
            return as_batch(step, clips, None, self.tubelet, self.patch)
        rows = step_rng(self.seed, step, OBJECTS_SALT).integers(0, len(self.overlay.counts), self.batch_size)
        out = rasterise(self.overlay.take(rows), self.device, clips)
        return as_batch(step, out.video, out.objects(), self.tubelet, self.patch)

    def __iter__(self) -> Iterator[dict]:
        return (self.batch(step) for step in count(self.start))
