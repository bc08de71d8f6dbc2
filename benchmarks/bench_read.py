"""Reading shards back into uint8 clips on one core: clips/s and memory over a long read.

    python benchmarks/bench_read.py SHARD_DIR [--passes 3]

Reads every clip (video decoded, masks expanded) `passes` times; prints clips/s per pass and the
process's resident memory after each pass, so growth over a long run would show.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2

cv2.setNumThreads(1)

from smile_synth.shards import iter_clips


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    rates, mem = [], []
    for p in range(args.passes):
        t0, n = time.perf_counter(), 0
        for _ in iter_clips(args.shards):
            n += 1
        rates.append(n / (time.perf_counter() - t0))
        mem.append(rss_mib())
        print(f"pass {p}: {n} clips, {rates[-1]:.1f} clips/s, RSS {mem[-1]:.0f} MiB")
    print(json.dumps({"clips_per_s_median": round(statistics.median(rates), 1), "rss_mib": [round(m) for m in mem]}))


if __name__ == "__main__":
    main()
