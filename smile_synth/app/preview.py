"""Pictures of clips: a contact sheet (PNG) and an animated grid (GIF), optionally with each
object's visible mask tinted and its box drawn."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from smile_synth.clip import Clip

# distinct colours for objects 0..7 (RGB)
OBJECT_COLOURS = np.array([[255, 64, 64], [64, 160, 255], [80, 220, 80], [255, 200, 40],
                           [200, 80, 255], [40, 220, 220], [255, 120, 200], [160, 160, 160]], np.uint8)


def overlay_masks(clip: Clip, alpha: float = 0.45) -> np.ndarray:
    """uint8 (T, H, W, 3): the video with each object's mask tinted and its box outlined."""
    video = clip.video.copy()
    for k in range(clip.num_objects):
        col = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        m = clip.masks[k]
        video[m] = (video[m] * (1 - alpha) + col * alpha).astype(np.uint8)
        for t in range(clip.num_frames):
            b = clip.boxes[k, t]
            if np.isfinite(b).all():
                cv2.rectangle(video[t], (int(b[0]), int(b[1])), (int(b[2]) - 1, int(b[3]) - 1), col.tolist(), 1)
    return video


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def clip_videos(clips: list[Clip], masks: bool) -> list[np.ndarray]:
    return [overlay_masks(c) if masks else c.video for c in clips]


def contact_sheet(clips: list[Clip], columns: int = 8, masks: bool = False, gap: int = 2) -> np.ndarray:
    """uint8 RGB image: one row per clip, `columns` evenly spaced frames per row."""
    videos = clip_videos(clips, masks)
    H, W = videos[0].shape[1:3]
    rows = []
    for clip, video in zip(clips, videos):
        ts = np.linspace(0, len(video) - 1, min(columns, len(video))).round().astype(int)
        tiles = [np.pad(video[t], ((0, gap), (0, gap), (0, 0)), constant_values=32) for t in ts]
        row = np.concatenate(tiles, axis=1)
        _label(row, f"{clip.meta.get('recipe', '?')} #{clip.meta.get('index', '?')} {clip.meta.get('background', '')}")
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=32) for r in rows]
    return np.concatenate(rows, axis=0)


def animated_grid(clips: list[Clip], masks: bool = False, columns: int = 4, gap: int = 2) -> list[np.ndarray]:
    """Frames of a grid animation: frame t shows frame t of every clip."""
    videos = clip_videos(clips, masks)
    T = min(len(v) for v in videos)
    H, W = videos[0].shape[1:3]
    n = len(videos)
    cols = min(columns, n)
    rows = -(-n // cols)
    frames = []
    for t in range(T):
        canvas = np.full((rows * (H + gap), cols * (W + gap), 3), 32, np.uint8)
        for i, v in enumerate(videos):
            r, c = divmod(i, cols)
            canvas[r * (H + gap): r * (H + gap) + H, c * (W + gap): c * (W + gap) + W] = v[t]
        frames.append(canvas)
    return frames


def save_png(img: np.ndarray, path: str | Path) -> None:
    Image.fromarray(img).save(path)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float = 8.0) -> None:
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0, optimize=False)
