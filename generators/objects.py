"""Objects and their per-frame poses: procedural sprites or RGBA cut-outs, each with a path,
rotation, size, shear and opacity curve."""
from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .recipes import REFERENCE_SIZE, ObjectSpec, Recipe
from .resources import Resources
from .textures import palette_colors
from .trajectories import log_size_curve, object_path, rotation_curve, smooth_curve


@dataclass
class ObjectTrack:
    """One object over a clip. The sprite is drawn at the largest size it reaches, so the
    compositor only ever shrinks it (scale <= 1) and never blurs it by upsampling."""

    sprite: np.ndarray  # uint8 (h, w, 4) RGBA
    centres: np.ndarray  # float64 (T, 2) x, y in frame pixels
    angle: np.ndarray  # float64 (T,) degrees, counter-clockwise on screen
    scale: np.ndarray  # float64 (T,) sprite px -> frame px
    shear: np.ndarray  # float64 (T,) x-shear factor
    opacity: np.ndarray  # float64 (T,) in [0, 1]
    category: str
    trajectory: str
    source: str


def choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """Weighted choice over dict keys (insertion order; deterministic for a given rng state)."""
    keys = list(weights)
    cum = list(itertools.accumulate(weights.values()))  # plain Python: numpy costs more on a handful of items
    return keys[min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(keys) - 1)]


# ---- procedural sprites -------------------------------------------------------------------

def shape_polygon(rng: np.random.Generator, shape: str) -> np.ndarray:
    """Outline of a shape in the unit box [-1, 1]^2, float64 (N, 2)."""
    if shape in ("circle", "ellipse"):
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if shape == "polygon":
        n = int(rng.integers(3, 9))
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.6, 1.0, n)
    elif shape == "star":
        n = int(rng.integers(4, 9))
        a = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
    elif shape == "blob":
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        k = np.arange(2, 6)[:, None]
        r = 1.0 + (rng.uniform(0, 0.3, (4, 1)) / k * 2 * np.cos(k * a[None] + rng.uniform(0, 2 * np.pi, (4, 1)))).sum(0)
    else:
        raise ValueError(shape)
    pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) / ((hi - lo) / 2)  # fill the unit box


def shape_alpha(rng, shape: str, w: int, h: int, soft: bool) -> np.ndarray:
    """uint8 (h, w) coverage of the shape scaled into a w x h box."""
    if shape == "circle":
        w = h = min(w, h)
    pts = shape_polygon(rng, shape)
    xy = np.stack([(pts[:, 0] + 1) * 0.5 * (w - 1), (pts[:, 1] + 1) * 0.5 * (h - 1)], axis=1)
    alpha = np.zeros((h, w), np.uint8)
    cv2.fillPoly(alpha, [np.round(xy * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA if soft else cv2.LINE_8, shift=4)
    if soft:
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.04 * min(w, h)))
    return alpha


def fill_texture(rng, fill: str, w: int, h: int, res: Resources) -> np.ndarray:
    """uint8 (h, w, 3) colour for a procedural object."""
    if fill == "photo":
        lib = res.photos()
        img = lib.get(int(rng.integers(len(lib))))
        H, W = img.shape[:2]
        cw, ch = min(W, max(4, int(W * rng.uniform(0.2, 0.6)))), min(H, max(4, int(H * rng.uniform(0.2, 0.6))))
        x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
        return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if fill == "noise":
        g = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.float32)
        g = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        base = palette_colors(rng, 1)[0]
        return (np.clip(0.5 * base + 0.6 * g, 0, 1) * 255).astype(np.uint8)
    cols = palette_colors(rng, 2)
    if fill == "flat":
        return np.broadcast_to((cols[0] * 255).astype(np.uint8), (h, w, 3)).copy()
    a = rng.uniform(0, 2 * math.pi)
    corner = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]) @ [math.cos(a), math.sin(a)]
    t = np.clip(corner * 0.5 + 0.5, 0, 1).reshape(2, 2, 1).astype(np.float32)
    quad = ((cols[0] + (cols[1] - cols[0]) * t) * 255).astype(np.float32)  # (2, 2, 3) corner colours
    # bilinear resizing of a linear ramp is the ramp: one cheap call instead of per-pixel maths
    return cv2.resize(quad, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)


def procedural_sprite(rng, spec: ObjectSpec, w: int, h: int, res: Resources) -> tuple[np.ndarray, str]:
    shape = choose(rng, spec.shapes)
    fill = choose(rng, spec.fills)
    soft = bool(rng.random() < spec.soft_edge_prob)
    alpha = shape_alpha(rng, shape, w, h, soft)
    rgb = fill_texture(rng, fill, alpha.shape[1], alpha.shape[0], res)
    return np.dstack([rgb, alpha]), shape


# ---- tracks -------------------------------------------------------------------------------

def make_tracks(rng: np.random.Generator, recipe: Recipe, T: int, size: int, res: Resources) -> list[ObjectTrack]:
    """Objects of one clip, ordered back to front."""
    spec, f = recipe.objects, size / REFERENCE_SIZE
    motion = recipe.motion.scaled(f)
    n = int(rng.integers(spec.count[0], spec.count[1] + 1))
    tracks = []
    lo, hi = math.log(spec.size[0] * f), math.log(spec.size[1] * f)
    for _ in range(n):
        source = choose(rng, spec.sources)
        log_size = log_size_curve(rng, T, motion.scale_drift, lo, hi, rng.uniform(lo, hi))
        longest = max(2, int(math.ceil(math.exp(log_size.max()))))
        if source == "cutout":
            lib = res.cutouts()
            cut = lib.get(int(rng.integers(len(lib))))
            ch, cw = cut.rgba.shape[:2]
            k = longest / max(ch, cw)
            w, h = max(1, round(cw * k)), max(1, round(ch * k))
            sprite = cv2.resize(cut.rgba, (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
            category = cut.category
        else:
            aspect = math.exp(rng.uniform(math.log(spec.aspect[0]), math.log(spec.aspect[1])))
            w, h = (longest, max(2, round(longest / aspect))) if aspect >= 1 else (max(2, round(longest * aspect)), longest)
            sprite, category = procedural_sprite(rng, spec, w, h, res)
        kind = choose(rng, motion.trajectories)
        tracks.append(ObjectTrack(
            sprite=sprite,
            centres=object_path(kind, rng, T, motion, size),
            angle=rotation_curve(rng, T, motion.rotation_speed),
            scale=np.exp(log_size) / longest,
            shear=smooth_curve(rng, T, -motion.shear, motion.shear),
            opacity=smooth_curve(rng, T, *motion.opacity),
            category=category, trajectory=kind, source=source,
        ))
    return tracks


def hold_pose(track: ObjectTrack, T: int) -> ObjectTrack:
    """The track held at its frame-0 pose (centre, angle, scale, shear, opacity) for T frames.

    Same sprite: it was sized for the largest scale of the whole path, so the pose draws exactly as
    the moving track's frame 0."""
    held = {k: np.repeat(getattr(track, k)[:1], T, axis=0) for k in ("centres", "angle", "scale", "shear", "opacity")}
    return replace(track, **held)
