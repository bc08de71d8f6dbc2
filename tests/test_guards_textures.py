"""Procedural textures against their documented properties (generators/textures.py); before these, only the
pinned pixel hashes noticed a change here.

- Perlin gradient noise: zero on the lattice, continuous, and smooth across cell borders (the quintic fade
  makes the slope continuous there).
- Spectral noise: power falls as 1/f^alpha.
- palette_colors: saturated, bright colours (HSV saturation >= 120, value >= 140 of 255).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from generators.textures import palette_colors, perlin2d, perlin3d, spectral_noise

CELL = 16    # px per lattice cell below: 64 px over 4 cells


def perlin_images() -> list[np.ndarray]:
    """2-D images: perlin2d ones and slices of perlin3d volumes, all 64 x 64 px over 4 x 4 cells."""
    flat = [perlin2d((64, 64), (4, 4), np.random.default_rng(s)) for s in range(4)]
    volumes = [perlin3d((8, 64, 64), (2, 4, 4), np.random.default_rng(s)) for s in range(2)]
    return flat + [v[t] for v in volumes for t in (0, 4)]         # slices on the time lattice (2 cells of 4)


def test_perlin_noise_is_zero_on_the_lattice():
    for img in perlin_images():
        assert np.abs(img[::CELL, ::CELL]).max() < 1e-6


def test_perlin_noise_is_continuous_and_smooth_across_cell_borders():
    """Neighbours differ by a small step everywhere, and the step itself changes slowly: a value jump or a
    kink at a cell border (a linear fade) shows in the first or second differences."""
    for img in perlin_images():
        for axis in (0, 1):
            assert np.abs(np.diff(img, axis=axis)).max() < 0.25
            assert np.abs(np.diff(img, 2, axis=axis)).max() < 0.06


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_spectral_noise_power_falls_as_one_over_f_to_the_alpha(alpha):
    size = 128
    power = 0
    for s in range(4):
        noise = spectral_noise(size, alpha, np.random.default_rng(s))
        assert noise.dtype == np.float32 and noise.min() == 0 and noise.max() == 1
        power = power + np.abs(np.fft.rfft2(noise - noise.mean())) ** 2
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
    band = (f > 2 / size) & (f < 0.4)
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.15)


def test_palette_colours_are_saturated_and_bright():
    rgb = palette_colors(np.random.default_rng(0), 500)
    assert rgb.shape == (500, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    hsv = cv2.cvtColor(np.round(rgb * 255).astype(np.uint8)[None], cv2.COLOR_RGB2HSV)[0].astype(int)
    assert hsv[:, 1].min() >= 115 and hsv[:, 2].min() >= 138          # rounding through RGB costs a few levels
    assert np.ptp(hsv[:, 0]) > 150                                    # and every hue
