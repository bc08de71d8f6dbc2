"""Render-only speed on one core: ms per clip (median over repeats) for each recipe.

    python benchmarks/bench_render.py [--frames 16] [--size 224] [--clips 50] [--repeats 5]

Texture banks are built before timing (a one-off per process; reported separately).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2  # noqa: E402

cv2.setNumThreads(1)

from generators import render_clip  # noqa: E402

DEFAULT = ["black+objects", "noise+objects", "fractal+objects", "image+objects", "mixed"]


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
        runs = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(args.clips):
                render_clip(r, 0, rep * args.clips + i, args.frames, args.size)
            runs.append((time.perf_counter() - t0) / args.clips * 1000)
        results[r] = {"ms_per_clip_median": round(statistics.median(runs), 2), "ms_runs": [round(x, 2) for x in runs],
                      "setup_s": round(setup, 2)}
        print(f"{r:18s} {statistics.median(runs):7.2f} ms/clip (runs {', '.join(f'{x:.1f}' for x in runs)}; setup {setup:.1f}s)")
    print(json.dumps({"frames": args.frames, "size": args.size, "results": results}))


if __name__ == "__main__":
    main()
