"""Render-only speed on one core: ms per clip (median over repeats) for each recipe, plus a
same-process baseline so the figure survives a noisy machine.

    python benchmarks/bench_render.py [--frames 16] [--size 224] [--clips 50] [--repeats 5]

Baseline: the same objects composited the straightforward way (each sprite warped into a full
frame, float32 blending and numpy mask updates over the whole frame, boxes by np.nonzero), i.e.
the approach of typical overlay code. The ratio baseline/ours is measured on identical tracks.
Texture banks are built before timing (once per process; reported as setup).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2
import numpy as np

cv2.setNumThreads(1)

from generators import render_clip
from generators.backgrounds import render_background
from generators.compositor import composite, sprite_matrices
from generators.objects import choose, make_tracks
from generators.render import _resolve
from generators.resources import resources_for
from generators.seeding import clip_rngs

DEFAULT = ["black+objects", "noise+objects", "fractal+objects", "image+objects", "mixed"]


def full_frame_composite(video: np.ndarray, tracks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference-style compositing: whole-frame warps and float math, per object and frame."""
    T, H, W = video.shape[:3]
    K = len(tracks)
    masks = np.zeros((K, T, H, W), bool)
    boxes = np.full((K, T, 4), np.nan, np.float32)
    out = video.astype(np.float32)
    for k, tr in enumerate(tracks):
        M = sprite_matrices(tr)
        for t in range(T):
            rgba = cv2.warpAffine(tr.sprite, M[t], (W, H), flags=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            a = rgba[..., 3:] * tr.opacity[t]
            out[t] = out[t] * (1 - a) + rgba[..., :3] * 255.0 * a
            own = a[..., 0] > 0.5
            masks[:k, t] &= ~own
            masks[k, t] = own
    for k in range(K):
        for t in range(T):
            ys, xs = np.nonzero(masks[k, t])
            if len(ys):
                boxes[k, t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), masks, boxes


def composite_ratio(recipe: str, frames: int, size: int, clips: int) -> tuple[float, float]:
    """(ms per clip ours, ms per clip baseline) for the compositing step on identical inputs."""
    r = _resolve(recipe)
    res = resources_for(r, 0, size)
    inputs = []
    for i in range(clips):
        bg, obj = clip_rngs(r.key, 0, i)
        video = render_background(choose(bg, r.background.kinds), bg, frames, size, r.background, res)
        inputs.append((video, make_tracks(obj, r, frames, size, res)))
    t0 = time.perf_counter()
    for v, tr in inputs:
        composite(v.copy(), tr)
    t1 = time.perf_counter()
    for v, tr in inputs:
        full_frame_composite(v, tr)
    t2 = time.perf_counter()
    return (t1 - t0) / clips * 1000, (t2 - t1) / clips * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="*", default=DEFAULT)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = {}
    for r in args.recipes:
        t0 = time.perf_counter()
        for i in range(8):  # builds texture banks, loads photos
            render_clip(r, 0, 10_000_000 + i, args.frames, args.size)
        setup = time.perf_counter() - t0
        runs, ratios = [], []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(args.clips):
                render_clip(r, 0, rep * args.clips + i, args.frames, args.size)
            runs.append((time.perf_counter() - t0) / args.clips * 1000)
            ours, base = composite_ratio(r, args.frames, args.size, max(10, args.clips // 3))
            ratios.append(base / ours)
        med = statistics.median(runs)
        results[r] = {"ms_per_clip_median": round(med, 2), "ms_runs": [round(x, 2) for x in runs], "setup_s": round(setup, 2),
                      "composite_speedup_vs_full_frame": round(statistics.median(ratios), 2)}
        print(f"{r:16s} {med:6.2f} ms/clip (runs {', '.join(f'{x:.1f}' for x in runs)}; setup {setup:.1f}s); "
              f"compositing {statistics.median(ratios):.1f}x faster than full-frame baseline")
    print(json.dumps({"frames": args.frames, "size": args.size, "results": results}))


if __name__ == "__main__":
    main()
