"""Decoding frames of one video with PyAV: frame counts, cached whole decodes, seeking partial decodes.

Problems with one video (missing, unreadable, too short, zero-size frames) raise ``BadVideo`` naming
the file and the reason; the trainer skips and counts these. A file cut short whose index survives
(moov at the front) reads as the frames before the cut.

Speed: a video whose decoded frames fit a share of the per-process cache (``cache.CACHE``, budget
``CACHE_BYTES`` by default) is decoded once, downscaled, and kept, so later requests cost only
indexing. Larger videos are decoded partially: seek to the keyframe before the first needed frame,
stop after the last one.

Exactness: both ways return the same pictures as a decode from the first frame, bit for bit. After a
seek, frames are matched to the container's timestamps (packets before an edit list's start left out);
only frames from the keyframe landed on are taken (an open GOP's leading pictures reference the GOP
before); and a landing counts only if the decoder decodes that packet as a keyframe. Files whose
flagged keyframes are not (x264 intra refresh, some cameras: P-frames that start a gradual refresh,
which decode green after a seek) are detected at their first seek and from then on decoded from the
first frame.
"""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .cache import CACHE

SEEK_MIN_FRAMES = 8  # seek only when the first needed frame is at least this far in (else decode from 0)
SEEK_TRIES = 4  # seek points tried, from the last before the first needed frame backwards, when landings are late

# One OpenCV thread per process, like `generators` sets: parallelism comes from DataLoader workers, and
# a parent whose OpenCV pool has started deadlocks forked children that touch it. Skip the call when
# it is already 1 (calling it in such a child is what hangs).
if cv2.getNumThreads() != 1:
    cv2.setNumThreads(1)


class BadVideo(Exception):
    """A sample that cannot be used (unreadable, truncated, too short, missing, zero-size frames).

    The trainer skips and counts these; the message says which file and why."""


class TooFewFrames(BadVideo):
    """Decoding reached the end before a needed frame; `length` is the true number of frames."""

    def __init__(self, message: str, length: int):
        super().__init__(message)
        self.length = length


def _file_key(path: Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size): a rewritten file gets a new key. Missing / empty / odd files -> BadVideo."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadVideo(f"{path}: file not found") from None
    except OSError as e:
        raise BadVideo(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadVideo(f"{path}: not a regular file")
    if st.st_size == 0:
        raise BadVideo(f"{path}: empty file (0 bytes)")
    return str(path), st.st_mtime_ns, st.st_size


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What reading a video can raise. PyAV is imported when a video is read, not when this module is: code
    that lists videos or reads decoded arrays (the GPU study on its device) needs no PyAV. An except
    clause evaluates this only once an exception is raised, after PyAV was imported to read."""
    import av
    return (av.error.FFmpegError, OSError, EOFError, ValueError, RuntimeError, IndexError, cv2.error)


@contextmanager
def _bad_video(path: Path):
    """Turn library errors while reading `path` into BadVideo naming the file and the reason."""
    try:
        yield
    except BadVideo:
        raise
    except _decode_errors() as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadVideo(f"{path}: cannot decode ({type(e).__name__}: {reason})") from e


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise BadVideo(f"{path}: no video stream")
    return container.streams.video[0]


def _open(path: Path):
    """(container, first video stream), decoding on one thread: parallelism comes from DataLoader worker
    processes, and PyAV's default (slice threads, one per core) measured no faster on 2 cores while
    oversubscribing the workers' cores."""
    import av
    container = av.open(str(path))
    try:
        s = _video_stream(container, path)
        s.thread_type, s.codec_context.thread_count = "NONE", 1
    except BaseException:
        container.close()
        raise
    return container, s


def decoded_frames(container, s):
    """container.decode(s), ending at the first decode error that follows a good frame.

    A file cut short (an interrupted download with its index at the front) or with a damaged tail then
    reads as a shorter video instead of a lost one; an error before any frame still raises."""
    import av
    frames = container.decode(s)
    good = False
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (av.error.FFmpegError, EOFError, ValueError):
            if not good:
                raise
            return
        good = True
        yield frame


def video_length(path: Path) -> int:
    """Number of decodable frames of `path`.

    The container's frame count when it has one (> 0), else decoded to count. Cached per process by
    (path, mtime, size); a full decode that finds a different count corrects the cache, and so does a
    seek (an MP4's count includes the frames before its edit list's start, which never show). Raises
    BadVideo.
    """
    path = Path(path)
    key = _file_key(path)
    n = CACHE.length(key)
    if n is not None:
        return n
    with _bad_video(path):
        container, s = _open(path)
        with container:
            n = s.frames
            if n <= 0:  # MPEG-PS, some AVI/MKV/WebM: no count in the header
                n = sum(1 for _ in decoded_frames(container, s))
    if n <= 0:
        raise BadVideo(f"{path}: no decodable frames")
    CACHE.store_length(key, n)
    return n


def _out_hw(h: int, w: int, short_side: int | None) -> tuple[int, int]:
    """(H, W) after shrinking so that min(H, W) <= short_side (never enlarged)."""
    if short_side is None or min(h, w) <= short_side:
        return h, w
    scale = short_side / min(h, w)
    return (short_side, max(1, round(w * scale))) if h <= w else (max(1, round(h * scale)), short_side)


def _rgb(frame, hw: tuple[int, int] | None, short_side: int | None, path: Path, out: np.ndarray | None = None):
    """One av.VideoFrame -> uint8 (H, W, 3) RGB of size `hw` (from this frame when None); into `out` if given."""
    if frame.width <= 0 or frame.height <= 0:
        raise BadVideo(f"{path}: zero-size frame ({frame.width}x{frame.height})")
    if hw is None:
        hw = _out_hw(frame.height, frame.width, short_side)
    rgb = frame.to_ndarray(format="rgb24")
    if rgb.shape[:2] == hw:
        if out is None:
            return rgb
        out[...] = rgb
        return out
    # INTER_AREA: the standard anti-aliased shrink (averages the source pixels each output pixel covers)
    res = cv2.resize(rgb, (hw[1], hw[0]), dst=out, interpolation=cv2.INTER_AREA)
    if out is not None and not np.shares_memory(res, out):  # OpenCV wrote elsewhere
        out[...] = res
        return out
    return res


def _decode_all(container, s, path: Path, short_side: int | None, n_guess: int) -> np.ndarray:
    """Every frame, downscaled, in one preallocated (N, H, W, 3) array."""
    buf, n, hw = None, 0, None
    for frame in decoded_frames(container, s):
        if buf is None:
            hw = _out_hw(frame.height, frame.width, short_side) if frame.width > 0 and frame.height > 0 else (0, 0)
            buf = np.empty((max(n_guess, 1), *hw, 3), np.uint8)
        if n == len(buf):  # the container undercounted
            buf = np.concatenate([buf, np.empty((max(16, n // 2), *hw, 3), np.uint8)])
        _rgb(frame, hw, short_side, path, out=buf[n])
        n += 1
    if buf is None:
        raise BadVideo(f"{path}: no decodable frames")
    return buf if n == len(buf) else buf[:n].copy()  # copy: free an overestimate's unused tail


class SeekIndex(NamedTuple):
    """What one demuxing pass tells about a video, for seeking (N frames that decode, K seek points).

    pts: int64 (N,) sorted presentation timestamps, frame i has pts[i]. keys: int64 (K,) sorted numbers of
    the frames whose packets the container flags as keyframes (where a seek can land). discarded: packets
    before an edit list's start (decoded, never shown). landings_exact: False once a seek in this file
    landed on a packet that the decoder did not decode as a keyframe (frames after it may be wrong for a
    while), and from then on the file is decoded from its first frame."""

    pts: np.ndarray
    keys: np.ndarray
    discarded: int
    landings_exact: bool = True

    def number(self, pts: int | None) -> int | None:
        """Frame number of timestamp `pts`, None when no frame has it."""
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None


def _seek_index(path: Path, key: tuple) -> SeekIndex | None:
    """The video's SeekIndex (cached), or None when some packet has no timestamp or two share one (then
    frames cannot be identified after a seek)."""
    known, index = CACHE.get_seek_index(key)
    if known:
        return index
    container, s = _open(path)
    pts, is_key, discarded = [], [], 0
    with container:
        for p in container.demux(s):  # demuxing reads packets without decoding
            if not p.size:
                continue
            if p.is_discard:  # before the edit list's start: the decoder drops its frame
                discarded += 1
                continue
            pts.append(p.pts)
            is_key.append(p.is_keyframe)
    index = None
    if pts and None not in pts:
        order = np.argsort(np.asarray(pts, np.int64), kind="stable")
        table = np.asarray(pts, np.int64)[order]
        if not np.any(np.diff(table) == 0):
            index = SeekIndex(table, np.flatnonzero(np.asarray(is_key, bool)[order]), discarded)
    CACHE.store_seek_index(key, index)
    return index


def _frames_after_seek(container, s, index: SeekIndex, k: int):
    """Seek to the seek point frame `k`; yield (landing, i, frame) for each decoded frame, with `landing`
    the number of the keyframe packet decoding started at and `i` the frame's number (None if unknown).

    Decoding starts at the first keyframe packet after the demuxer's landing point: demuxers without an
    index (MPEG-PS) land anywhere, and an MP4 seek finds the keyframe by decoding time, so it may land on
    the keyframe after `k` (the caller checks `landing`). Decode errors propagate."""
    container.seek(int(index.pts[k]), stream=s, backward=True, any_frame=False)
    landing = None
    for packet in container.demux(s):
        if landing is None:
            if not packet.size or not packet.is_keyframe:
                continue
            landing = index.number(packet.pts)
            if landing is None:
                return
        for frame in packet.decode():
            yield landing, index.number(frame.pts), frame


def _seek_point(index: SeekIndex, t: int) -> int:
    """Position in index.keys of the last seek point at or before frame `t`, -1 if none."""
    return int(np.searchsorted(index.keys, t, side="right")) - 1


NOT_A_KEYFRAME = "not a keyframe"  # _decode_after_seek: the landing was no true keyframe


def _decode_after_seek(container, s, path: Path, index: SeekIndex, needed: np.ndarray,
                       short_side: int | None) -> list | str | None:
    """Frames `needed` (sorted, unique) decoded after seeking to the last seek point before needed[0].

    A landing is exact when the first frame out is the keyframe landed on and the decoder flags it as
    one (an IDR picture or an I-frame recovery point); then only frames from it on are taken (an open
    GOP's leading pictures, which reference the previous GOP, are skipped). Else NOT_A_KEYFRAME: e.g.
    x264's intra refresh flags P-frames that start a gradual refresh, and the frames decoded after
    such a landing are wrong for a varying while. None: no seek point is far enough in, or frames
    cannot be matched to the index (the caller decodes from the start)."""
    last = _seek_point(index, int(needed[0]))
    for pos in range(last, max(last - SEEK_TRIES, -1), -1):
        k = int(index.keys[pos])
        if k < SEEK_MIN_FRAMES:
            return None  # as cheap to decode from the first frame
        got, first = [], True
        for landing, i, frame in _frames_after_seek(container, s, index, k):
            if landing > k:
                break  # landed after the seek point (MPEG-PS seeks are inexact): try the one before
            if i is None:
                return None  # a timestamp the demuxer did not report
            if first and not (frame.key_frame and i == landing):
                return NOT_A_KEYFRAME
            first = False
            if i < landing:
                continue  # a leading picture of an open GOP
            if i > needed[len(got)]:
                return None  # a needed frame was skipped: frames went missing
            if i == needed[len(got)]:
                got.append(_rgb(frame, got[0].shape[:2] if got else None, short_side, path))
                if len(got) == len(needed):
                    return got
        else:
            if not first:
                return None  # the end came before the last needed frame
            # nothing decoded: no keyframe packet after the demuxer's landing point, try the seek point before
    return None


def _decode_from_start(container, s, path: Path, key: tuple, needed: np.ndarray, short_side: int | None) -> list:
    """Frames `needed` (sorted, unique) of a freshly opened container, counted from the first frame;
    stops after the last one."""
    got, n = [], 0
    for frame in decoded_frames(container, s):
        if n == needed[len(got)]:
            got.append(_rgb(frame, got[0].shape[:2] if got else None, short_side, path))
            if len(got) == len(needed):
                return got
        n += 1
    CACHE.store_length(key, n)  # the container's count was wrong (or the file is truncated)
    raise TooFewFrames(f"{path}: needs frame {needed[-1]} but only {n} frames decode", n)


def decode_frames(path: Path, indices: np.ndarray, short_side: int | None = 320) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames `indices` (any order, repeats allowed) of `path`, decoded with PyAV.

    Frames whose short side exceeds `short_side` are shrunk (cv2.INTER_AREA) to that short side; never
    enlarged; None keeps the native size. A video whose decoded frames fit CACHE.budget_bytes /
    CACHE_SHARE is decoded whole once and kept in a per-process LRU cache (see `VideoCache.admit`);
    otherwise decoding seeks to the keyframe before the first needed frame and stops after the last.
    Missing file, decode error, zero-size frames or fewer frames than needed -> BadVideo naming the file
    and the reason (TooFewFrames, carrying the true length, for the last).
    """
    path = Path(path)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"indices must be a non-empty 1-D array of frame numbers >= 0, got {indices!r}")
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1 or None, got {short_side}")
    key = _file_key(path)
    ckey = (*key, short_side)
    CACHE.tick()
    video = CACHE.get_frames(ckey)
    if video is None:
        with _bad_video(path):
            container, s = _open(path)
            with container:
                n_guess = CACHE.length(key) or s.frames
                if n_guess <= 0 and s.duration and s.average_rate:  # no count in the header: estimate
                    n_guess = int(s.duration * s.time_base * s.average_rate + 0.5)
                h, w = _out_hw(s.codec_context.height, s.codec_context.width, short_side)
                if not CACHE.admit(ckey, n_guess * h * w * 3):
                    return _decode_partial(container, s, path, key, idx, short_side)
                video = _decode_all(container, s, path, short_side, n_guess)
            CACHE.store_length(key, len(video))
            CACHE.store_frames(ckey, video)
    if idx.max() >= len(video):
        raise TooFewFrames(f"{path}: needs frame {idx.max()} but only {len(video)} frames decode", len(video))
    return video[idx]  # fancy indexing: a new C-contiguous array, the cache stays untouched


def _decode_partial(container, s, path: Path, key: tuple, idx: np.ndarray, short_side: int | None) -> np.ndarray:
    """Frames `idx` of a freshly opened container: seek when they start far enough in, else (or when the
    seek cannot be trusted) decode from the first frame."""
    needed, where = np.unique(idx, return_inverse=True)
    got = None
    if needed[0] >= SEEK_MIN_FRAMES:
        got, moved = _seek_partial(container, s, path, key, needed, short_side)
        if got is None and moved:  # the seek moved this container: start over on a fresh one
            container, s = _open(path)
            with container:
                got = _decode_from_start(container, s, path, key, needed, short_side)
    if got is None:
        got = _decode_from_start(container, s, path, key, needed, short_side)
    hw = got[0].shape[:2]
    if any(g.shape[:2] != hw for g in got):  # resolution changes mid-stream: match the first frame
        got = [g if g.shape[:2] == hw else cv2.resize(g, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for g in got]
    return np.stack(got)[where.reshape(-1)]


def _seek_partial(container, s, path: Path, key: tuple, needed: np.ndarray,
                  short_side: int | None) -> tuple[list | None, bool]:
    """(frames `needed` (sorted, unique) by seeking in `container`, or None when seeking cannot be trusted
    for this file or does not help; whether `container` was moved). A landing on a false keyframe is
    remembered per file (SeekIndex.landings_exact), so the file is not seeked in again."""
    index = _seek_index(path, key)
    if index is None or needed[-1] >= len(index.pts) or not index.landings_exact:
        return None, False
    pos = _seek_point(index, int(needed[0]))
    if pos < 0 or index.keys[pos] < SEEK_MIN_FRAMES:
        return None, False  # no seek point far enough in: decoding from the first frame is as cheap
    # frame i <-> i-th timestamp holds only if every packet is one frame; check against the count (the
    # container's count includes the packets before an edit list's start)
    if CACHE.length(key, len(index.pts)) not in (len(index.pts), len(index.pts) + index.discarded):
        return None, False
    CACHE.store_length(key, len(index.pts))  # the frames that show
    try:
        got = _decode_after_seek(container, s, path, index, needed, short_side)
    except _decode_errors():
        return None, True  # decoding from the first frame says whether the file itself is bad
    if got is NOT_A_KEYFRAME:
        CACHE.store_seek_index(key, index._replace(landings_exact=False))
        return None, True
    return got, True
