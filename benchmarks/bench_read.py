"""Reading on one core: shards back into uint8 clips, or natural videos through the reader's seek path.

    python benchmarks/bench_read.py SHARD_DIR [--passes 3]
    python benchmarks/bench_read.py --videos [--baseline OTHER_CHECKOUT] [--repeats 7]

Shards: reads every clip (video decoded, masks expanded) `passes` times; prints clips/s per pass and the
process's resident memory after each pass, so growth over a long run would show.

Videos: encodes three 10-second H.264 videos (320x240, 25 fps, B-frames, a keyframe every 50 frames)
into a temporary folder and times `decode_frames` on random 16-frame windows with the cache budget at
0, so every call seeks (the path real datasets take). With --baseline, the reader of another checkout
(e.g. `git worktree add /tmp/before HEAD`) is loaded into this process as a second package and timed
in alternation with this one; the figure is the ratio of median times, this / baseline.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2

cv2.setNumThreads(1)

import numpy as np

from bench_render import cpu_model  # this folder's scripts: run as python benchmarks/bench_read.py
from smile_synth.shards import iter_clips

VIDEOS, SECONDS, FPS, VIDEO_HW, KEYINT, WINDOW, CALLS = 3, 10, 25, (240, 320), 50, 16, 30


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_shards(shards: str, passes: int) -> None:
    rates, mem = [], []
    for p in range(passes):
        t0, n = time.perf_counter(), 0
        for _ in iter_clips(shards):
            n += 1
        rates.append(n / (time.perf_counter() - t0))
        mem.append(rss_mib())
        print(f"pass {p}: {n} clips, {rates[-1]:.1f} clips/s, RSS {mem[-1]:.0f} MiB")
    print(json.dumps({"clips_per_s_median": round(statistics.median(rates), 1), "rss_mib": [round(m) for m in mem]}))


def write_videos(folder: Path) -> list[Path]:
    """VIDEOS H.264 mp4s of moving noise (so that frames cost what camera frames cost to decode)."""
    import av

    paths, n = [], SECONDS * FPS
    for v in range(VIDEOS):
        path = folder / f"v{v}.mp4"
        base = np.random.default_rng(v).integers(0, 256, (VIDEO_HW[0] * 2, VIDEO_HW[1] * 2, 3), dtype=np.uint8)
        base = cv2.GaussianBlur(base, (0, 0), 3)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=FPS)
            s.height, s.width = VIDEO_HW
            s.pix_fmt, s.options = "yuv420p", {"crf": "23", "x264-params": f"keyint={KEYINT}:bframes=3"}
            for i in range(n):
                img = np.ascontiguousarray(base[i % VIDEO_HW[0]:][:VIDEO_HW[0], i:][:, :VIDEO_HW[1]])
                for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        paths.append(path)
    return paths


def load_reader(checkout: Path):
    """`smile_synth.video` of another checkout, loaded as the package `baseline_video` (its own cache)."""
    init = checkout / "smile_synth" / "video" / "__init__.py"
    spec = importlib.util.spec_from_file_location("baseline_video", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_video"] = module
    spec.loader.exec_module(module)
    return module


def time_reader(reader, paths: list[Path], seed: int) -> float:
    """CPU seconds per decode_frames call over CALLS random windows, every call through the seek path
    (CPU time of this process: on a shared machine, wall time mostly measures the neighbours)."""
    cache = sys.modules[reader.__name__ + ".cache"].CACHE  # each reader package has its own
    cache.clear()
    cache.budget_bytes = 0
    rng = np.random.default_rng(seed)
    t0 = time.process_time()
    for _ in range(CALLS):
        start = int(rng.integers(0, SECONDS * FPS - WINDOW))
        reader.decode_frames(paths[int(rng.integers(len(paths)))], np.arange(start, start + WINDOW), short_side=128)
    return (time.process_time() - t0) / CALLS


def read_videos(baseline: str | None, repeats: int) -> None:
    import smile_synth.video as this

    readers = {"this": this}
    if baseline:
        readers["baseline"] = load_reader(Path(baseline))
    print(f"CPU: {cpu_model()}; {VIDEOS} videos {VIDEO_HW[1]}x{VIDEO_HW[0]}, {SECONDS * FPS} frames, keyint {KEYINT}, "
          f"{CALLS} calls of {WINDOW} frames per repeat")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_videos(Path(tmp))
        times = {name: [] for name in readers}
        for r in range(repeats):  # alternate, so that drifts in machine load hit both alike
            for name in (readers if r % 2 == 0 else reversed(list(readers))):
                times[name].append(time_reader(readers[name], paths, seed=r))
        for name, t in times.items():
            runs = [round(x * 1e3, 1) for x in t]
            print(f"{name}: median {statistics.median(t) * 1e3:.1f} CPU ms per call (runs {runs})")
        summary = {f"{name}_cpu_ms_per_call": round(statistics.median(t) * 1e3, 2) for name, t in times.items()}
        if baseline:
            ratio = statistics.median(times["this"]) / statistics.median(times["baseline"])
            summary["ratio_this_over_baseline"] = round(ratio, 3)
        print(json.dumps(summary))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards", nargs="?")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--videos", action="store_true", help="time the natural-video reader's seek path instead")
    ap.add_argument("--baseline", help="another checkout whose reader to time alongside (with --videos)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.videos:
        read_videos(args.baseline, args.repeats)
    elif args.shards:
        read_shards(args.shards, args.passes)
    else:
        ap.error("give SHARD_DIR, or --videos")


if __name__ == "__main__":
    main()
