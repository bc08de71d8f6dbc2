"""A held-out synthetic motion task: which way does the object move (left, right, up or down)?

The check that pretraining learned motion at all. Its objects and backgrounds are ones pretraining
never shows: printed letters and digits (OpenCV's Hershey stroke fonts, not the generators' filled
shapes) over smooth two-colour gradients under a faint grating (not black, noise, photos or video).
The object moves at constant velocity, so every window of a clip carries its label; the grating stays
still, so only the object's motion tells the direction. Appearance says nothing about the label:
glyph, colours, size and start are drawn independently of it.

`write_direction_set(root)` writes ROOT/train/<direction>/NNNN.mp4 and ROOT/test/<direction>/NNNN.mp4
(labelled folders for `smile-synth finetune --task labels --no-flip` and `eval`), the same for a seed
whatever the machine.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from smile_synth.atomic import write_json_atomic
from smile_synth.errors import REASON_CHARS, one_line

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ23456789"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)
DONE = "direction.json"
log = logging.getLogger(__name__)


def gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 (size, size, 3): a linear two-colour gradient at a random angle, under a faint grating."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)), 0, 1)[..., None]
    a, b = rng.uniform(30, 225, (2, 3)).astype(np.float32)
    period, phase, theta = rng.uniform(6, 14), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    grating = 12 * np.sin(2 * np.pi * size * (np.cos(theta) * x + np.sin(theta) * y) / period + phase)
    return np.clip(a + (b - a) * ramp + grating[..., None], 0, 255).astype(np.uint8)


def glyph_sprite(rng: np.random.Generator, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A random glyph about `height` px tall: (colour uint8 (h, w, 3), alpha float32 (h, w) in [0, 1])."""
    text, font = str(rng.choice(list(GLYPHS))), FONTS[rng.integers(len(FONTS))]
    thickness = int(rng.integers(2, 4))
    (w, h), base = cv2.getTextSize(text, font, 1.0, thickness)
    scale = height / (h + base)
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 2
    alpha = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(alpha, text, (pad, pad + h), font, scale, 255, thickness, cv2.LINE_AA)
    colour = np.empty((*alpha.shape, 3), np.uint8)
    colour[:] = rng.integers(0, 256, 3)
    return colour, alpha.astype(np.float32) / 255


def direction_clip(rng: np.random.Generator, label: int, frames: int, size: int) -> np.ndarray:
    """uint8 (frames, size, size, 3): one glyph moving in DIRECTIONS' `label`-th direction over a still
    background; speed 1-2 px/frame at 64 px (scaled with size), centred path with a random offset."""
    background = gradient_background(rng, size).astype(np.float32)
    colour, alpha = glyph_sprite(rng, rng.uniform(0.28, 0.4) * size)
    dx, dy = np.array(list(DIRECTIONS.values())[label]) * rng.uniform(1.0, 2.0) * size / 64
    h, w = alpha.shape
    centre = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):                           # one affine paste per frame (sub-pixel positions)
        shift = (t - (frames - 1) / 2) * np.array([dx, dy])
        c, a = place_sprite(colour, alpha, centre + shift - np.array([w, h]) / 2, size)
        out[t] = np.clip(background * (1 - a) + c * a + 0.5, 0, 255).astype(np.uint8)
    return out


def place_sprite(colour: np.ndarray, alpha: np.ndarray, corner: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A sprite (colour uint8 (h, w, 3), alpha float32 (h, w)) with its top-left corner at `corner` (x, y px,
    sub-pixel) on a size x size frame: (colour float32 (size, size, 3), alpha float32 (size, size, 1))."""
    m = np.float32([[1, 0, corner[0]], [0, 1, corner[1]]])
    a = cv2.warpAffine(alpha, m, (size, size), flags=cv2.INTER_LINEAR)[..., None]
    c = cv2.warpAffine(colour, m, (size, size), flags=cv2.INTER_LINEAR).astype(np.float32)
    return c, a


def written_settings(done: Path) -> dict | None:
    """The settings a finished set recorded in `done` (DONE); None, with a warning naming the file, when it
    cannot be read (cut short, not JSON): the set is then written again."""
    try:
        return json.loads(done.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s); writing the direction set again", done, one_line(e, REASON_CHARS))
        return None


def write_direction_set(root: str | Path, train_per_class: int = 48, test_per_class: int = 24, frames: int = 16,
                        size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Write the task's train and test folders under ROOT (skipped when already written with the same
    settings; a direction.json that cannot be read means not written); returns (ROOT/train, ROOT/test).
    Train and test clips come from disjoint random streams."""
    from .embedded import write_video

    root = Path(root)
    settings = {"train_per_class": train_per_class, "test_per_class": test_per_class, "frames": frames,
                "size": size, "seed": seed, "classes": list(DIRECTIONS)}
    done = root / DONE
    if done.is_file() and written_settings(done) == settings:
        return root / "train", root / "test"
    for split, n, stream in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        for label, name in enumerate(DIRECTIONS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([seed, stream, label, i])
                write_video(direction_clip(rng, label, frames, size), folder / f"{i:04d}.mp4")
    write_json_atomic(done, settings)
    return root / "train", root / "test"
