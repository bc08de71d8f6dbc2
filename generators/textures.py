"""Procedural textures, vectorized: Perlin/fBm noise (2-D and 3-D), 1/f^alpha spectral noise,
IFS fractals, and a palette colouriser. Outputs are float32 in [0, 1] unless said otherwise."""
from __future__ import annotations

import math

import cv2
import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _lattice(n: int, cells: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions of n pixels over `cells` lattice cells -> (cell index, fraction)."""
    x = np.arange(n, dtype=np.float32) * np.float32(cells / n)
    i = x.astype(np.int64)
    return i, x - i


def perlin2d(shape: tuple[int, int], cells: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise (H, W) with `cells` = (cy, cx) lattice cells across the image; about [-0.7, 0.7]."""
    H, W = shape
    cy, cx = cells
    ang = rng.uniform(0, 2 * np.pi, size=(int(math.ceil(cy)) + 2, int(math.ceil(cx)) + 2)).astype(np.float32)
    gx, gy = np.cos(ang), np.sin(ang)
    yi, yf = _lattice(H, cy)
    xi, xf = _lattice(W, cx)
    yi, yf, xi, xf = yi[:, None], yf[:, None], xi[None, :], xf[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gx[yi + dy, xi + dx] * (xf - dx) + gy[yi + dy, xi + dx] * (yf - dy)

    u, v = _fade(xf), _fade(yf)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bot = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return top + v * (bot - top)


def perlin3d(shape: tuple[int, int, int], cells: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise (T, H, W) over a 3-D lattice, so a 2-D texture evolves smoothly in time."""
    T, H, W = shape
    ct, cy, cx = cells
    dims = (int(math.ceil(ct)) + 2, int(math.ceil(cy)) + 2, int(math.ceil(cx)) + 2)
    g = rng.normal(size=dims + (3,)).astype(np.float32)
    g /= np.linalg.norm(g, axis=-1, keepdims=True) + 1e-8
    ti, tf = _lattice(T, ct)
    yi, yf = _lattice(H, cy)
    xi, xf = _lattice(W, cx)
    ti, tf = ti[:, None, None], tf[:, None, None]
    yi, yf = yi[None, :, None], yf[None, :, None]
    xi, xf = xi[None, None, :], xf[None, None, :]

    def corner(dt: int, dy: int, dx: int) -> np.ndarray:
        c = g[ti + dt, yi + dy, xi + dx]
        return c[..., 0] * (tf - dt) + c[..., 1] * (yf - dy) + c[..., 2] * (xf - dx)

    u, v, w = _fade(xf), _fade(yf), _fade(tf)
    out = None
    for dt in (0, 1):
        a = corner(dt, 0, 0)
        a = a + u * (corner(dt, 0, 1) - a)
        b = corner(dt, 1, 0)
        b = b + u * (corner(dt, 1, 1) - b)
        layer = a + v * (b - a)
        out = layer if out is None else out + w * (layer - out)
    return out


def fbm(noise_fn, shape, base_cells, octaves: int, rng, persistence: float = 0.5, lacunarity: float = 2.0,
        px_per_cell: int = 8) -> np.ndarray:
    """Fractal Brownian motion: octaves of `noise_fn` at growing frequency, normalised to [0, 1].

    Each octave is rendered at just enough resolution (`px_per_cell` pixels per lattice cell in
    the last two axes) and upsampled bilinearly, so coarse octaves cost almost nothing."""
    total = np.zeros(shape, np.float32)
    H, W = shape[-2:]
    amp = 1.0
    for o in range(octaves):
        cells = tuple(c * lacunarity**o for c in base_cells)
        h = min(H, max(4, int(math.ceil(cells[-2] * px_per_cell))))
        w = min(W, max(4, int(math.ceil(cells[-1] * px_per_cell))))
        layer = noise_fn(tuple(shape[:-2]) + (h, w), cells, rng)
        if (h, w) != (H, W):
            layer = _upsample(layer, H, W)
        total += np.float32(amp) * layer
        amp *= persistence
    return normalize(total)


def _upsample(x: np.ndarray, H: int, W: int) -> np.ndarray:
    """Bilinear resize of the last two axes of a (h, w) or (T, h, w) float32 array (T <= 512)."""
    if x.ndim == 2:
        return cv2.resize(x, (W, H), interpolation=cv2.INTER_LINEAR)
    out = cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (W, H), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out.reshape(H, W, -1).transpose(2, 0, 1))


def spectral_noise(size: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) noise whose power spectrum falls as 1/f^alpha (alpha=0 white, 2 'brown')."""
    white = rng.normal(size=(size, size)).astype(np.float32)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    f[0, 0] = 1.0 / size
    spec = np.fft.rfft2(white) / f ** (alpha / 2.0)  # amplitude ~ f^(-alpha/2) -> power ~ f^-alpha
    return normalize(np.fft.irfft2(spec, s=(size, size)).astype(np.float32))


def ifs_fractal(size: int, rng: np.random.Generator, n_maps: int | None = None, points: int = 30000, steps: int = 21) -> np.ndarray:
    """Random iterated-function-system fractal rendered by a vectorized chaos game.

    Returns float32 (size, size, 3) in [0, 1], coloured by which map last moved each point."""
    k = int(n_maps or rng.integers(2, 5))
    maps = []
    for _ in range(k):
        s = rng.uniform(0.25, 0.8, size=2) * rng.choice([-1.0, 1.0], size=2)
        a, b = rng.uniform(0, 2 * np.pi, size=2)
        R = lambda t: np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # noqa: E731
        maps.append(R(a) @ np.diag(s) @ R(b))
    A = np.stack(maps)  # (k, 2, 2)
    bvec = rng.uniform(-1, 1, size=(k, 2))
    prob = np.abs(np.linalg.det(A)) + 0.02
    prob /= prob.sum()
    x = rng.uniform(-1, 1, size=(points, 2))
    pos, ids = [], []
    coef = np.concatenate([A.reshape(k, 4), bvec], axis=1)  # (k, 6): a00 a01 a10 a11 b0 b1
    cum = np.cumsum(prob)
    for step in range(steps):
        j = np.minimum(np.searchsorted(cum, rng.random(points) * cum[-1]), k - 1)
        c = coef[j]
        x = np.stack([c[:, 0] * x[:, 0] + c[:, 1] * x[:, 1] + c[:, 4], c[:, 2] * x[:, 0] + c[:, 3] * x[:, 1] + c[:, 5]], axis=1)
        if step >= steps // 3:
            pos.append(x)
            ids.append(j)
    P = np.concatenate(pos)
    J = np.concatenate(ids)
    lo, hi = np.percentile(P, [0.5, 99.5], axis=0)
    span = np.maximum(hi - lo, 1e-6).max()
    centre = (lo + hi) / 2
    ij = ((P - centre) / span * 0.92 + 0.5) * size
    ok = np.all((ij >= 0) & (ij < size), axis=1)
    flat = ij[ok, 1].astype(np.int64) * size + ij[ok, 0].astype(np.int64)
    cols = palette_colors(rng, k)
    img = np.zeros((size * size, 3), np.float32)
    for c in range(3):
        img[:, c] = np.bincount(flat, weights=cols[J[ok], c], minlength=size * size)
    dens = np.bincount(flat, minlength=size * size).astype(np.float32)
    img /= np.maximum(dens, 1)[:, None]
    bright = np.log1p(dens)
    bright /= max(float(bright.max()), 1e-6)
    img = (img * bright[:, None] ** 0.6).reshape(size, size, 3)
    return cv2.GaussianBlur(img, (0, 0), 0.6)


def normalize(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def palette_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random saturated colours, float32 (n, 3) in [0, 1]."""
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(120, 255, n), rng.uniform(140, 255, n)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255.0


def colorize(gray: np.ndarray, rng: np.random.Generator, stops: int | None = None) -> np.ndarray:
    """Map [0, 1] values through a random multi-stop palette -> uint8 (..., 3)."""
    n = int(stops or rng.integers(2, 5))
    cols = palette_colors(rng, n) * rng.uniform(0.3, 1.0, size=(n, 1)).astype(np.float32)
    lut = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, n), cols[:, c]) for c in range(3)], axis=1)
    lut = (lut * 255).astype(np.uint8)
    return lut[(np.clip(gray, 0, 1) * 255).astype(np.uint8)]
