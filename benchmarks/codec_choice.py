"""How the shard video codec was chosen: bytes per clip, PSNR against the raw render, encode and
decode time per clip (one core), for candidate codecs over several recipes.

    python benchmarks/codec_choice.py [--clips 24]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2

cv2.setNumThreads(1)

from generators import render_clip
from smile_synth.video_io import ClipEncoder, Codec, decode_video, psnr

CANDIDATES = {
    "jpeg q90 (per frame)": Codec(name="jpeg", quality=90),
    "jpeg q80 (per frame)": Codec(name="jpeg", quality=80),
    "h264 444 crf20 ultrafast": Codec(),
    "h264 444 crf23 ultrafast": Codec(crf=23),
    "h264 444 crf20 superfast": Codec(preset="superfast"),
    "h264 444 crf20 veryfast": Codec(preset="veryfast"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--recipes", nargs="*", default=["black+objects", "noise+objects", "image+objects", "mixed"])
    args = ap.parse_args()
    clips = [render_clip(r, 0, i).video for r in args.recipes for i in range(args.clips)]
    print(f"{len(clips)} clips of 16x224x224 from {', '.join(args.recipes)}")
    print(f"{'codec':62s} {'KB/clip':>8s} {'PSNR dB':>8s} {'min dB':>7s} {'enc ms':>7s} {'dec ms':>7s}")
    runs = [(name + (" (fresh encoder per clip)" if codec.name == "h264" else ""), codec, False) for name, codec in CANDIDATES.items()]
    runs += [(f"{name} (encoder reused, as generate)", codec, True) for name, codec in CANDIDATES.items() if codec.name == "h264"]
    for name, codec, reuse in runs:
        sizes, ps, enc, dec = [], [], [], []
        shared = ClipEncoder(codec)
        for v in clips:
            t0 = time.perf_counter()
            data = (shared if reuse else ClipEncoder(codec)).encode(v)
            t1 = time.perf_counter()
            back = decode_video(data, codec.extension)
            t2 = time.perf_counter()
            sizes.append(len(data) / 1024)
            ps.append(psnr(v, back))
            enc.append((t1 - t0) * 1000)
            dec.append((t2 - t1) * 1000)
        print(f"{name:62s} {statistics.mean(sizes):8.1f} {statistics.mean(ps):8.2f} {min(ps):7.2f} "
              f"{statistics.median(enc):7.2f} {statistics.median(dec):7.2f}")


if __name__ == "__main__":
    main()
