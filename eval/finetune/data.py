"""Labelled clips for fine-tuning: which frames of which video, VideoMAE's training augmentation, and
batches for a given range of steps (so a resumed run continues where it stopped).

Training entries: the labels task draws a fresh random window of every video in every epoch (VideoMAE's
sampling); motion tasks (arrow of time, speed) use their fixed examples (eval/tasks.py), whose frame
order carries the label. Each loaded video gives `repeated_aug` independently augmented clips.

Augmentation of one clip, the same for every frame: timm RandAugment, a random resized crop (scale
min_crop_scale-1, VideoMAE's 0.08-1 by default; aspect 3/4-4/3), horizontal flip, normalisation, then timm random erasing with one
box through all frames. Randomness comes from a seed per (run seed, epoch, position, repeat), so a
sample is the same whichever worker makes it.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from smile_synth.video import BadVideo, VideoItem, decode_frames, video_length
from training.natural import sample_indices
from training.targets import normalize, to_unit_video

from ..features import video_examples
from .recipe import CROP_RATIO, TRAIN_SHORT_SIDE, StepBatches  # noqa: F401 - StepBatches: imported from here too

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One training example: a video, its label, and fixed frame indices (None: a random window)."""
    item: int
    label: int
    frames: tuple[int, ...] | None = None


def train_entries(items: list[VideoItem], task: str, frames: int, stride: int, windows: int
                  ) -> tuple[list[Entry], dict[str, str]]:
    """The training examples of `items` for `task`, and the videos skipped (path -> why)."""
    entries, skipped = [], {}
    for i, item in enumerate(items):
        try:
            examples = video_examples(task, i, item, frames, stride, windows, 1)   # BadVideo when too short
            if task == "labels":
                entries.append(Entry(i, int(item.label)))
                continue
            entries += [Entry(i, e.label, tuple(int(f) for f in e.clips[0])) for e in examples]
        except BadVideo as e:
            skipped[str(item.path)] = str(e)
            log.warning("skipped %s", e)
    return entries, skipped


def same_for_every_frame(transform, frames: np.ndarray) -> np.ndarray:
    """Apply a random PIL transform (timm RandAugment) to uint8 (T, H, W, 3) frames with the same random
    draws for every frame: Python's and numpy's generators are rewound before each frame."""
    state, np_state = random.getstate(), np.random.get_state()
    out = np.empty_like(frames)
    for t, f in enumerate(frames):
        random.setstate(state)
        np.random.set_state(np_state)
        out[t] = np.asarray(transform(Image.fromarray(f)))
    return out


class ClipAugment:
    """uint8 (T, H, W, 3) frames -> float32 (3, T, size, size) normalized training clip."""

    def __init__(self, size: int, rand_augment: str | None, flip: bool, reprob: float, min_crop_scale: float = 0.08):
        from timm.data.auto_augment import rand_augment_transform
        from timm.data.random_erasing import RandomErasing

        self.size, self.flip, self.crop_scale = size, flip, (min_crop_scale, 1.0)
        # timm's ImageNet values; translation relative to the decoded frames RandAugment sees (before the crop)
        hparams = {"translate_const": int(size * TRAIN_SHORT_SIDE * 0.45), "img_mean": (124, 116, 104)}
        self.rand_augment = rand_augment_transform(rand_augment, hparams) if rand_augment else None
        self.erase = RandomErasing(reprob, mode="pixel", max_count=1, device="cpu") if reprob > 0 else None

    def __call__(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        from timm.data.transforms import RandomResizedCropAndInterpolation

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)                      # random erasing's noise
        try:
            if self.rand_augment is not None:
                frames = same_for_every_frame(self.rand_augment, frames)
            first = torch.from_numpy(frames[0]).permute(2, 0, 1)                 # (3, H, W), a view
            i, j, h, w = RandomResizedCropAndInterpolation.get_params(first, self.crop_scale, CROP_RATIO)
            crop = frames[:, i:i + h, j:j + w]
            if self.flip and random.random() < 0.5:
                crop = crop[:, :, ::-1]
            clip = np.stack([cv2.resize(np.ascontiguousarray(f), (self.size, self.size), interpolation=cv2.INTER_LINEAR)
                             for f in crop])                                     # (T, S, S, 3)
            video = normalize(to_unit_video(torch.from_numpy(clip)[None]))[0]   # (3, T, S, S)
            if self.erase is not None:                                           # one box through all frames
                T = video.shape[1]
                video = self.erase(video.reshape(3 * T, self.size, self.size)).reshape(3, T, self.size, self.size)
            return video
        finally:
            torch.random.set_rng_state(torch_state)


class TrainClips(torch.utils.data.Dataset):
    """dataset[(epoch, position, entry index)] -> (clips float32 (R, 3, T, S, S), label) or None when
    the video cannot be read (counted by the collate function, never fatal)."""

    def __init__(self, items: list[VideoItem], entries: list[Entry], frames: int, stride: int, size: int,
                 augment: ClipAugment, repeats: int, seed: int):
        self.items, self.entries = items, entries
        self.frames, self.stride, self.size = frames, stride, size
        self.augment, self.repeats, self.seed = augment, repeats, seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, position, index = key
        entry = self.entries[index]
        item = self.items[entry.item]
        seed = ((self.seed * 1_000_003 + epoch) * 1_000_003 + position) % 2**62
        try:
            if entry.frames is None:
                idx = sample_indices(video_length(item.path), self.frames, self.stride, np.random.default_rng(seed))
            else:
                idx = np.asarray(entry.frames)
            frames = decode_frames(Path(item.path), idx, short_side=math.ceil(self.size * TRAIN_SHORT_SIDE))
            # one seed per (seed, epoch, position, repeat): seed + r would be position + 1's repeat r - 1
            clips = torch.stack([self.augment(frames, (seed * 1_000_003 + r) % 2**62) for r in range(self.repeats)])
        except BadVideo as e:
            return {"error": str(e), "path": str(item.path)}
        except Exception as e:  # noqa: BLE001 - anything a broken file provokes: skip and count it
            return {"error": f"{item.path}: {type(e).__name__}: {e}", "path": str(item.path)}
        return {"clips": clips, "label": entry.label}


def collate(samples: list[dict]) -> dict:
    """{"video": (B*R, 3, T, S, S), "label": (B*R,), "videos": good count, "bad": count, "bad_paths": [...]};
    bad samples dropped."""
    good = [s for s in samples if "clips" in s]
    bad = [s for s in samples if "clips" not in s]
    for s in bad:
        log.warning("skipped %s", s["error"])
    if not good:
        return {"video": None, "label": None, "videos": 0, "bad": len(bad), "bad_paths": [s["path"] for s in bad]}
    video = torch.cat([s["clips"] for s in good])
    label = torch.tensor([s["label"] for s in good for _ in range(len(s["clips"]))], dtype=torch.long)
    return {"video": video, "label": label, "videos": len(good), "bad": len(bad), "bad_paths": [s["path"] for s in bad]}
