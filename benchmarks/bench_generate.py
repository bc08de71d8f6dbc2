"""`generate` end to end (render, encode, write shards) on all cores: clips/s, bytes per clip,
and fidelity (PSNR of the stored video against the raw render).

    python benchmarks/bench_generate.py [--n 2000] [--workers 2] [--recipes black+objects mixed] [--codec h264]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time

from generators import get_recipe, render_clip
from smile_synth.app.generate import GenerateConfig, generate
from smile_synth.shards import iter_clips
from smile_synth.video_io import psnr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipes", nargs="*", default=["black+objects", "mixed"])
    ap.add_argument("--codec", default="h264")
    ap.add_argument("--psnr-clips", type=int, default=100)
    args = ap.parse_args()
    out = {}
    for name in args.recipes:
        with tempfile.TemporaryDirectory() as d:
            cfg = GenerateConfig(n=args.n, out=d, recipe=get_recipe(name), workers=args.workers, shard_size=500, codec=args.codec)
            t0 = time.perf_counter()
            m = generate(cfg, progress=False)
            dt = time.perf_counter() - t0
            ps = [psnr(render_clip(name, 0, c.meta["index"]).video, c.video)
                  for c in itertools.islice(iter_clips(d), args.psnr_clips)]
        out[name] = {"clips_per_s": round(args.n / dt, 1), "kib_per_clip": round(m["bytes"] / args.n / 1024, 1),
                     "psnr_mean_db": round(statistics.mean(ps), 2), "psnr_min_db": round(min(ps), 2), "seconds": round(dt, 1)}
        print(f"{name:16s} {args.n / dt:6.1f} clips/s  {m['bytes'] / args.n / 1024:5.1f} KiB/clip  "
              f"PSNR mean {statistics.mean(ps):.1f} dB (min {min(ps):.1f})  [{args.workers} workers, {args.codec}]")
    print(json.dumps({"n": args.n, "workers": args.workers, "codec": args.codec, "results": out}))


if __name__ == "__main__":
    main()
