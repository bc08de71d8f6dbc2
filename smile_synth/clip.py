"""The `Clip`: what every generator returns and every later stage consumes (core: all stages share it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import MAX_FRAMES, MAX_SIZE
from .errors import UserError


def check_geometry(frames: int, size: int, frames_name: str = "frames", size_name: str = "size") -> None:
    """The one check of a clip's frames and size (px, square): the patch grid needs size % 16 == 0, and
    both stay within the bounds every command shares (MAX_FRAMES, MAX_SIZE), so a typo is one line, not
    an allocation of hundreds of GB."""
    if not 2 <= frames <= MAX_FRAMES:
        raise UserError(f"{frames_name} {frames} must be in [2, {MAX_FRAMES}]; a clip needs at least 2 frames")
    if size < 16 or size % 16 or size > MAX_SIZE:
        raise UserError(f"{size_name} {size} must be a positive multiple of 16 (the patch size) up to {MAX_SIZE}, "
                        "e.g. 112 or 224")



@dataclass
class Clip:
    """One rendered clip with per-object ground truth.

    video: uint8 (T, H, W, 3), RGB.
    masks: bool (K, T, H, W), visible pixels of each object after occlusion.
    boxes: float32 (K, T, 4), x1 y1 x2 y2 in pixels of the visible mask
           (x2/y2 exclusive); NaN where the object is not visible in that frame.
    meta:  dict with recipe, recipe_version, seed, index, objects=[{category, trajectory}, ...].

    Optional annotations (generators.flow; None unless asked for; pixel centres at integer coordinates):
    flow:            float32 (T-1, H, W, 2) forward flow in px, (dx, dy): pixel p of frame t moves to
                     p + flow[t, p] in frame t+1.
    flow_back:       float32 (T-1, H, W, 2) backward flow in px, (dx, dy): pixel p of frame t+1 was at
                     p + flow_back[t, p] in frame t.
    flow_valid:      bool (T-1, H, W) the forward flow at p of frame t is defined (its owner's motion is).
    flow_back_valid: bool (T-1, H, W) the same for flow_back (pixels of frame t+1).
    occluded:        bool (T-1, H, W) the surface at p of frame t is hidden at t+1 or leaves the frame.
    tracks:          float32 (N, T, 2) x, y in px of N points on the objects (TAP-Vid convention).
    track_visible:   bool (N, T) the point is in the frame and its object owns the pixel there.
    A clip has all four flow fields or none, and both track fields or none.
    """

    video: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    flow: np.ndarray | None = None
    flow_back: np.ndarray | None = None
    flow_valid: np.ndarray | None = None
    flow_back_valid: np.ndarray | None = None
    occluded: np.ndarray | None = None
    tracks: np.ndarray | None = None
    track_visible: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[0])

    def label_map(self) -> np.ndarray:
        """uint8 (T, H, W): 0 where no object is visible, k+1 where object k is (masks are disjoint)."""
        return masks_to_labels(self.masks, self.video.shape[:3])


def masks_to_labels(masks: np.ndarray, thw: tuple[int, int, int]) -> np.ndarray:
    """bool (K, T, H, W) disjoint masks -> uint8 (T, H, W) label map."""
    labels = np.zeros(thw, np.uint8)
    for k in range(masks.shape[0]):
        labels[masks[k]] = k + 1
    return labels


def labels_to_masks(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """uint8 (T, H, W) label map -> bool (K, T, H, W)."""
    ks = np.arange(1, num_objects + 1, dtype=np.uint8).reshape(-1, 1, 1, 1)
    return labels[None] == ks


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """bool (K, T, H, W) -> float32 (K, T, 4) tight boxes x1 y1 x2 y2 (exclusive); NaN if empty."""
    K, T, H, W = masks.shape
    rows = masks.any(axis=3)  # (K, T, H)
    cols = masks.any(axis=2)  # (K, T, W)
    boxes = np.full((K, T, 4), np.nan, np.float32)
    seen = rows.any(axis=2)
    if seen.any():
        y1 = rows.argmax(axis=2)
        y2 = H - rows[..., ::-1].argmax(axis=2)
        x1 = cols.argmax(axis=2)
        x2 = W - cols[..., ::-1].argmax(axis=2)
        b = np.stack([x1, y1, x2, y2], axis=-1).astype(np.float32)
        boxes[seen] = b[seen]
    return boxes
