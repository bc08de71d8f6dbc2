"""Shard bytes per clip with and without the flow/track annotations (the README's table), and what
storing them costs in encode time, as a ratio to encoding the plain clip in the same process.

    python benchmarks/flow_shard_sizes.py [--clips 8] [--sizes 64 224] [--recipes black+objects mixed]

Each clip is rendered once with flow and tracks, then written to three shards as `generate` would
(one h264 encoder reused per shard): plain, with flow, with flow and tracks. KiB/clip is the shard file
(tar headers included) over the clips; the member columns are the mean bytes of each member. Encode time
is encode_sample's, median of --repeats passes; the ratio divides the annotated by the plain time.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2

cv2.setNumThreads(1)

from eval.gpu_study import cpu_model
from generators import get_recipe, render_clip
from smile_synth.shard_annotations import FLOW_MEMBER, TRACKS_MEMBER
from smile_synth.shards import ShardWriter, encode_sample, sample_key
from smile_synth.video_io import ClipEncoder

KINDS = {"plain": (), "flow": ("flow",), "flow+tracks": ("flow", "tracks")}


def strip(clip, keep: tuple[str, ...]):
    """The clip with only the annotations in `keep`."""
    drop = {}
    if "flow" not in keep:
        drop.update(flow=None, flow_back=None, flow_valid=None, flow_back_valid=None, occluded=None)
    if "tracks" not in keep:
        drop.update(tracks=None, track_visible=None)
    return dataclasses.replace(clip, **drop)


def shard_bytes(clips, folder: Path, name: str) -> tuple[int, list[dict[str, bytes]], float]:
    """(tar bytes, samples, encode seconds) of writing `clips` to one shard as generate does."""
    writer = ShardWriter(folder / f"{name}.tar")
    encoder = ClipEncoder()
    samples, seconds = [], 0.0
    for clip in clips:
        t0 = time.perf_counter()
        sample = encode_sample(clip, encoder=encoder)
        seconds += time.perf_counter() - t0
        writer.write(sample_key(clip.meta["index"]), sample)
        samples.append(sample)
    writer.commit()
    return (folder / f"{name}.tar").stat().st_size, samples, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 224])
    ap.add_argument("--recipes", nargs="*", default=["black+objects", "noise+objects", "mixed"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {args.clips} clips of {args.frames} frames per row, one core")
    print(f"{'recipe':14s} {'size':>4s} {'kind':12s} {'KiB/clip':>8s} {'video':>7s} {'masks':>6s} {'flow':>7s} "
          f"{'tracks':>6s} {'encode x plain':>14s}")
    for name in args.recipes:
        recipe = get_recipe(name, ["background.bank_size=4"])
        for size in args.sizes:
            clips = [render_clip(recipe, 0, i, args.frames, size, annotations=("flow", "tracks"))
                     for i in range(args.clips)]
            with tempfile.TemporaryDirectory() as tmp:
                times: dict[str, list[float]] = {kind: [] for kind in KINDS}
                results = {}
                for _ in range(args.repeats):
                    for kind, keep in KINDS.items():
                        size_bytes, samples, seconds = shard_bytes([strip(c, keep) for c in clips], Path(tmp), kind)
                        times[kind].append(seconds)
                        results[kind] = size_bytes, samples
                base = statistics.median(times["plain"])
                for kind, (size_bytes, samples) in results.items():
                    mean = lambda member: sum(len(s.get(member, b"")) for s in samples) / len(samples) / 1024
                    video = mean(next(k for k in samples[0] if k.startswith("video.")))
                    print(f"{name:14s} {size:4d} {kind:12s} {size_bytes / len(clips) / 1024:8.1f} {video:7.1f} "
                          f"{mean('masks.zlib'):6.1f} {mean(FLOW_MEMBER):7.1f} {mean(TRACKS_MEMBER):6.1f} "
                          f"{statistics.median(times[kind]) / base:14.2f}")


if __name__ == "__main__":
    main()
