"""Background videos: black, solid, gradient, photos and procedural textures, with optional
smooth camera motion (pan, zoom, rotation, shake) rendered as one affine warp per frame."""
from __future__ import annotations

import math

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


def moving_still(src: np.ndarray, rng, T: int, size: int, cam: CameraSpec, crop=(0.6, 1.0),
                 still: bool = False) -> np.ndarray:
    """uint8 (T, size, size, 3) view of a still image through a (possibly) moving camera;
    still: only its frame 0, (1, size, size, 3), after the same draws."""
    M = camera_matrices(rng, T, size, src.shape[:2], cam, crop)
    if still:
        return _warp(src, M[0], size)[None]
    if np.allclose(M, M[:1]):  # static camera: warp once
        return np.broadcast_to(_warp(src, M[0], size), (T, size, size, 3)).copy()
    return np.stack([_warp(src, M[t], size) for t in range(T)])


def evolving_volume(vol: np.ndarray, rng, T: int, size: int, cam: CameraSpec, still: bool = False) -> np.ndarray:
    """Play a (Tv, S, S, 3) texture volume forward and back at a random rate, through the camera:
    uint8 (T, size, size, 3); still: only its frame 0, (1, size, size, 3), after the same draws."""
    Tv = vol.shape[0]
    rate = rng.uniform(0.3, 1.0)
    pos = rng.uniform(0, Tv - 1) + rate * np.arange(T)
    span = Tv - 1
    pos = np.mod(pos, 2 * span)
    pos = np.where(pos > span, 2 * span - pos, pos)  # ping-pong: any clip length works
    M = camera_matrices(rng, T, size, vol.shape[1:3], cam, crop=(0.5, 1.0))
    n = 1 if still else T
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        i = min(int(pos[t]), Tv - 2)
        w = float(pos[t] - i)
        frame = cv2.addWeighted(vol[i], 1.0 - w, vol[i + 1], w, 0.0)
        out[t] = _warp(frame, M[t], size)
    return out


def gradient_image(rng, size: int) -> np.ndarray:
    """uint8 (size, size, 3) linear blend between two random colours at a random angle."""
    c = palette_colors(rng, 2) * rng.uniform(0.3, 1.0, size=(2, 1)).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    x = np.linspace(-1, 1, size, dtype=np.float32)
    proj = (math.cos(a) * x[None, :] + math.sin(a) * x[:, None]) * 0.5 + 0.5
    img = c[0] + (c[1] - c[0]) * np.clip(proj, 0, 1)[..., None]
    return (img * 255).astype(np.uint8)


def render_background(kind: str, rng: np.random.Generator, T: int, size: int,
                      spec: BackgroundSpec, res: Resources, still: bool = False) -> np.ndarray:
    """uint8 (T, size, size, 3) background video of the given kind.

    still: return only frame 0, (1, size, size, 3). The draws are those of the T-frame video
    (the camera path, e.g. shake, is drawn and smoothed over all T frames), so the rng ends in
    the same state and frame 0 is the moving video's frame 0."""
    n = 1 if still else T
    if kind == "black":
        return np.zeros((n, size, size, 3), np.uint8)
    if kind == "solid":
        col = (palette_colors(rng, 1)[0] * rng.uniform(0.2, 1.0) * 255).astype(np.uint8)
        return np.broadcast_to(col, (n, size, size, 3)).copy()
    if kind == "gradient":
        return moving_still(gradient_image(rng, 2 * size), rng, T, size, spec.camera, still=still)
    if kind == "photo":
        lib = res.photos()
        return moving_still(lib.get(int(rng.integers(len(lib)))), rng, T, size, spec.camera, still=still)
    if kind in ("perlin", "spectral", "fractal"):
        bank = res.bank(kind)
        return moving_still(bank[int(rng.integers(len(bank)))], rng, T, size, spec.camera, crop=(0.35, 0.6), still=still)
    if kind == "perlin3d":
        bank = res.bank(kind)
        return evolving_volume(bank[int(rng.integers(len(bank)))], rng, T, size, spec.camera, still=still)
    raise ValueError(f"background kind {kind!r} needs frames; use generators.overlay_clip")
