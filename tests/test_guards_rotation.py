"""Object rotation has a documented direction (generators/objects.py ObjectTrack.angle, generators/compositor.py
sprite_matrices): degrees, counter-clockwise on screen. An asymmetric sprite shows it: a marker drawn right of
the sprite's centre must appear above the centre at +90 degrees, below it at -90, left of it at 180."""
from __future__ import annotations

import math

import numpy as np
import pytest

from generators.compositor import composite
from generators.objects import ObjectTrack

ANGLES = [0.0, 30.0, 90.0, 135.0, 180.0, -90.0, -45.0]
SIZE, CENTRE = 64, 32.0


def marker_sprite() -> np.ndarray:
    """uint8 (15, 15, 4) RGBA: transparent but for an opaque 4 x 3 px marker right of the centre (7, 7)."""
    sprite = np.zeros((15, 15, 4), np.uint8)
    sprite[6:9, 11:15] = 255
    return sprite


def on_screen_angles(angles: list[float]) -> list[float]:
    """Where the marker shows, as the angle in degrees of (centroid - centre) with y pointing up."""
    T = len(angles)
    track = ObjectTrack(sprite=marker_sprite(), centres=np.full((T, 2), CENTRE), angle=np.array(angles),
                        scale=np.ones(T), shear=np.zeros(T), opacity=np.ones(T), category="marker",
                        trajectory="still", source="test")
    _, masks, _ = composite(np.zeros((T, SIZE, SIZE, 3), np.uint8), [track])
    seen = []
    for t in range(T):
        ys, xs = np.nonzero(masks[0, t])
        assert len(xs) >= 6, f"marker not drawn at {angles[t]} deg"
        seen.append(math.degrees(math.atan2(-(ys.mean() - CENTRE), xs.mean() - CENTRE)))
    return seen


def test_a_positive_angle_turns_the_sprite_counter_clockwise_on_screen():
    for want, got in zip(ANGLES, on_screen_angles(ANGLES)):
        off = (got - want + 180) % 360 - 180
        assert abs(off) < 3, f"angle {want} deg shows the marker at {got:.1f} deg (counter-clockwise, y up)"


@pytest.mark.parametrize("angle,where", [(90.0, "above"), (-90.0, "below")])
def test_a_quarter_turn_moves_a_right_hand_marker_up_or_down(angle, where):
    got = on_screen_angles([angle])[0]
    assert (got > 45) if where == "above" else (got < -45), got
