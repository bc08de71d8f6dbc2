"""Pictures of clips: a contact sheet (PNG) and an animated grid (GIF), optionally with each
object's visible mask tinted and its box drawn, and with each frame's optical flow in the Middlebury
colour coding (smile_synth.flow_io.flow_to_colour) beside it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from smile_synth.clip import Clip
from smile_synth.flow_io import flow_to_colour, wheel_legend

# distinct colours for objects 0..7 (RGB)
OBJECT_COLOURS = np.array([[255, 64, 64], [64, 160, 255], [80, 220, 80], [255, 200, 40],
                           [200, 80, 255], [40, 220, 220], [255, 120, 200], [160, 160, 160]], np.uint8)
GREY = 32   # gaps between tiles, and the flow tile of a clip's last frame


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


def flow_video(clip: Clip) -> np.ndarray:
    """uint8 (T, H, W, 3): frame t shows the flow t -> t+1 in the colour coding, saturated at the clip's
    fastest valid pixel (undefined flow black); the last frame, which has no successor, is dark grey."""
    colours = flow_to_colour(clip.flow, valid=clip.flow_valid)
    return np.concatenate([colours, np.full_like(colours[:1], GREY)])


def flow_label(clip: Clip) -> str:
    speeds = np.hypot(clip.flow[..., 0], clip.flow[..., 1])[clip.flow_valid]
    return f"flow, max {speeds.max() if speeds.size else 0:.1f} px/frame"


def _tile_row(video: np.ndarray, ts: np.ndarray, gap: int) -> np.ndarray:
    return np.concatenate([np.pad(video[t], ((0, gap), (0, gap), (0, 0)), constant_values=GREY) for t in ts], axis=1)


def contact_sheet(clips: list[Clip], columns: int = 8, masks: bool = False, gap: int = 2,
                  flow: bool = False) -> np.ndarray:
    """uint8 RGB image: one row per clip, `columns` evenly spaced frames per row; with `flow`, each clip's
    row is followed by its flow row (flow_video), the first one ending in a colour-wheel legend."""
    videos = clip_videos(clips, masks)
    H, W = videos[0].shape[1:3]
    rows = []
    for clip, video in zip(clips, videos):
        ts = np.linspace(0, len(video) - 1, min(columns, len(video))).round().astype(int)
        row = _tile_row(video, ts, gap)
        _label(row, f"{clip.meta.get('recipe', '?')} #{clip.meta.get('index', '?')} {clip.meta.get('background', '')}")
        rows.append(row)
        if flow:
            flow_row = _tile_row(flow_video(clip), ts, gap)
            _label(flow_row, flow_label(clip))
            if len(rows) == 1:
                flow_row = np.concatenate([flow_row, _tile_row(wheel_legend(min(H, W))[None], [0], gap)], axis=1)
            rows.append(flow_row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=GREY) for r in rows]
    return np.concatenate(rows, axis=0)


def animated_grid(clips: list[Clip], masks: bool = False, columns: int = 4, gap: int = 2,
                  flow: bool = False) -> list[np.ndarray]:
    """Frames of a grid animation: frame t shows frame t of every clip (with `flow`, its flow_video beside it)."""
    videos = clip_videos(clips, masks)
    if flow:
        videos = [np.concatenate([v, np.full((*v.shape[:2], gap, 3), GREY, np.uint8), flow_video(c)], axis=2)
                  for c, v in zip(clips, videos)]
    T = min(len(v) for v in videos)
    H, W = videos[0].shape[1:3]
    n = len(videos)
    cols = min(columns, n)
    rows = -(-n // cols)
    frames = []
    for t in range(T):
        canvas = np.full((rows * (H + gap), cols * (W + gap), 3), GREY, np.uint8)
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
