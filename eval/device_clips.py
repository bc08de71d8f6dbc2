"""Evaluation clips held on the device: frames uploaded once, examples as frame-index tensors, and the
fine-tuning augmentation (random resized crop, flip) for a whole batch in one grid_sample.

A FrameStore holds the frames of several videos in one uint8 tensor, each video top-left in a canvas of
the largest height and width; an example's clips are indices into it, so a batch is one gather. The
crop follows eval/finetune/data.py's ClipAugment (timm's RandomResizedCrop parameters, the same box for
every frame of a clip, cv2.INTER_LINEAR's pixel-centre mapping) without RandAugment or erasing, which
the study does not use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .tasks import span, task_examples

ATTEMPTS = 10    # timm's RandomResizedCrop tries this many boxes before falling back to the centre


@dataclass
class FrameStore:
    """Several videos' frames on one device."""
    frames: torch.Tensor        # uint8 (F, H, W, 3): video v's frames are [starts[v], starts[v] + lengths[v])
    hw: torch.Tensor            # int64 (V, 2): each video's own height and width (its top-left corner)
    starts: np.ndarray          # int64 (V,)
    lengths: np.ndarray         # int64 (V,)


def frame_store(videos: list[np.ndarray], device: torch.device) -> FrameStore:
    """Upload uint8 (T_v, h_v, w_v, 3) videos once, padded to the largest h and w."""
    H, W = max(v.shape[1] for v in videos), max(v.shape[2] for v in videos)
    lengths = np.array([len(v) for v in videos], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    canvas = np.zeros((int(lengths.sum()), H, W, 3), np.uint8)
    for s, v in zip(starts, videos):
        canvas[s:s + len(v), :v.shape[1], :v.shape[2]] = v
    hw = torch.tensor([v.shape[1:3] for v in videos], dtype=torch.int64, device=device)
    return FrameStore(torch.from_numpy(canvas).to(device), hw, starts, lengths)


@dataclass
class Examples:
    """Examples of a task over a store's videos (host arrays; `on` gives their device indices)."""
    videos: np.ndarray          # int64 (N,) video of each example
    labels: np.ndarray          # int64 (N,)
    clips: np.ndarray           # int64 (N, P, T) frame numbers within the video: P clips of each example

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> Examples:
        return Examples(self.videos[keep], self.labels[keep], self.clips[keep])

    def on(self, store: FrameStore) -> torch.Tensor:
        """int64 (N, P, T) indices of the clips' frames in `store`, on its device."""
        return torch.as_tensor(store.starts[self.videos][:, None, None] + self.clips, device=store.frames.device)


def task_example_set(task: str, lengths: np.ndarray, labels: np.ndarray | None, frames: int, stride: int,
                     windows: int, n_clips: int) -> Examples:
    """eval/tasks.py's examples of every video (lengths (V,), labels (V,) or None), stacked: the labels task
    gives one example of `n_clips` clips per video, the motion tasks `windows` x labels of one clip."""
    videos, out_labels, clips = [], [], []
    for v, n in enumerate(lengths):
        for e in task_examples(task, v, int(n), None if labels is None else int(labels[v]), frames, stride,
                               windows, n_clips):
            videos.append(v)
            out_labels.append(e.label)
            clips.append(np.stack(e.clips))
    if len({c.shape for c in clips}) > 1:      # a labels-task video too short for n_clips distinct windows
        P = max(len(c) for c in clips)
        clips = [np.resize(c, (P, c.shape[1])) for c in clips]
    return Examples(np.array(videos, np.int64), np.array(out_labels, np.int64), np.stack(clips).astype(np.int64))


def window_choices(lengths: np.ndarray, labels: np.ndarray, frames: int, stride: int) -> Examples:
    """One example per video whose P clips are every window a random draw can give (training.natural's
    sample_indices: stride dropped to length // frames for short videos, start uniform), so drawing one
    of the P per presentation is the CPU fine-tuning's fresh random window. Videos with fewer windows
    repeat theirs cyclically up to the longest's count."""
    choices = []
    for n in lengths:
        rate = stride if frames * stride <= n else max(1, int(n) // frames)
        starts = np.arange(int(n) - span(frames, rate) + 1)
        choices.append(starts[:, None] + rate * np.arange(frames))
    P = max(len(c) for c in choices)
    clips = np.stack([np.resize(c, (P, frames)) for c in choices]).astype(np.int64)
    return Examples(np.arange(len(lengths), dtype=np.int64), np.asarray(labels, np.int64), clips)


def random_boxes(hw: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """float (N, 4) crop boxes (top, left, height, width) px for frames of int (N, 2) sizes: timm's
    RandomResizedCrop.get_params for every row at once (ATTEMPTS draws of area share in `scale` and
    log-uniform aspect in `ratio`, the first that fits; else the whole frame clamped to `ratio`, centred)."""
    N, dev = len(hw), hw.device
    H, W = hw[:, :1].double(), hw[:, 1:].double()                               # (N, 1)

    def uniform(low: float, high: float, shape) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)

    area = H * W * uniform(*scale, (N, ATTEMPTS))
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), (N, ATTEMPTS)))
    w, h = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (h > 0) & (w <= W) & (h <= H)
    first = fits.to(torch.int64).argmax(1, keepdim=True)                        # the first box that fits
    found = fits.any(1)
    H, W = H[:, 0], W[:, 0]
    wide, tall = W / H > ratio[1], W / H < ratio[0]
    fallback_w = torch.where(wide, torch.round(H * ratio[1]), W)
    fallback_h = torch.where(tall, torch.round(W / ratio[0]), H)
    w = torch.where(found, w.gather(1, first)[:, 0], fallback_w)
    h = torch.where(found, h.gather(1, first)[:, 0], fallback_h)
    top = torch.where(found, torch.floor(uniform(0, 1, (N,)) * (H - h + 1)), torch.div(H - h, 2, rounding_mode="floor"))
    left = torch.where(found, torch.floor(uniform(0, 1, (N,)) * (W - w + 1)), torch.div(W - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], 1).float()


def crop_clips(frames: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor,
               size: int) -> torch.Tensor:
    """Crop and resize clips in one bilinear grid_sample: frames uint8 (F, H, W, 3), index int64 (N, T)
    into them, boxes float (N, 4) (top, left, h, w) px, flip bool (N,) -> float32 (N, 3, T, size, size)
    in [0, 1]. Output pixel u samples the box at x = left + (u + 0.5) w / size - 0.5, as cv2.resize."""
    N, T = index.shape
    H, W = frames.shape[1:3]
    video = frames[index.reshape(-1)].permute(0, 3, 1, 2).float()              # (N*T, 3, H, W)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(N, 2, 3, device=frames.device)
    theta[:, 0, 0] = torch.where(flip, -w / W, w / W)                          # a flip mirrors about the box centre
    theta[:, 0, 2] = (2 * left + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * top + h) / H - 1
    grid = F.affine_grid(theta, [N, 3, size, size], align_corners=False).repeat_interleave(T, 0)
    out = F.grid_sample(video, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(N, T, 3, size, size).transpose(1, 2).div_(255)
