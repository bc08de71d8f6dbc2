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
from typing import Callable

import numpy as np

SPEEDS = (1, 2, 4)


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


# examples(item, length, label or None, frames, stride, windows, n_clips) -> list[Example]
ExamplesFn = Callable[[int, int, "int | None", int, int, int, int], "list[Example]"]


@dataclass(frozen=True)
class Task:
    """A probe task: how examples are drawn from one video, and what it needs."""
    name: str
    examples: ExamplesFn
    default_stride: int                              # frame stride when --stride is not given
    span_strides: int = 1                            # the widest window spans this many x stride
    class_names: tuple[str, ...] | None = None       # None: the list's own labels
    needs_labels: bool = False

    def min_length(self, frames: int, stride: int) -> int:
        """The shortest video this task can use."""
        return span(frames, stride * self.span_strides) if self.span_strides else frames


TASKS: dict[str, Task] = {}    # name -> Task: the one list of tasks (CLI choices, validation, tests)


def register_task(name: str, default_stride: int, span_strides: int = 1, class_names: tuple[str, ...] | None = None,
                  needs_labels: bool = False) -> Callable[[ExamplesFn], ExamplesFn]:
    """Register an examples function as task `name` (timm's register_model pattern)."""
    def add(fn: ExamplesFn) -> ExamplesFn:
        if name in TASKS:
            raise ValueError(f"task {name!r} is already registered")
        TASKS[name] = Task(name, fn, default_stride, span_strides, class_names, needs_labels)
        return fn
    return add


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


@register_task("labels", default_stride=4, span_strides=0, needs_labels=True)
def _labels(item, length, label, frames, stride, windows, n_clips):
    return label_examples(item, length, label, frames, stride, n_clips)


@register_task("arrow-of-time", default_stride=2, class_names=("forward", "reversed"))
def _arrow_of_time(item, length, label, frames, stride, windows, n_clips):
    return arrow_of_time_examples(item, length, frames, stride, windows)


@register_task("speed", default_stride=1, span_strides=max(SPEEDS), class_names=tuple(f"{s}x" for s in SPEEDS))
def _speed(item, length, label, frames, stride, windows, n_clips):
    return speed_examples(item, length, frames, windows, tuple(stride * s for s in SPEEDS))


CLASS_NAMES = {name: t.class_names for name, t in TASKS.items() if t.class_names}   # for one release


def task_examples(task: str, item: int, length: int, label: int | None, frames: int, stride: int,
                  windows: int, n_clips: int) -> list[Example]:
    """The examples `task` draws from one video of `length` frames ([] when it is too short)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return TASKS[task].examples(item, length, label, frames, stride, windows, n_clips)


def min_length(task: str, frames: int, stride: int) -> int:
    """The shortest video `task` can use."""
    return TASKS[task].min_length(frames, stride)
