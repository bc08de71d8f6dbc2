"""Background camera motion against its documented settings (generators/recipes.py CameraSpec, generators/
backgrounds.py camera_matrices): pan in px/frame, zoom as |d log zoom| per frame, rotation in deg/frame, all
maximums at the reference size (224 px) and scaled with the clip size, and a view that is a rotated, scaled,
shifted crop (never a mirror or a shear). Only pinned pixel hashes noticed changes here before."""
from __future__ import annotations

import math

import numpy as np
import pytest

from generators.backgrounds import camera_matrices
from generators.recipes import REFERENCE_SIZE, CameraSpec

T, SRC = 16, (300, 400)     # frames, source image (h, w) px
EPS = 1e-9


def views(cam: CameraSpec, size: int, n: int = 60) -> list[np.ndarray]:
    """camera_matrices (T, 2, 3) of n clips: output pixel -> source pixel."""
    return [camera_matrices(np.random.default_rng(s), T, size, SRC, cam) for s in range(n)]


def source_px_per_output_px(M: np.ndarray) -> np.ndarray:
    """(T,) the view's scale: sqrt of the linear part's determinant."""
    return np.sqrt(np.linalg.det(M[:, :, :2]))


def centre_track(M: np.ndarray, size: int) -> np.ndarray:
    """(T, 2) the source point seen at the output's centre."""
    return M @ np.array([size / 2, size / 2, 1.0])


def test_the_view_is_a_rotation_and_scale_never_a_mirror_or_shear():
    for M in views(CameraSpec(prob=1.0, rotation=5.0, zoom=0.02, pan=2.0, shake=1.0), 64, n=20):
        A = M[:, :, :2]
        np.testing.assert_allclose(A[:, 0, 0], A[:, 1, 1], atol=EPS)
        np.testing.assert_allclose(A[:, 0, 1], -A[:, 1, 0], atol=EPS)
        assert (np.linalg.det(A) > 0).all()


def test_a_camera_that_never_moves_holds_one_view():
    for M in views(CameraSpec(prob=0.0, pan=5.0, zoom=0.1, rotation=10.0, shake=3.0), 64, n=10):
        np.testing.assert_array_equal(M, np.broadcast_to(M[:1], M.shape))


def test_prob_is_the_share_of_clips_whose_camera_moves():
    moving = [not np.allclose(M, M[:1]) for M in views(CameraSpec(prob=0.2, pan=2.0), 64, n=300)]
    assert 0.12 <= np.mean(moving) <= 0.28


@pytest.mark.parametrize("size", [64, REFERENCE_SIZE])
def test_pan_moves_up_to_its_speed_in_output_px_scaled_with_the_size(size):
    pan = 3.0
    limit = pan * size / REFERENCE_SIZE
    speeds = []
    for M in views(CameraSpec(prob=1.0, pan=pan, zoom=0.0, rotation=0.0, shake=0.0), size):
        step = np.linalg.norm(np.diff(centre_track(M, size), axis=0), axis=1) / source_px_per_output_px(M)[1:]
        np.testing.assert_allclose(step, step[0], rtol=1e-9, atol=EPS)       # a steady pan
        speeds.append(step[0])
    assert max(speeds) <= limit * (1 + 1e-9)
    assert max(speeds) >= 0.9 * limit and min(speeds) <= 0.1 * limit     # the whole range [0, pan] is used


def test_zoom_changes_log_scale_by_up_to_its_rate_per_frame():
    zoom = 0.02
    rates = []
    for M in views(CameraSpec(prob=1.0, pan=0.0, zoom=zoom, rotation=0.0, shake=0.0), 64):
        d = np.diff(np.log(source_px_per_output_px(M)))
        np.testing.assert_allclose(d, d[0], atol=1e-12)
        rates.append(abs(d[0]))
    assert max(rates) <= zoom + EPS and max(rates) >= 0.9 * zoom


def test_rotation_turns_by_up_to_its_rate_per_frame_both_ways():
    rotation = 2.0
    rates = []
    for M in views(CameraSpec(prob=1.0, pan=0.0, zoom=0.0, rotation=rotation, shake=0.0), 64):
        angle = np.degrees(np.unwrap(np.arctan2(M[:, 1, 0], M[:, 0, 0])))
        d = np.diff(angle)
        np.testing.assert_allclose(d, d[0], atol=1e-9)
        rates.append(d[0])
    assert max(np.abs(rates)) <= rotation + 1e-9
    assert max(rates) >= 0.9 * rotation and min(rates) <= -0.9 * rotation


def test_the_view_stays_a_crop_of_the_source_at_frame_0():
    """crop (0.6, 1.0): the view covers that share of the source's shorter side, centred inside the source."""
    size = 64
    for M in views(CameraSpec(prob=1.0, pan=2.0, zoom=0.01, rotation=1.0), size, n=30):
        side = source_px_per_output_px(M)[0] * size
        assert 0.6 * min(SRC) - EPS <= side <= min(SRC) + EPS
        x, y = centre_track(M, size)[0]
        assert side / 2 - EPS <= x <= SRC[1] - side / 2 + EPS and side / 2 - EPS <= y <= SRC[0] - side / 2 + EPS
        assert math.isfinite(side)
