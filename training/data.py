"""Training batches from synthetic shards, on-the-fly rendering, natural videos, or a mix.

Every sample has a global index g; batch `step` of rank r holds g = (step * world + r) * B + j,
j < B. A source maps g to a clip as a pure function of (seed, g), so a run that resumes at step s
sees exactly the batches a straight run would, whatever the number of DataLoader workers.

A source returns Sample(video uint8 (T, H, W, 3), objects bool (T, H, W) or None: the union of the
overlaid objects' pixel masks; with --target flow also the clip's exact flow, which the batch carries
reduced to tokens (training.flow_target). Sources made with on_device=True (`pretrain --render-device`) return
the clip's plan instead of painting it (video None), or a natural clip with the plan of its overlay;
the training process paints those on the device (device_batches.py). A bad sample (unreadable video,
corrupt shard member) is skipped: the source is asked again with attempt + 1, which picks another
item, and the batch counts it.
"""
from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from generators import overlay_clip
from generators.recipes import get_recipe
from generators.plan import ClipPlan, plan_clip, plan_overlay
from generators.render import prepare, render_clip
from generators.stream import ClipStream
from smile_synth.errors import UserError
from smile_synth.shards import (
    DATASET,
    BadShard,
    decode_sample,
    read_json,
    read_sample_at,
    sample_spans,
    shard_paths,
)
from smile_synth.video import BadVideo, VideoItem

from .device_batches import render_job, stack_pixels
from .flow_target import FLOW, annotations_for, batch_token_flow
from .masking import object_token_coverage
from .natural import load_clip, natural_videos

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8          # tries per sample before the batch reports failure
WARN_FIRST = 5            # bad-sample warnings per worker before going quiet


class BadSample(Exception):
    """A sample that cannot be used; the message names it and why."""


@dataclass
class Sample:
    video: np.ndarray | None           # uint8 (T, H, W, 3); None when `plan` is painted on the device
    objects: np.ndarray | None         # bool (T, H, W), None when the clip has no overlaid objects
    plan: ClipPlan | None = None       # a clip (video None) or overlay (onto video) to paint on the device
    flow: np.ndarray | None = None     # float32 (T-1, H, W, 2) px/frame, when the clip was annotated with flow
    flow_valid: np.ndarray | None = None   # bool (T-1, H, W), with flow

    @staticmethod
    def of(clip) -> Sample:
        """A generator Clip's video, the union of its object masks, and its flow if it has one."""
        return Sample(clip.video, clip.masks.any(axis=0) if clip.num_objects else None,
                      flow=clip.flow, flow_valid=clip.flow_valid)


class Source(Protocol):
    num_items: int | None              # items per epoch; None = endless

    def get(self, g: int, attempt: int) -> Sample: ...


def sample_rng(seed: int, g: int, attempt: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, g, attempt, salt])


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def epoch_item(seed: int, g: int, n: int, attempt: int = 0) -> int:
    """Item of global sample g: a fresh permutation of the n items each epoch; retries step past it."""
    epoch, pos = divmod(g, n)
    return int(_permutation(seed, epoch, n)[(pos + attempt * 7919) % n])


def fit_clip(video: np.ndarray, objects: np.ndarray | None, frames: int, size: int,
             rng: np.random.Generator, flow: np.ndarray | None = None, flow_valid: np.ndarray | None = None) -> Sample:
    """A random `frames`-long window, resized to size x size. video (T, H, W, 3), objects (T, H, W); flow
    (T-1, H, W, 2) px/frame and flow_valid (T-1, H, W) or None: windowed alike, resized by nearest pixel
    (no blending across object edges) with the vectors scaled to the new size."""
    T, H, W = video.shape[:3]
    if T < frames:
        raise BadSample(f"clip has {T} frames, need {frames}")
    t0 = int(rng.integers(0, T - frames + 1))
    video = video[t0:t0 + frames]
    objects = None if objects is None else objects[t0:t0 + frames]
    if flow is not None:
        flow, flow_valid = flow[t0:t0 + frames - 1], flow_valid[t0:t0 + frames - 1]
    if (H, W) != (size, size):
        interp = cv2.INTER_AREA if min(H, W) > size else cv2.INTER_LINEAR
        video = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in video])
        if objects is not None:
            objects = resize_nearest(objects.view(np.uint8), size).astype(bool)
        if flow is not None:
            flow = resize_nearest(flow, size) * np.float32([size / W, size / H])
            flow_valid = resize_nearest(flow_valid.view(np.uint8), size).astype(bool)
    return Sample(np.ascontiguousarray(video), objects, flow=flow, flow_valid=flow_valid)


def resize_nearest(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W[, C]) -> (T, size, size[, C]) by nearest pixel (masks, flow: values kept, never blended)."""
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_NEAREST) for f in frames])


# ---- sources ---------------------------------------------------------------------------------

class ShardSource:
    """Clips of a `generate` output folder, random access through an index of tar offsets."""

    def __init__(self, path: str | Path, frames: int, size: int, seed: int = 0, annotations: tuple[str, ...] = ()):
        self.frames, self.clip_size, self.seed = frames, size, seed
        self.annotations = annotations        # kept from the shards' clips (flow), when they have them
        try:
            self.paths = shard_paths(path)
        except FileNotFoundError:
            raise UserError(f"--data {path}: no such shard folder; create one with `smile-synth generate --out {path}`") from None
        if not self.paths:
            raise UserError(f"--data {path} holds no shard-*.tar files; create them with `smile-synth generate --out {path}`")
        meta = Path(path) / DATASET
        if meta.is_file():
            spec = read_json(meta)
            have = spec.get("frames", frames)
            if have < frames:
                raise UserError(f"shards in {path} have {have} frames but the model needs {frames}; "
                                f"regenerate with --frames {frames} or use a preset with fewer frames")
            if spec.get("size", size) < size:
                log.warning("shards in %s are %d px, the model takes %d px: clips are upscaled "
                            "(generate with --size %d for full detail)", path, spec["size"], size, size)
        spans, self.bad_shards = [], []
        for i, p in enumerate(self.paths):
            try:
                spans += [(i, start, end) for _, start, end in sample_spans(p)]
            except BadShard as e:   # truncated, empty or garbage: skipped, named and counted
                self.bad_shards.append(str(e))
                log.warning("skipping unreadable shard %s", e)
        if self.bad_shards:
            log.warning("skipped %d of %d shards in %s; check them with `smile-synth inspect %s`",
                        len(self.bad_shards), len(self.paths), path, path)
        index = np.asarray(spans, np.int64).reshape(-1, 3)    # (shard, start, end) per sample, compact for forks
        self.shard, self.start, self.end = index[:, 0], index[:, 1], index[:, 2]
        self.num_items = len(self.shard)
        if self.num_items == 0:
            why = f" ({len(self.bad_shards)} unreadable, first: {self.bad_shards[0]})" if self.bad_shards else ""
            raise UserError(f"--data {path}: the shards hold no readable samples{why}; "
                            f"check them with `smile-synth inspect {path} --verify`")

    def get(self, g: int, attempt: int) -> Sample:
        i = epoch_item(self.seed, g, self.num_items, attempt)
        path = self.paths[self.shard[i]]
        try:
            clip = decode_sample(read_sample_at(path, int(self.start[i]), int(self.end[i])))
        except (OSError, ValueError, KeyError, tarfile.TarError) as e:
            raise BadSample(f"{path.name} sample {i}: {e}") from None
        s = Sample.of(clip)
        flow = (s.flow, s.flow_valid) if FLOW in self.annotations else (None, None)
        return fit_clip(s.video, s.objects, self.frames, self.clip_size, sample_rng(self.seed, g, attempt, 1), *flow)


class RenderSource:
    """Clips rendered on the fly from a recipe: sample g is clip g of a ClipStream (its banks built
    here, before workers fork), a retry clip g + attempt * 1_000_003. Endless. on_device: the clip's
    plan, painted later on the training device. annotations: generators.flow.ANNOTATIONS the clips carry."""
    num_items = None

    def __init__(self, recipe, frames: int, size: int, seed: int = 0, on_device: bool = False,
                 annotations: tuple[str, ...] = ()):
        self.clips = ClipStream(recipe, seed, frames, size)
        self.on_device, self.annotations = on_device, annotations

    def get(self, g: int, attempt: int) -> Sample:
        i = g + attempt * 1_000_003
        c = self.clips
        if self.on_device:
            return Sample(None, None, plan_clip(c.recipe, c.seed, i, c.frames, c.size))
        if self.annotations:
            return Sample.of(render_clip(c.recipe, c.seed, i, c.frames, c.size, annotations=self.annotations))
        return Sample.of(c.clip(i))


class NaturalSource:
    """Natural video clips (VideoMAE sampling and multi-scale crop), optionally with objects overlaid."""

    def __init__(self, items: list[VideoItem], frames: int, size: int, rate: int = 4, overlay=None,
                 seed: int = 0, short_side: int | None = 320, on_device: bool = False,
                 annotations: tuple[str, ...] = ()):
        self.items, self.frames, self.clip_size, self.rate = items, frames, size, rate
        self.overlay = None if overlay is None else prepare(overlay, seed, size)
        self.seed, self.short_side, self.on_device = seed, short_side, on_device
        self.annotations = annotations           # of the overlaid objects (flow: valid on their pixels only)
        self.num_items = len(items)

    def get(self, g: int, attempt: int) -> Sample:
        item = self.items[epoch_item(self.seed, g, self.num_items, attempt)]
        try:
            video = load_clip(item, self.frames, self.rate, self.clip_size, sample_rng(self.seed, g, attempt, 2),
                              self.short_side)
        except BadVideo as e:
            raise BadSample(str(e)) from None
        if self.overlay is None:
            return Sample(video, None)
        if self.on_device:   # the objects are painted onto the frames on the training device
            return Sample(video, None, plan_overlay(self.overlay, self.seed, g, self.frames, self.clip_size))
        return Sample.of(overlay_clip(video, self.overlay, self.seed, g, annotations=self.annotations))


class MixedSource:
    """Sample g comes from `synthetic` with probability `ratio`, else from `natural`."""

    def __init__(self, synthetic: Source, natural: Source, ratio: float, seed: int = 0):
        self.synthetic, self.natural, self.ratio, self.seed = synthetic, natural, ratio, seed
        both = synthetic.num_items is not None and natural.num_items is not None
        self.num_items = synthetic.num_items + natural.num_items if both else None

    def get(self, g: int, attempt: int) -> Sample:
        pick = sample_rng(self.seed, g, 0, 3).random() < self.ratio
        return (self.synthetic if pick else self.natural).get(g, attempt)


# ---- batches ---------------------------------------------------------------------------------

class BatchStream(IterableDataset):
    """Endless batches for one rank, from `start_step` on; use DataLoader(stream, batch_size=None).

    A batch is {"video": uint8 (B, T, H, W, 3), "coverage": float32 (B, N) or None (no objects in
    any clip), "bad": samples skipped, "step": int, "error": str or None (a sample failed
    MAX_ATTEMPTS times: the trainer stops with this message)}. With samples to paint on the device
    (plans), "video" and "coverage" are None and "render" holds a device_batches.RenderJob. When the
    clips carry flow, "flow" and "flow_weight" hold its per-token means (float32 (B, N, 2 * tubelet)
    each, training.flow_target.batch_token_flow)."""

    def __init__(self, source: Source, batch_size: int, tubelet: int, patch: int, rank: int = 0,
                 world_size: int = 1, start_step: int = 0):
        self.source, self.batch_size = source, batch_size
        self.tubelet, self.patch = tubelet, patch
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.warned = 0

    def batch(self, step: int) -> dict:
        samples, bad = [], 0
        base = (step * self.world_size + self.rank) * self.batch_size
        for g in range(base, base + self.batch_size):
            last = ""
            for attempt in range(MAX_ATTEMPTS):
                try:
                    samples.append(self.source.get(g, attempt))
                    break
                except Exception as e:  # noqa: BLE001 - one bad sample (or a rare generator bug) must not end a long run
                    bad, last = bad + 1, str(e) if isinstance(e, BadSample) else f"{type(e).__name__}: {e} (sample {g})"
                    if self.warned < WARN_FIRST:
                        self.warned += 1
                        log.warning("skipping bad sample: %s%s", last, "" if self.warned < WARN_FIRST else " (further warnings muted)")
            else:
                return {"video": None, "coverage": None, "bad": bad, "step": step,
                        "error": f"{MAX_ATTEMPTS} samples in a row were bad (last: {last}); check the data with "
                                 "`smile-synth inspect` or fix the video list"}
        job = render_job(samples)
        if job is not None:
            return {"video": None, "coverage": None, "render": job, "bad": bad, "step": step, "error": None}
        video, objects = stack_pixels(samples)
        coverage = None if objects is None else object_token_coverage(objects, self.tubelet, self.patch)
        batch = {"video": video, "coverage": coverage, "bad": bad, "step": step, "error": None}
        if any(s.flow is not None for s in samples):
            batch["flow"], batch["flow_weight"] = batch_token_flow(samples, self.tubelet, self.patch)
        return batch

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in count(self.start_step + worker, workers):
            yield self.batch(step)


# ---- assembly --------------------------------------------------------------------------------

def build_source(cfg, s) -> Source:
    """The clip source a run with PretrainConfig `cfg` trains on, at StudentConfig `s`'s frames and size
    (with cfg.render_device: plans of its rendered clips and overlays, painted on that device)."""
    on_device = cfg.render_device is not None
    annotations = annotations_for(cfg.target)    # ground truth the target needs (flow), computed in the workers
    def synthetic(path, recipe):
        if path is not None:
            return ShardSource(path, s.frames, s.size, cfg.seed, annotations)
        return RenderSource(get_recipe(recipe, cfg.recipe_set), s.frames, s.size, cfg.seed, on_device, annotations)

    def natural():
        overlay = None
        if cfg.overlay:
            overlay = get_recipe(cfg.overlay, cfg.recipe_set)
        return NaturalSource(natural_videos(cfg.data), s.frames, s.size, cfg.sampling_rate, overlay, cfg.seed,
                             on_device=on_device, annotations=annotations)

    if cfg.source == "synthetic":
        return synthetic(cfg.data, cfg.synthetic_recipe)
    if cfg.source == "natural":
        return natural()
    return MixedSource(synthetic(cfg.synthetic_data, cfg.synthetic_recipe), natural(), cfg.mix_ratio, cfg.seed)
