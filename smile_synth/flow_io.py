"""Optical-flow files and pictures: Middlebury .flo, KITTI 16-bit PNG, and the Middlebury colour wheel.

Flow here is float32 (H, W, 2), (u, v) = (dx, dy) in pixels, as on `Clip.flow[t]`.

.flo (Middlebury, Baker et al. 2011): little-endian float32 magic 202021.25, int32 width, int32 height,
then H*W*2 float32, row-major, u and v interleaved. It holds no validity: `write_flo` stores what it is
given (callers write 0 where the flow is undefined, and the mask beside it).

KITTI flow PNG (Geiger et al. 2012): 16-bit, 3 channels in R, G, B order: R = u * 64 + 2^15, G = v * 64 + 2^15,
B = 1 where the flow is valid, 0 where not (all three 0 there). So u and v are stored to 1/64 px within
[-512, 512 - 1/64]; pixels outside that range are written as invalid. OpenCV's imwrite/imread use B, G, R
order: these functions swap, so the file is in KITTI's order.
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from .atomic import write_bytes_atomic

FLO_MAGIC = 202021.25
FLO_HEADER = struct.Struct("<fii")          # magic, width, height
KITTI_SCALE = 64.0                          # stored units per pixel
KITTI_OFFSET = 2 ** 15                      # stored value of zero flow
FLO_MAX_SIDE = 1 << 16                      # a larger header is not a flow file: refuse before allocating


# ---- Middlebury .flo ----------------------------------------------------------------------

def flo_bytes(flow: np.ndarray) -> bytes:
    """float (H, W, 2) (u, v) px -> the bytes of a .flo file."""
    _check_flow(flow)
    H, W = flow.shape[:2]
    return FLO_HEADER.pack(FLO_MAGIC, W, H) + np.ascontiguousarray(flow, "<f4").tobytes()


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write float (H, W, 2) flow as a Middlebury .flo file, whole or not at all."""
    write_bytes_atomic(path, flo_bytes(flow))


def read_flo(path: str | Path) -> np.ndarray:
    """float32 (H, W, 2) from a .flo file; ValueError naming the file when it is not one."""
    data = Path(path).read_bytes()
    if len(data) < FLO_HEADER.size:
        raise ValueError(f"{path}: {len(data)} bytes, too short for a .flo header")
    magic, W, H = FLO_HEADER.unpack_from(data)
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: magic {magic!r}, not {FLO_MAGIC} (not a .flo file)")
    if not (0 < W <= FLO_MAX_SIDE and 0 < H <= FLO_MAX_SIDE):
        raise ValueError(f"{path}: header says {W}x{H} pixels")
    need = FLO_HEADER.size + H * W * 2 * 4
    if len(data) != need:
        raise ValueError(f"{path}: {len(data)} bytes, a {W}x{H} .flo has {need}")
    return np.frombuffer(data, "<f4", offset=FLO_HEADER.size).reshape(H, W, 2).astype(np.float32)


# ---- KITTI 16-bit PNG ---------------------------------------------------------------------

def kitti_array(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float (H, W, 2) flow px and bool (H, W) valid -> uint16 (H, W, 3) R, G, B as KITTI stores them.
    Pixels whose flow does not fit KITTI's range are written invalid."""
    _check_flow(flow)
    stored = np.rint(flow * KITTI_SCALE) + KITTI_OFFSET                          # (H, W, 2)
    ok = valid & np.isfinite(stored).all(-1) & ((stored >= 0) & (stored <= 0xFFFF)).all(-1)
    out = np.zeros(flow.shape[:2] + (3,), np.uint16)
    out[ok, :2] = stored[ok]
    out[ok, 2] = 1
    return out


def kitti_png_bytes(flow: np.ndarray, valid: np.ndarray) -> bytes:
    """The bytes of a KITTI flow PNG (see kitti_array)."""
    rgb = kitti_array(flow, valid)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))      # OpenCV writes B, G, R
    if not ok:
        raise ValueError("OpenCV could not encode the KITTI flow PNG")
    return png.tobytes()


def write_kitti_png(path: str | Path, flow: np.ndarray, valid: np.ndarray) -> None:
    """Write flow and validity as a KITTI 16-bit flow PNG, whole or not at all."""
    write_bytes_atomic(path, kitti_png_bytes(flow, valid))


def read_kitti_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (H, W, 2) flow px, bool (H, W) valid) from a KITTI flow PNG; flow is 0 where not valid."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[2] != 3:
        what = "unreadable" if bgr is None else f"{bgr.dtype} with shape {bgr.shape}"
        raise ValueError(f"{path}: {what}, not a 16-bit 3-channel KITTI flow PNG")
    rgb = bgr[..., ::-1]
    valid = rgb[..., 2] > 0
    flow = (rgb[..., :2].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    flow[~valid] = 0
    return flow, valid


def _check_flow(flow: np.ndarray) -> None:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got shape {flow.shape}")


# ---- the colour wheel ---------------------------------------------------------------------

# Baker et al.'s wheel: hue segments red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta,
# magenta-red, with these many steps each (chosen there to be perceptually even).
WHEEL_SEGMENTS = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                  (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                  (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))


def colour_wheel() -> np.ndarray:
    """float32 (55, 3) RGB in [0, 1]: the wheel's colours in order, red first."""
    parts = [np.array(a, np.float32) + (np.array(b, np.float32) - a) * (np.arange(n)[:, None] / n)
             for n, a, b in WHEEL_SEGMENTS]
    return np.concatenate(parts) / 255.0


WHEEL = colour_wheel()
MIN_NORM = 0.01   # px: a field slower than this everywhere is drawn as still (white), not saturated rounding noise


def flow_to_colour(flow: np.ndarray, max_norm: float | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """float (..., H, W, 2) flow px -> uint8 (..., H, W, 3) RGB in the Middlebury colour coding.

    Hue is the direction (right red, down yellow-orange, left cyan, up blue-violet), saturation the speed
    relative to `max_norm` px (default: the largest speed in `flow`, at least MIN_NORM): zero flow is white,
    speeds beyond max_norm are darkened. Pixels where `valid` (bool (..., H, W)) is False are black."""
    u, v = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    speed = np.hypot(u, v)
    if max_norm is None:
        shown = speed if valid is None else speed[valid]
        max_norm = max(float(shown.max()) if shown.size else 0.0, MIN_NORM)
    rad = speed / max(max_norm, 1e-9)
    n = len(WHEEL)
    pos = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (n - 1)   # angle -> position on the wheel, in [0, n - 1]
    k0 = np.floor(pos).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (pos - k0)[..., None]
    colour = (1 - f) * WHEEL[k0] + f * WHEEL[k1]                # (..., H, W, 3) in [0, 1]
    inside = (rad <= 1)[..., None]
    colour = np.where(inside, 1 - rad[..., None] * (1 - colour), colour * 0.75)
    out = np.rint(255 * colour).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out


def wheel_legend(side: int) -> np.ndarray:
    """uint8 (side, side, 3): the colour of each direction and speed, the centre being zero flow and the
    rim max_norm; corners outside the wheel black."""
    c = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    flow = np.stack([x - c, y - c], axis=-1)                   # each pixel's offset from the centre
    return flow_to_colour(flow, max_norm=c, valid=np.hypot(x - c, y - c) <= c)
