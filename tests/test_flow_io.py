"""Flow files and the colour wheel, checked against readers written here from the formats' specs:
.flo (Middlebury: float32 magic 202021.25, int32 width, int32 height, u v interleaved, little-endian) and
KITTI's 16-bit PNG (R = u*64 + 2^15, G = v*64 + 2^15, B = valid)."""
from __future__ import annotations

import colorsys
import struct

import cv2
import numpy as np
import pytest

from smile_synth.flow_io import (
    flow_to_colour,
    read_flo,
    read_kitti_png,
    wheel_legend,
    write_flo,
    write_kitti_png,
)


def spec_read_flo(path) -> np.ndarray:
    """float32 (H, W, 2) parsed with struct, as the Middlebury spec describes the file."""
    data = open(path, "rb").read()
    magic, width, height = struct.unpack("<fii", data[:12])
    assert magic == 202021.25
    values = struct.unpack(f"<{width * height * 2}f", data[12:])
    assert len(data) == 12 + 8 * width * height
    return np.array(values, np.float32).reshape(height, width, 2)


def spec_read_kitti(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, valid) from a KITTI flow PNG, read with OpenCV (which returns B, G, R)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr.dtype == np.uint16 and bgr.shape[2] == 3
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    return (r.astype(np.float64) - 2 ** 15) / 64, (g.astype(np.float64) - 2 ** 15) / 64, b


def random_flow(H=13, W=17, scale=20.0, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(H, W, 2)) * scale).astype(np.float32)


def test_flo_round_trip_is_exact(tmp_path):
    flow = random_flow()
    write_flo(tmp_path / "a.flo", flow)
    np.testing.assert_array_equal(spec_read_flo(tmp_path / "a.flo"), flow)
    np.testing.assert_array_equal(read_flo(tmp_path / "a.flo"), flow)
    assert not list(tmp_path.glob(".*"))                     # no temporary left behind


def test_flo_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(struct.pack("<fii", 1.0, 2, 2) + bytes(32))
    with pytest.raises(ValueError, match="magic"):
        read_flo(bad)
    bad.write_bytes(struct.pack("<fii", 202021.25, 2, 2) + bytes(8))
    with pytest.raises(ValueError, match="bytes"):
        read_flo(bad)


def test_kitti_round_trip_within_a_64th_of_a_pixel(tmp_path):
    flow = random_flow()
    flow[0, 0] = (600.0, 0.0)                                 # beyond KITTI's +-512 px: stored invalid
    valid = np.random.default_rng(1).random(flow.shape[:2]) > 0.3
    write_kitti_png(tmp_path / "f.png", flow, valid)
    u, v, b = spec_read_kitti(tmp_path / "f.png")
    stored = valid.copy()
    stored[0, 0] = False
    np.testing.assert_array_equal(b, stored.astype(np.uint16))
    assert np.abs(u[stored] - flow[stored, 0]).max() <= 1 / 128 + 1e-9
    assert np.abs(v[stored] - flow[stored, 1]).max() <= 1 / 128 + 1e-9
    bgr = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert not bgr[~stored].any()                             # invalid pixels: all three channels 0
    got, got_valid = read_kitti_png(tmp_path / "f.png")
    np.testing.assert_array_equal(got_valid, stored)
    np.testing.assert_allclose(got[stored], flow[stored], atol=1 / 128)


def hue_degrees(rgb) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))[0] * 360


@pytest.mark.parametrize(("direction", "hues"), [((1, 0), (330, 375)), ((0, 1), (30, 70)),
                                                 ((-1, 0), (150, 210)), ((0, -1), (230, 290))])
def test_colour_wheel_directions(direction, hues):
    """Middlebury's coding: right red, down yellow, left cyan, up blue-violet."""
    flow = np.array(direction, np.float32).reshape(1, 1, 2)
    hue = hue_degrees(flow_to_colour(flow, max_norm=1.0)[0, 0])
    hue = hue + 360 if hue < 30 and hues[0] >= 330 else hue
    assert hues[0] <= hue <= hues[1]


def test_colour_wheel_speed_and_validity():
    speeds = np.linspace(0, 1, 5, dtype=np.float32)
    flow = np.stack([speeds, np.zeros_like(speeds)], -1)[None]          # (1, 5, 2), rightwards
    rgb = flow_to_colour(flow, max_norm=1.0)[0].astype(int)
    np.testing.assert_array_equal(rgb[0], [255, 255, 255])             # still: white
    assert (np.diff(rgb.min(axis=1)) < 0).all()                         # faster: more saturated
    beyond = flow_to_colour(np.array([[[2.0, 0.0]]], np.float32), max_norm=1.0)[0, 0]
    assert beyond.max() < 255                                           # beyond max_norm: darkened
    none = flow_to_colour(flow, max_norm=1.0, valid=np.zeros((1, 5), bool))
    assert not none.any()                                               # undefined: black
    assert (flow_to_colour(np.zeros((3, 4, 4, 2), np.float32)) == 255).all()   # all still, no max: white


def test_wheel_legend_is_white_in_the_middle_and_red_to_the_right():
    legend = wheel_legend(31)
    assert legend.shape == (31, 31, 3) and legend.dtype == np.uint8
    np.testing.assert_array_equal(legend[15, 15], [255, 255, 255])
    assert legend[15, 30, 0] == 255 and legend[15, 30, 1] < 60
    assert not legend[0, 0].any()                                       # outside the wheel
