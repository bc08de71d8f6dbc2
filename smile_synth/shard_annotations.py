"""A clip's flow and track annotations as shard members (the layout is in shards.py's docstring).

Flow is stored as float16, losslessly for that type: steps of at most 1/1024 px below 1 px of motion per frame,
1/64 px below 32 px, 1/32 px below 64 px (as fine as KITTI's 1/64 px or finer below 32 px). Tracks keep float32: a point 200 px from the origin
would move in float16 steps of 1/8 px.
"""
from __future__ import annotations

import io
import zlib

import numpy as np

from .clip import Clip

FLOW_MEMBER = "flow.zlib"
TRACKS_MEMBER = "tracks.zlib"
ANNOTATION_MEMBERS = {"flow": FLOW_MEMBER, "tracks": TRACKS_MEMBER}
LEVEL = 6            # zlib level: flow members ~25% smaller than at 1 for 2-3x the time; written once, read often
FLOW_MASKS = ("flow_valid", "flow_back_valid", "occluded")


def annotation_members(clip: Clip) -> dict[str, bytes]:
    """{member extension: bytes} of the annotations `clip` carries; {} for a plain clip."""
    members = {}
    if clip.flow is not None:
        bits = np.packbits(np.stack([getattr(clip, name) for name in FLOW_MASKS]))
        members[FLOW_MEMBER] = zlib.compress(flow_bytes(np.stack([clip.flow, clip.flow_back])) + bits.tobytes(), LEVEL)
    if clip.tracks is not None:
        buf = io.BytesIO()
        np.save(buf, clip.tracks.astype("<f4"), allow_pickle=False)
        members[TRACKS_MEMBER] = zlib.compress(buf.getvalue() + np.packbits(clip.track_visible).tobytes(), LEVEL)
    return members


def flow_bytes(flow: np.ndarray) -> bytes:
    """float (..., H, W, 2) flow -> bytes that zlib packs tightly: float16 bit patterns, one plane per
    channel, each row stored as its first value and then differences to the previous value (mod 2^16:
    an object's affine field is nearly linear along a row, so these repeat), then every high byte before
    every low byte. Lossless for float16 values."""
    bits = np.ascontiguousarray(np.moveaxis(flow.astype("<f2"), -1, -3)).view("<u2")   # (..., 2, H, W)
    deltas = bits.copy()
    deltas[..., 1:] -= bits[..., :-1]                                      # uint16: wraps mod 2^16
    return deltas.view(np.uint8).reshape(-1, 2)[:, ::-1].T.tobytes()


def flow_from_bytes(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of flow_bytes: float32 `shape` (..., H, W, 2) from its bytes."""
    *lead, H, W, C = shape
    planes = np.frombuffer(data, np.uint8).reshape(2, -1)                 # high bytes, low bytes
    deltas = np.ascontiguousarray(planes[::-1].T).view("<u2").reshape(*lead, C, H, W)
    bits = np.cumsum(deltas, axis=-1, dtype=np.uint16)                     # wraps back mod 2^16
    return np.moveaxis(bits.view("<f2"), -3, -1).astype(np.float32)


def decode_annotations(sample: dict[str, bytes], T: int, H: int, W: int) -> dict[str, np.ndarray]:
    """The Clip fields stored in `sample` (a T-frame H x W clip): {} when it has none.
    ValueError when a member does not hold what its shape needs."""
    fields = {}
    if FLOW_MEMBER in sample:
        data = zlib.decompress(sample[FLOW_MEMBER])
        n = (T - 1) * H * W * 2                                            # values per flow field
        nbits = 3 * (T - 1) * H * W
        need = 2 * 2 * n + -(-nbits // 8)                                  # two float16 fields, then the bits
        if len(data) != need:
            raise ValueError(f"{FLOW_MEMBER} holds {len(data)} bytes, a {T}x{H}x{W} clip's flow needs {need}")
        fields["flow"], fields["flow_back"] = flow_from_bytes(data[:4 * n], (2, T - 1, H, W, 2))
        masks = np.unpackbits(np.frombuffer(data, np.uint8, offset=4 * n), count=nbits).view(bool)
        for name, mask in zip(FLOW_MASKS, masks.reshape(3, T - 1, H, W)):
            fields[name] = mask
    if TRACKS_MEMBER in sample:
        buf = io.BytesIO(zlib.decompress(sample[TRACKS_MEMBER]))
        tracks = np.load(buf, allow_pickle=False)
        if tracks.dtype != np.float32 or tracks.ndim != 3 or tracks.shape[1:] != (T, 2):
            raise ValueError(f"{TRACKS_MEMBER} holds {tracks.dtype} {tracks.shape}, expected float32 (N, {T}, 2)")
        N = tracks.shape[0]
        bits = np.frombuffer(buf.read(), np.uint8)
        if bits.size != -(-N * T // 8):
            raise ValueError(f"{TRACKS_MEMBER} holds {bits.size * 8} visibility bits, expected {N * T}")
        fields["tracks"] = tracks
        fields["track_visible"] = np.unpackbits(bits, count=N * T).view(bool).reshape(N, T)
    return fields


def annotations_of(sample: dict[str, bytes]) -> tuple[str, ...]:
    """The annotation names a stored sample carries, e.g. ("flow", "tracks"), without decoding them."""
    return tuple(name for name, member in ANNOTATION_MEMBERS.items() if member in sample)
