"""Object paths and per-frame pose curves.

Every path function returns centres as float64 (T, 2) in pixels (x, y), relative to an
arbitrary origin; `place_in_frame` moves a path so that it lies inside the frame. Paths can
be composed by adding their displacements ("circular+constant_velocity").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d

if TYPE_CHECKING:   # recipes validates kinds against TRAJECTORIES, so it imports this module
    from .recipes import MotionSpec

# path(rng, T frames, motion settings, frame size px) -> centres float64 (T, 2), px
PathFn = Callable[[np.random.Generator, int, "MotionSpec", float], np.ndarray]
TRAJECTORIES: dict[str, PathFn] = {}      # kind -> path function: the one list of trajectory kinds
BOUNDED: set[str] = set()                 # kinds that place themselves in the frame


def register_trajectory(name: str, bounded: bool = False) -> Callable[[PathFn], PathFn]:
    """Register a path function under `name`, usable in recipes as motion.trajectories.NAME (and in
    composites such as "circular+NAME"). bounded: the path already lies inside the frame."""
    def add(fn: PathFn) -> PathFn:
        if name in TRAJECTORIES or "+" in name:
            raise ValueError(f"trajectory kind {name!r} is already registered or contains '+'")
        TRAJECTORIES[name] = fn
        if bounded:
            BOUNDED.add(name)
        return fn
    return add


def _direction(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(a), math.sin(a)])


@register_trajectory("constant_velocity")
def constant_velocity(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """p(t) = v t, |v| in m.speed px/frame."""
    v = _direction(rng) * rng.uniform(*m.speed)
    return np.arange(T)[:, None] * v[None]


@register_trajectory("accelerating")
def accelerating(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """p(t) = v0 t + a t^2 / 2 along one direction; a < 0 decelerates (and may reverse)."""
    d = _direction(rng)
    v0 = rng.uniform(*m.speed)
    acc = rng.uniform(*m.accel) * rng.choice([-1.0, 1.0])
    t = np.arange(T, dtype=np.float64)
    return (v0 * t + 0.5 * acc * t * t)[:, None] * d[None]


@register_trajectory("gaussian")
def gaussian_path(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """SMILE's path: random points, smoothed by a 1-D gaussian, rescaled to a random extent
    (the larger side of the path's bounding box, px), resampled to T frames."""
    n = max(int(m.gaussian_points), 4)
    pts = rng.normal(size=(n, 2))
    pts = gaussian_filter1d(pts, sigma=m.gaussian_sigma, axis=0, mode="nearest")
    pts -= pts.min(axis=0)
    span = float(pts.max())
    extent = rng.uniform(*m.extent)
    pts *= extent / span if span > 1e-9 else 0.0
    src = np.linspace(0.0, 1.0, n)
    dst = np.linspace(0.0, 1.0, T)
    return np.stack([np.interp(dst, src, pts[:, 0]), np.interp(dst, src, pts[:, 1])], axis=1)


@register_trajectory("bezier")
def bezier(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """Cubic Bezier spline through 4 random control points spread over a random extent."""
    ctrl = rng.uniform(0, rng.uniform(*m.extent), size=(4, 2))
    t = np.linspace(0.0, 1.0, T)[:, None]
    w = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3]
    return sum(wi * ci[None] for wi, ci in zip(w, ctrl))


@register_trajectory("circular")
def circular(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """Ellipse (rx, ry in m.radius px, tilted) traversed at m.angular_speed deg/frame."""
    rx, ry = rng.uniform(*m.radius, size=2)
    w = math.radians(rng.uniform(*m.angular_speed)) * rng.choice([-1.0, 1.0])
    phase, tilt = rng.uniform(0, 2 * math.pi, size=2)
    a = phase + w * np.arange(T)
    x, y = rx * np.cos(a), ry * np.sin(a)
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([c * x - s * y, s * x + c * y], axis=1)


@register_trajectory("sinusoidal")
def sinusoidal(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """Drift at m.speed px/frame plus a perpendicular sine (m.amplitude px, m.period frames)."""
    d = _direction(rng)
    n = np.array([-d[1], d[0]])
    t = np.arange(T, dtype=np.float64)
    amp = rng.uniform(*m.amplitude)
    period = rng.uniform(*m.period)
    along = rng.uniform(*m.speed) * t
    across = amp * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
    return along[:, None] * d[None] + across[:, None] * n[None]


@register_trajectory("bouncing", bounded=True)
def bouncing(rng, T, m: MotionSpec, size: float) -> np.ndarray:
    """Constant velocity reflected off the frame borders (the centre stays in [0, size])."""
    start = rng.uniform(0, size, size=2)
    raw = start[None] + constant_velocity(rng, T, m, size)
    return _reflect(raw, 0.0, size)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold values into [lo, hi] as a ball bouncing between two walls would travel."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def object_path(kind: str, rng: np.random.Generator, T: int, m: MotionSpec, size: float) -> np.ndarray:
    """Centres (T, 2) for a possibly composite kind such as "circular+constant_velocity"."""
    parts = kind.split("+")
    path = np.zeros((T, 2))
    for p in parts:
        q = TRAJECTORIES[p](rng, T, m, size)
        path += q - (q[:1] if (p not in BOUNDED or len(parts) > 1) else 0.0)
    if len(parts) == 1 and parts[0] in BOUNDED:
        return path
    return place_in_frame(path, rng, size)


def place_in_frame(path: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """Translate a path so its bounding box lies inside [0, size]^2 (centred if it is larger)."""
    lo, hi = path.min(axis=0), path.max(axis=0)
    span = hi - lo
    room = size - span
    offset = np.where(room > 0, rng.uniform(0, 1, size=2) * np.maximum(room, 0), room / 2)
    return path - lo + offset


def smooth_curve(rng: np.random.Generator, T: int, lo: float, hi: float, every: int = 8) -> np.ndarray:
    """Key frames every `every` frames with values in [lo, hi], joined by smoothstep (C1, no
    overshoot, so the curve stays inside [lo, hi]). Returns float64 (T,)."""
    if hi <= lo:
        return np.full(T, float(lo))
    n_keys = max(2, math.ceil((T - 1) / every) + 1)
    keys = rng.uniform(lo, hi, size=n_keys)
    u = np.arange(T) * ((n_keys - 1) / (T - 1))
    i = np.minimum(u.astype(int), n_keys - 2)
    f = u - i
    f = f * f * (3 - 2 * f)
    return keys[i] + (keys[i + 1] - keys[i]) * f


def rotation_curve(rng, T, max_speed_deg: float) -> np.ndarray:
    """Angle in degrees (T,): random start, per-frame change bounded by max_speed_deg."""
    speed = smooth_curve(rng, T, -max_speed_deg, max_speed_deg)
    angle = rng.uniform(0, 360) + np.concatenate([[0.0], np.cumsum(speed[1:])])
    return angle


def log_size_curve(rng, T, max_drift: float, log_lo: float, log_hi: float, start: float) -> np.ndarray:
    """Log-size (T,) starting at `start`, per-frame change <= max_drift, clamped to [log_lo, log_hi]."""
    drift = smooth_curve(rng, T, -max_drift, max_drift)
    out = np.empty(T)
    cur = start
    for t in range(T):  # T steps, not pixels: clamping must be sequential to keep |delta| <= drift
        if t:
            cur = min(max(cur + drift[t], log_lo), log_hi)
        out[t] = cur
    return out
