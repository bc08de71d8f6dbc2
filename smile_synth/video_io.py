"""Encoding clips to bytes and back.

The shard codec was chosen by measurement (benchmarks/codec_choice.py, figures in README):
H.264 as a raw Annex-B stream (no container to probe), full-range YCbCr 4:4:4 (no chroma
subsampling, so small coloured objects keep crisp edges), x264 preset `ultrafast`, CRF 20,
no B-frames (decode order = display order). Per-frame JPEG is the faster, 3x larger option.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np


@dataclass(frozen=True)
class Codec:
    name: str = "h264"  # "h264" (libx264 via PyAV) or "jpeg" (per-frame, OpenCV)
    crf: int = 20  # h264 quality, lower is better (0-51)
    preset: str = "ultrafast"
    quality: int = 90  # jpeg quality (1-100)

    @property
    def extension(self) -> str:
        return "h264" if self.name == "h264" else "jpgs"


DEFAULT_CODEC = Codec()
CODECS = {"h264": Codec(), "jpeg": Codec(name="jpeg")}


class H264Encoder:
    """One x264 encoder reused for consecutive clips of one size.

    Opening x264 costs about as much as encoding a 16-frame clip, so a run of clips shares one
    encoder: each clip starts with a forced IDR frame and repeats its SPS/PPS headers, so every
    clip's bytes still decode on their own. Encoder state carries over between clips, so the
    bytes of a clip depend on the clips encoded before it by the same encoder: to keep stored
    data reproducible, start a new encoder at fixed index boundaries (generate does, per segment).
    """

    def __init__(self, width: int, height: int, codec: Codec = DEFAULT_CODEC):
        import av   # here, not at import: code that never encodes or decodes (the GPU study's device) needs no PyAV
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = width, height, "yuvj444p"
        cc.time_base = Fraction(1, 25)
        cc.thread_count = 1
        cc.options = {"crf": str(codec.crf), "preset": codec.preset, "tune": "zerolatency", "forced-idr": "1",
                      "x264-params": "fullrange=on:colormatrix=bt470bg:repeat-headers=1:keyint=infinite:scenecut=0"}
        self.cc, self.pts = cc, 0

    def encode(self, video: np.ndarray) -> bytes:
        """uint8 (T, H, W, 3) RGB -> a self-contained Annex-B H.264 stream."""
        import av
        T, H, W, _ = video.shape
        ycc = cv2.cvtColor(video.reshape(T * H, W, 3), cv2.COLOR_RGB2YCrCb).reshape(T, H, W, 3)  # full-range BT.601
        out = []
        for t in range(T):
            frame = av.VideoFrame(W, H, "yuvj444p")
            y, cr, cb = cv2.split(ycc[t])
            for plane, src in zip(frame.planes, (y, cb, cr)):
                _plane_view(plane)[...] = src
            frame.pts = self.pts
            self.pts += 1
            if t == 0:
                frame.pict_type = av.video.frame.PictureType.I  # IDR: nothing refers back past it
            out += [bytes(p) for p in self.cc.encode(frame)]  # zerolatency: one packet per frame, no delay
        return b"".join(out)


class ClipEncoder:
    """Encodes clips with `codec`, reusing one H.264 encoder per frame size (see H264Encoder)."""

    def __init__(self, codec: Codec = DEFAULT_CODEC):
        self.codec = codec
        self._h264: dict[tuple[int, int], H264Encoder] = {}

    def encode(self, video: np.ndarray) -> bytes:
        if self.codec.name == "jpeg":
            return _encode_jpeg(video, self.codec.quality)
        H, W = video.shape[1:3]
        if (H, W) not in self._h264:
            self._h264[(H, W)] = H264Encoder(W, H, self.codec)
        return self._h264[(H, W)].encode(video)


def _plane_view(p) -> np.ndarray:
    """Zero-copy uint8 (H, W) view of a frame plane (rows may be padded to line_size)."""
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def decode_video(data: bytes, extension: str = "h264") -> np.ndarray:
    """bytes -> uint8 (T, H, W, 3) RGB. Raises ValueError on corrupt or empty data."""
    if extension == "jpgs":
        return _decode_jpeg(data)
    if extension != "h264":
        raise ValueError(f"unknown video extension {extension!r}")
    import av
    frames = []
    try:
        cc = av.CodecContext.create("h264", "r")
        cc.thread_count = 1
        for pkt in cc.parse(data) + cc.parse(None) + [None]:
            for f in cc.decode(pkt):
                if f.format.name not in ("yuvj444p", "yuv444p"):
                    raise ValueError(f"unexpected pixel format {f.format.name}")
                frames.append(cv2.merge([_plane_view(f.planes[i]) for i in (0, 2, 1)]))  # Y Cr Cb
    except (av.FFmpegError, ValueError) as e:
        raise ValueError(f"undecodable video: {e}") from None
    if not frames:
        raise ValueError("video holds no frames")
    ycc = np.stack(frames)
    T, H, W, _ = ycc.shape
    cv2.cvtColor(ycc.reshape(T * H, W, 3), cv2.COLOR_YCrCb2RGB, dst=ycc.reshape(T * H, W, 3))
    return ycc


def _encode_jpeg(video: np.ndarray, quality: int) -> bytes:
    """Frames as length-prefixed JPEGs (uint32 little-endian length, then the bytes)."""
    parts = []
    for f in video:
        _, enc = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        parts += [np.uint32(len(enc)).tobytes(), enc.tobytes()]
    return b"".join(parts)


def _decode_jpeg(data: bytes) -> np.ndarray:
    frames, pos = [], 0
    while pos + 4 <= len(data):
        n = int(np.frombuffer(data, np.uint32, 1, pos)[0])
        if pos + 4 + n > len(data):
            raise ValueError("truncated jpeg frame")
        img = cv2.imdecode(np.frombuffer(data, np.uint8, n, pos + 4), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("undecodable jpeg frame")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        pos += 4 + n
    if not frames or pos != len(data):
        raise ValueError("empty or truncated jpeg clip")
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
