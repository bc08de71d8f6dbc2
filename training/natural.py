"""Natural-video clips for the pretrainer: VideoMAE frame sampling and multi-scale crops.

One sample is one random clip of one listed video:
``video_length -> sample_indices -> decode_frames -> multi_scale_crop`` (``load_clip`` chains them).
Reading videos (lists, caches, PyAV decoding) is core: ``smile_synth.video``. Problems with one video
raise ``BadVideo``, which the trainer skips and counts.
"""
from __future__ import annotations

from pathlib import Path

import cv2  # one OpenCV thread per process: set by smile_synth.video.decode
import numpy as np

from smile_synth.assets import require_footage, warn_missing_footage

# VIDEO_EXTENSIONS, clear_caches, read_video_list: unused here, moved to smile_synth.video (core) and
# re-exported for one release
from smile_synth.video import (  # noqa: F401
    VIDEO_EXTENSIONS,
    BadVideo,
    TooFewFrames,
    VideoItem,
    clear_caches,
    decode_frames,
    natural_items,
    read_video_list,
    video_length,
)

from .crop_scales import CROP_SCALES, MAX_DISTORT

# ------------------------------------------------------------------------------------- the videos

def natural_videos(data: str | Path | None) -> list[VideoItem]:
    """The natural source's videos: `data` (list file or folder), or the embedded sample videos if None.

    For the embedded default, one warning line when some recordings are missing (how many videos are
    used, what is missing, the fixes) and one UserError line, the same, when none is installed."""
    if data is not None:
        return natural_items(data)
    require_footage()
    items = natural_items(None)
    warn_missing_footage(f"natural pretraining uses {len(items)} videos")
    return items


# ------------------------------------------------------------------------------------- sampling

def sample_indices(length: int, frames: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (frames,) indices `start + rate * arange(frames)` of a random window (VideoMAE sampling).

    When the video is shorter than the span frames*rate the rate drops to max(1, length // frames).
    `start` is uniform over every position that keeps all indices < length. Raises BadVideo
    ("too short: N frames, need F") when length < frames.
    """
    if frames < 1 or rate < 1:
        raise ValueError(f"frames and rate must be >= 1, got frames={frames} rate={rate}")
    if length < frames:
        raise BadVideo(f"too short: {length} frames, need {frames}")
    if frames * rate > length:
        rate = max(1, length // frames)
    last_start = length - ((frames - 1) * rate + 1)
    start = int(rng.integers(0, last_start + 1))
    return start + rate * np.arange(frames, dtype=np.int64)


# ------------------------------------------------------------------------------------- cropping

def multi_scale_crop(frames: np.ndarray, size: int, rng: np.random.Generator,
                     scales: tuple[float, ...] = CROP_SCALES, max_distort: int = MAX_DISTORT) -> np.ndarray:
    """VideoMAE's multi-scale crop: one random crop for all frames, resized to uint8 (T, size, size, 3).

    Candidate sides are int(min(H, W) * s) for s in `scales` (a side within 2 px of `size` snaps to
    `size`, as in VideoMAE); (crop_w, crop_h) is drawn from the pairs whose scale indices differ by at
    most `max_distort` (bounded aspect distortion); the offset is uniform inside the frame; cv2.INTER_LINEAR.
    """
    if frames.ndim != 4 or frames.shape[0] == 0 or min(frames.shape[1:3]) < 1:
        raise ValueError(f"frames must be (T, H, W, C) with T, H, W >= 1, got shape {frames.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    T, H, W, C = frames.shape
    sides = [max(1, int(min(H, W) * s)) for s in scales]
    crop_h = [min(H, size if abs(x - size) < 3 else x) for x in sides]
    crop_w = [min(W, size if abs(x - size) < 3 else x) for x in sides]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    w, h = pairs[int(rng.integers(len(pairs)))]
    x = int(rng.integers(0, W - w + 1))
    y = int(rng.integers(0, H - h + 1))
    crops = frames[:, y:y + h, x:x + w]
    if (h, w) == (size, size):
        return np.ascontiguousarray(crops, dtype=np.uint8)
    out = np.empty((T, size, size, C), np.uint8)
    for t in range(T):  # per frame: cv2.resize handles at most 4 channels well (and T is small)
        out[t] = cv2.resize(crops[t], (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, C)
    return out


def load_clip(item: VideoItem, frames: int, rate: int, size: int, rng: np.random.Generator,
              short_side: int | None = 320) -> np.ndarray:
    """One training clip of `item`: uint8 (frames, size, size, 3) RGB.

    video_length -> sample_indices -> decode_frames -> multi_scale_crop. If decoding finds fewer frames
    than the container claimed, the window is drawn again once with the true length. Raises BadVideo
    for any per-sample problem (never another exception for a bad file).
    """
    if frames < 1 or rate < 1 or size < 1:
        raise ValueError(f"frames, rate and size must be >= 1, got {frames}, {rate}, {size}")
    path = Path(item.path)
    try:
        length = video_length(path)
        try:
            idx = sample_indices(length, frames, rate, rng)
            try:
                video = decode_frames(path, idx, short_side)
            except TooFewFrames as e:
                if e.length >= length:
                    raise
                idx = sample_indices(e.length, frames, rate, rng)
                video = decode_frames(path, idx, short_side)
        except BadVideo as e:
            if str(path) in str(e):
                raise
            raise BadVideo(f"{path}: {e}") from None
        return multi_scale_crop(video, size, rng)
    except (BadVideo, MemoryError):
        raise
    except Exception as e:  # anything else a broken file can provoke in av/cv2/numpy
        raise BadVideo(f"{path}: unexpected {type(e).__name__}: {' '.join(str(e).split())}") from e
