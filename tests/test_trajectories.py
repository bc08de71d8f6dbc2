"""Object paths and pose curves: finite, inside the frame where promised, within the recipe's speed
limits, and moving as fast and as wide as the recipe says (lower bounds: speed, radius, rotation)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from smile_synth.errors import UserError
from conftest import recipe, tracks_of

from generators import render_clip
from generators.recipes import MotionSpec
from generators.trajectories import (
    TRAJECTORIES,
    gaussian_path,
    log_size_curve,
    object_path,
    place_in_frame,
    rotation_curve,
    smooth_curve,
)

LENGTHS = [2, 3, 16, 33, 64]
KINDS = [*TRAJECTORIES, "circular+constant_velocity"]
EPS = 1e-9


def rngs(n: int, base: int = 0):
    return [np.random.default_rng(base + s) for s in range(n)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", LENGTHS)
def test_object_path_is_finite_with_one_centre_per_frame(kind, T):
    m = MotionSpec()
    for rng in rngs(20):
        path = object_path(kind, rng, T, m, 224.0)
        assert path.shape == (T, 2)
        assert path.dtype == np.float64
        assert np.isfinite(path).all()


def test_a_registered_trajectory_is_usable_in_recipes():
    """Extending: one function plus one registration, and recipes (and their validation) accept it."""
    from generators import get_recipe, render_clip
    from generators import trajectories as tr

    with pytest.raises(UserError, match="unknown kind 'zigzag'"):
        get_recipe("black+objects", ["motion.trajectories={zigzag: 1}"])

    @tr.register_trajectory("zigzag")
    def zigzag(rng, T, m, size):
        return np.stack([np.arange(T) * 3.0, (np.arange(T) % 2) * 5.0], axis=1)

    try:
        r = get_recipe("black+objects", ["motion.trajectories={zigzag: 1}"])
        clip = render_clip(r, 0, 0, frames=4, size=64)
        assert {o["trajectory"] for o in clip.meta["objects"]} == {"zigzag"}
    finally:
        del tr.TRAJECTORIES["zigzag"]   # leave the registry as the other tests expect it


@pytest.mark.parametrize("T", [*LENGTHS, 20, 39])
def test_gaussian_path_extent_is_within_the_recipe_extent(T):
    m = MotionSpec()  # gaussian_points=20
    lo, hi = m.extent
    for rng in rngs(100):
        extent = np.ptp(gaussian_path(rng, T, m, 224.0), axis=0).max()
        assert extent <= hi * (1 + EPS)
        if (T - 1) % (m.gaussian_points - 1) == 0:  # every smoothed point is a frame: the full extent shows
            assert extent >= lo * (1 - EPS)


def test_gaussian_path_uses_the_whole_extent_range():
    m = MotionSpec(extent=(10.0, 20.0))
    extents = [np.ptp(gaussian_path(rng, 20, m, 224.0), axis=0).max() for rng in rngs(200)]
    assert min(extents) >= 10 - EPS and max(extents) <= 20 + EPS
    assert min(extents) < 11 and max(extents) > 19


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", LENGTHS)
def test_paths_smaller_than_the_frame_are_placed_inside_it(kind, T):
    m = MotionSpec().scaled(64 / 224)
    size = 64.0
    placed = 0
    for rng in rngs(40):
        path = object_path(kind, rng, T, m, size)
        if np.ptp(path, axis=0).max() < size:
            assert path.min() >= -EPS and path.max() <= size + EPS, kind
            placed += 1
    assert placed > 0


def test_place_in_frame_contains_small_paths_and_centres_large_ones():
    size = 50.0
    for rng in rngs(50):
        raw = rng.normal(0, 10, size=(30, 2)) + rng.uniform(-500, 500, size=2)
        raw *= 40 / max(np.ptp(raw, axis=0).max(), 1e-9)  # extent 40 < size
        path = place_in_frame(raw, rng, size)
        assert path.min() >= -EPS and path.max() <= size + EPS
        np.testing.assert_allclose(np.diff(path, axis=0), np.diff(raw, axis=0))  # a translation
        big = raw * 3  # extent 120 > size: centred on the frame
        placed = place_in_frame(big, rng, size)
        np.testing.assert_allclose((placed.min(axis=0) + placed.max(axis=0)) / 2, size / 2)


@pytest.mark.parametrize("T", LENGTHS)
def test_bouncing_stays_in_the_frame(T):
    m = MotionSpec(speed=(20.0, 60.0))  # fast, so it bounces several times
    size = 64.0
    for rng in rngs(40):
        path = object_path("bouncing", rng, T, m, size)
        assert path.min() >= -EPS and path.max() <= size + EPS


def test_bouncing_actually_bounces():
    m = MotionSpec(speed=(30.0, 30.0))
    path = object_path("bouncing", np.random.default_rng(0), 64, m, 64.0)
    steps = np.abs(np.diff(path, axis=0))
    assert (np.sign(np.diff(path[:, 0]))[:-1] != np.sign(np.diff(path[:, 0]))[1:]).any()  # reverses
    assert steps.max() <= 30 + EPS


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("max_speed", [0.0, 0.5, 6.0, 45.0])
def test_rotation_speed_is_bounded(T, max_speed):
    for rng in rngs(30):
        angle = rotation_curve(rng, T, max_speed)
        assert angle.shape == (T,) and np.isfinite(angle).all()
        assert np.abs(np.diff(angle)).max(initial=0) <= max_speed + EPS


@pytest.mark.parametrize("T", LENGTHS)
def test_log_size_drift_is_bounded_and_clamped(T):
    lo, hi, drift = math.log(10), math.log(40), 0.3  # large drift, so the clamps are hit
    for rng in rngs(30):
        start = rng.uniform(lo, hi)
        curve = log_size_curve(rng, T, drift, lo, hi, start)
        assert curve.shape == (T,) and curve[0] == start
        assert np.abs(np.diff(curve)).max(initial=0) <= drift + EPS
        assert curve.min() >= lo - EPS and curve.max() <= hi + EPS


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.7, 1.0), (2.0, 2.0), (-0.15, 0.15)])
def test_smooth_curve_stays_in_range(T, lo, hi):
    for rng in rngs(30):
        c = smooth_curve(rng, T, lo, hi)
        assert c.shape == (T,) and np.isfinite(c).all()
        assert c.min() >= lo - EPS and c.max() <= hi + EPS


# ---- the objects of rendered clips -----------------------------------------------------------

@pytest.mark.parametrize("name", ["black+objects", "mixed"])
def test_rendered_objects_respect_the_recipe_speed_limits(name):
    r = recipe(name)
    m = r.motion
    assert m.rotation_speed == 6.0 and m.scale_drift == 0.025  # the defaults this test is about
    frames, size = 16, 64
    seen = 0
    for index in range(12):
        clip = render_clip(r, 0, index, frames, size)
        tracks = tracks_of(r, 0, index, frames, size)
        # the same objects render_clip drew
        assert [(t.category, t.trajectory, t.source) for t in tracks] == \
            [(o["category"], o["trajectory"], o["source"]) for o in clip.meta["objects"]]
        for tr in tracks:
            assert np.abs(np.diff(tr.angle)).max() <= 6.0 + EPS
            assert np.abs(np.diff(np.log(tr.scale))).max() <= 0.025 + EPS
            assert np.isfinite(tr.centres).all() and tr.centres.shape == (frames, 2)
            assert ((tr.opacity >= m.opacity[0] - EPS) & (tr.opacity <= m.opacity[1] + EPS)).all()
            assert (np.abs(tr.shear) <= m.shear + EPS).all()
            assert (tr.scale <= 1 + EPS).all()  # sprites are only ever shrunk
            seen += 1
    assert seen >= 12


# ---- lower bounds: a path given speed s moves about s px per frame, a circle of radius r keeps r -------------

def step_lengths(path: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(path, axis=0), axis=1)


@pytest.mark.parametrize("kind", ["constant_velocity", "bouncing", "sinusoidal", "accelerating"])
@pytest.mark.parametrize("speed", [0.5, 3.0, 12.0])
def test_a_path_given_one_speed_moves_that_many_px_per_frame(kind, speed):
    """No amplitude or acceleration: each of these paths is a drift at `speed` px/frame (bouncing: except the
    frames where it meets a wall, which only shorten a step)."""
    m = MotionSpec(speed=(speed, speed), amplitude=(0.0, 0.0), accel=(0.0, 0.0))
    for rng in rngs(10):
        steps = step_lengths(object_path(kind, rng, 32, m, 64.0))
        assert steps.max() <= speed * (1 + 1e-9)
        straight = np.abs(steps - speed) <= 1e-9 * speed
        assert straight.all() if kind != "bouncing" else straight.mean() >= 0.6, (kind, steps)


@pytest.mark.parametrize("kind", ["constant_velocity", "bouncing"])
def test_speeds_cover_the_recipe_range(kind):
    m = MotionSpec(speed=(2.0, 8.0))
    speeds = [np.median(step_lengths(object_path(kind, rng, 8, m, 64.0))) for rng in rngs(100)]
    assert min(speeds) >= 2 - EPS and max(speeds) <= 8 + EPS
    assert min(speeds) < 2.6 and max(speeds) > 7.4


def test_accelerating_changes_speed_by_the_given_acceleration():
    m = MotionSpec(speed=(4.0, 4.0), accel=(0.3, 0.3))
    for rng in rngs(10):
        path = object_path("accelerating", rng, 12, m, 224.0)
        np.testing.assert_allclose(np.linalg.norm(np.diff(path, 2, axis=0), axis=1), 0.3, rtol=1e-9)
        assert step_lengths(path)[0] == pytest.approx(4.0, abs=0.3 / 2 + 1e-9)


@pytest.mark.parametrize("radius", [5.0, 20.0, 60.0])
def test_a_circular_path_keeps_its_radius_and_angular_speed(radius):
    m = MotionSpec(radius=(radius, radius), angular_speed=(10.0, 10.0))
    for rng in rngs(10):
        path = object_path("circular", rng, 36, m, 224.0)      # 36 x 10 deg: one whole turn
        centre = path.mean(axis=0)                             # equally spaced around the circle
        np.testing.assert_allclose(np.linalg.norm(path - centre, axis=1), radius, rtol=1e-9)
        np.testing.assert_allclose(step_lengths(path), 2 * radius * math.sin(math.radians(10.0) / 2), rtol=1e-9)


def test_circular_radii_cover_the_recipe_range():
    m = MotionSpec(radius=(10.0, 40.0), angular_speed=(10.0, 10.0))
    radii = []
    for rng in rngs(60):
        path = object_path("circular", rng, 36, m, 224.0)
        r = np.linalg.norm(path - path.mean(axis=0), axis=1)   # an ellipse: its radii lie between its semi-axes
        radii += [r.min(), r.max()]
    assert min(radii) >= 10 - 1e-6 and max(radii) <= 40 + 1e-6
    assert min(radii) < 13 and max(radii) > 37


@pytest.mark.parametrize("max_speed", [0.5, 6.0, 45.0])
def test_rotation_reaches_its_speed_limit_both_ways(max_speed):
    turns = np.concatenate([np.diff(rotation_curve(rng, 64, max_speed)) for rng in rngs(30)])
    assert turns.max() >= 0.9 * max_speed and turns.min() <= -0.9 * max_speed
    assert np.abs(turns).mean() >= 0.25 * max_speed


def test_rendered_objects_move_and_turn_at_the_recipe_speeds():
    """Through make_tracks: speeds are px/frame at 224 px, scaled with the clip size."""
    size = 112
    r = recipe("black+objects", "motion.trajectories={constant_velocity: 1}", "motion.speed=[6, 6]",
               "motion.rotation_speed=12")
    turns = []
    for index in range(4):
        for tr in tracks_of(r, 0, index, 16, size):
            np.testing.assert_allclose(step_lengths(tr.centres), 6 * size / 224, rtol=1e-9)
            turns.append(np.abs(np.diff(tr.angle)))
    turns = np.concatenate(turns)
    assert turns.max() <= 12 + EPS and turns.max() >= 0.8 * 12
