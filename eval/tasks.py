"""What a probe is asked: which frames of which video make one example, and its label.

An example is one video item, a label and one or more temporal clips (frame-index arrays of length
`frames`); its feature is the mean over those clips x the spatial crops. Tasks:

- ``labels``: the list's class labels; clips are `n_clips` windows spread evenly over the video
  (VideoMAE's test-time sampling).
- ``arrow-of-time``: every window gives two examples, played forward (label 0) and reversed (label 1).
- ``speed``: every window position gives three examples sampled at 1x, 2x and 4x the stride (labels 0,
  1, 2), centred on the same frame so that the three see the same moment.

Motion tasks need no labels, and every window contributes every label, so within one video the
labels are balanced: the scenery of a video says nothing about its examples' labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("labels", "arrow-of-time", "speed")
SPEEDS = (1, 2, 4)
CLASS_NAMES = {"arrow-of-time": ("forward", "reversed"), "speed": tuple(f"{s}x" for s in SPEEDS)}


@dataclass(frozen=True)
class Example:
    item: int                        # index into the video list
    label: int
    clips: tuple[np.ndarray, ...]    # each int64 (frames,) frame indices, in playing order


def span(frames: int, stride: int) -> int:
    """Frames covered by `frames` samples at `stride`."""
    return (frames - 1) * stride + 1


def window_starts(length: int, width: int, n: int) -> np.ndarray:
    """int64 (<= n,) starts of windows of `width` frames spread evenly over [0, length); empty when
    the video is shorter than one window. Fewer than n when the video has fewer distinct positions."""
    last = length - width
    if last < 0:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(0, last, n)).astype(np.int64)) if n > 1 else np.array([last // 2])


def label_examples(item: int, length: int, label: int, frames: int, stride: int, n_clips: int) -> list[Example]:
    """One example of `n_clips` evenly spread clips; the stride drops (to 1) for short videos."""
    while stride > 1 and span(frames, stride) > length:
        stride //= 2
    starts = window_starts(length, span(frames, stride), n_clips)
    if len(starts) == 0:
        return []
    return [Example(item, label, tuple(s + stride * np.arange(frames) for s in starts))]


def arrow_of_time_examples(item: int, length: int, frames: int, stride: int, windows: int) -> list[Example]:
    """For each window: (forward, label 0) and (reversed, label 1)."""
    out = []
    for s in window_starts(length, span(frames, stride), windows):
        forward = s + stride * np.arange(frames)
        out += [Example(item, 0, (forward,)), Example(item, 1, (forward[::-1].copy(),))]
    return out


def speed_examples(item: int, length: int, frames: int, windows: int, speeds: tuple[int, ...] = SPEEDS) -> list[Example]:
    """For each window position: one example per stride in `speeds` (label = its index), all centred on
    the centre of the widest window."""
    widest = span(frames, max(speeds))
    out = []
    for s in window_starts(length, widest, windows):
        centre = s + (widest - 1) / 2
        for label, stride in enumerate(speeds):
            start = round(centre - (span(frames, stride) - 1) / 2)
            out.append(Example(item, label, (start + stride * np.arange(frames),)))
    return out


def task_examples(task: str, item: int, length: int, label: int | None, frames: int, stride: int,
                  windows: int, n_clips: int) -> list[Example]:
    """The examples `task` draws from one video of `length` frames ([] when it is too short)."""
    if task == "labels":
        return label_examples(item, length, label, frames, stride, n_clips)
    if task == "arrow-of-time":
        return arrow_of_time_examples(item, length, frames, stride, windows)
    if task == "speed":
        return speed_examples(item, length, frames, windows, tuple(stride * s for s in SPEEDS))
    raise ValueError(f"unknown task {task!r}")


def min_length(task: str, frames: int, stride: int) -> int:
    """The shortest video `task` can use."""
    return {"labels": frames, "arrow-of-time": span(frames, stride), "speed": span(frames, stride * max(SPEEDS))}[task]
