"""Background videos: black, solid, gradient, photos and procedural textures, with optional
smooth camera motion (pan, zoom, rotation, shake) rendered as one affine warp per frame."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from .recipes import REFERENCE_SIZE, BackgroundSpec, CameraSpec
from .resources import Resources
from .textures import palette_colors


def camera_matrices(rng: np.random.Generator, T: int, size: int, src_hw: tuple[int, int],
                    cam: CameraSpec, crop: tuple[float, float] = (0.6, 1.0)) -> np.ndarray:
    """Inverse affine maps (T, 2, 3), output pixel -> source pixel, for a crop window that
    drifts smoothly over the source. Lengths in `cam` are px/frame at the reference size."""
    Hs, Ws = src_hw
    f = size / REFERENCE_SIZE
    c0 = min(Hs, Ws) / size * rng.uniform(*crop)  # source px per output px
    half = c0 * size / 2
    centre = np.array([rng.uniform(half, max(half, Ws - half)), rng.uniform(half, max(half, Hs - half))])
    t = np.arange(T, dtype=np.float64)
    angle = np.zeros(T)
    scale = np.full(T, c0)
    move = np.zeros((T, 2))
    if rng.random() < cam.prob:
        a = rng.uniform(0, 2 * math.pi)
        v = rng.uniform(0, cam.pan * f)
        move = c0 * v * t[:, None] * np.array([math.cos(a), math.sin(a)])[None]
        scale = c0 * np.exp(-rng.uniform(-cam.zoom, cam.zoom) * t)
        angle = np.radians(rng.uniform(-cam.rotation, cam.rotation) * t)
        if cam.shake > 0 and T > 1:
            jitter = gaussian_filter1d(rng.normal(size=(T, 2)), sigma=1.0, axis=0)
            move += c0 * cam.shake * f * jitter / max(float(np.abs(jitter).max()), 1e-6)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    ctr = centre[None] + move
    M = np.empty((T, 2, 3))
    M[:, 0, 0], M[:, 0, 1] = cos, -sin
    M[:, 1, 0], M[:, 1, 1] = sin, cos
    o = size / 2
    M[:, 0, 2] = ctr[:, 0] - (cos * o - sin * o)
    M[:, 1, 2] = ctr[:, 1] - (sin * o + cos * o)
    return M


def _warp(src: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def view_still(src: np.ndarray, M: np.ndarray, size: int, still: bool = False) -> np.ndarray:
    """uint8 (T, size, size, 3) view of a still image through the camera maps M (T, 2, 3);
    still: only its frame 0, (1, size, size, 3)."""
    if still:
        return _warp(src, M[0], size)[None]
    if np.allclose(M, M[:1]):  # static camera: warp once
        return np.broadcast_to(_warp(src, M[0], size), (len(M), size, size, 3)).copy()
    return np.stack([_warp(src, M[t], size) for t in range(len(M))])


def volume_positions(rng, T: int, Tv: int) -> np.ndarray:
    """float64 (T,) time positions in a Tv-slice volume: a random start, played forward and back at a
    random rate (ping-pong: any clip length works)."""
    rate = rng.uniform(0.3, 1.0)
    pos = rng.uniform(0, Tv - 1) + rate * np.arange(T)
    span = Tv - 1
    pos = np.mod(pos, 2 * span)
    return np.where(pos > span, 2 * span - pos, pos)


def play_volume(vol: np.ndarray, pos: np.ndarray, M: np.ndarray, size: int, still: bool = False) -> np.ndarray:
    """uint8 (T, size, size, 3): volume (Tv, S, S, 3) at positions pos (T,), each slice blend seen
    through the camera maps M (T, 2, 3); still: only its frame 0."""
    Tv = vol.shape[0]
    n = 1 if still else len(pos)
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        i = min(int(pos[t]), Tv - 2)
        w = float(pos[t] - i)
        frame = cv2.addWeighted(vol[i], 1.0 - w, vol[i + 1], w, 0.0)
        out[t] = _warp(frame, M[t], size)
    return out


def gradient_draw(rng) -> tuple[np.ndarray, float]:
    """The draws of a gradient image: float32 (2, 3) end colours in [0, 1] and an angle in radians."""
    c = palette_colors(rng, 2) * rng.uniform(0.3, 1.0, size=(2, 1)).astype(np.float32)
    return c, rng.uniform(0, 2 * math.pi)


def gradient_paint(colours: np.ndarray, angle: float, size: int) -> np.ndarray:
    """uint8 (size, size, 3) linear blend between two colours (2, 3) at `angle` radians."""
    x = np.linspace(-1, 1, size, dtype=np.float32)
    proj = (math.cos(angle) * x[None, :] + math.sin(angle) * x[:, None]) * 0.5 + 0.5
    img = colours[0] + (colours[1] - colours[0]) * np.clip(proj, 0, 1)[..., None]
    return (img * 255).astype(np.uint8)


STILL_KINDS = ("perlin", "spectral", "fractal")   # banked 2-D textures
CROP = {"gradient": (0.6, 1.0), "photo": (0.6, 1.0), "perlin": (0.35, 0.6), "spectral": (0.35, 0.6),
        "fractal": (0.35, 0.6), "perlin3d": (0.5, 1.0)}   # the camera's crop range per kind


@dataclass
class BackgroundPlan:
    """Every draw of one background and none of its pixels (small; either rasteriser paints it).

    camera: float64 (T, 2, 3) output px -> source px; source: a bank item or photo index;
    colour: uint8 (3,) (solid); gradient: (float32 (2, 3) colours, angle rad); positions: float64 (T,)
    volume time positions (perlin3d)."""
    kind: str
    camera: np.ndarray | None = None
    source: int = -1
    colour: np.ndarray | None = None
    gradient: tuple[np.ndarray, float] | None = None
    positions: np.ndarray | None = None


def draw_background(kind: str, rng: np.random.Generator, T: int, size: int,
                    spec: BackgroundSpec, res: Resources) -> BackgroundPlan:
    """The plan of a T-frame background of `kind`: all its draws, in order. The camera path (e.g. shake)
    is drawn and smoothed over all T frames, so a still clip's background (paint_background(still=True))
    is the moving clip's frame 0."""
    if kind == "black":
        return BackgroundPlan(kind)
    if kind == "solid":
        return BackgroundPlan(kind, colour=(palette_colors(rng, 1)[0] * rng.uniform(0.2, 1.0) * 255).astype(np.uint8))
    if kind == "gradient":
        g = gradient_draw(rng)
        return BackgroundPlan(kind, camera_matrices(rng, T, size, (2 * size, 2 * size), spec.camera, crop=CROP[kind]),
                              gradient=g)
    if kind == "photo":
        lib = res.photos()
        i = int(rng.integers(len(lib)))
        return BackgroundPlan(kind, camera_matrices(rng, T, size, lib.get(i).shape[:2], spec.camera, crop=CROP[kind]),
                              source=i)
    if kind in STILL_KINDS:
        bank = res.bank(kind)
        i = int(rng.integers(len(bank)))
        return BackgroundPlan(kind, camera_matrices(rng, T, size, bank.shape[1:3], spec.camera, crop=CROP[kind]), source=i)
    if kind == "perlin3d":
        bank = res.bank(kind)
        i = int(rng.integers(len(bank)))
        pos = volume_positions(rng, T, bank.shape[1])
        return BackgroundPlan(kind, camera_matrices(rng, T, size, bank.shape[2:4], spec.camera, crop=CROP[kind]),
                              source=i, positions=pos)
    raise ValueError(f"background kind {kind!r} needs frames; use generators.overlay_clip")


def background_source(plan: BackgroundPlan, res: Resources, size: int) -> np.ndarray | None:
    """The image (h, w, 3) or volume (Tv, S, S, 3) a plan's camera looks at; None for black/solid."""
    if plan.kind == "gradient":
        return gradient_paint(*plan.gradient, 2 * size)
    if plan.kind == "photo":
        return res.photos().get(plan.source)
    if plan.kind in STILL_KINDS or plan.kind == "perlin3d":
        return res.bank(plan.kind)[plan.source]
    return None


def paint_background(plan: BackgroundPlan, res: Resources, T: int, size: int, still: bool = False) -> np.ndarray:
    """uint8 (T, size, size, 3) background of a plan (the numpy rasteriser); still: (1, ...), frame 0."""
    n = 1 if still else T
    if plan.kind == "black":
        return np.zeros((n, size, size, 3), np.uint8)
    if plan.kind == "solid":
        return np.broadcast_to(plan.colour, (n, size, size, 3)).copy()
    src = background_source(plan, res, size)
    if plan.kind == "perlin3d":
        return play_volume(src, plan.positions, plan.camera, size, still)
    return view_still(src, plan.camera, size, still)
