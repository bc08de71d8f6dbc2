"""Does the data pipeline keep up with the trainer? Clips/s delivered vs clips/s the tiny preset consumes.

Consumption: tiny-preset train steps (pixel target, batch 8) on one in-memory batch, no loading.
Delivery: BatchStream batches per source, in this process (one core), and through a DataLoader
with 2 workers. Both in the same process, so the ratio holds on a busy machine.

    python benchmarks/bench_data.py [--batches 20] [--shards DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

# bench_train sits in this folder (the scripts run as `python benchmarks/...`)
from bench_train import measure
from torch.utils.data import DataLoader

from generators.recipes import get_recipe
from smile_synth.video import natural_items
from training.data import BatchStream, NaturalSource, RenderSource, ShardSource

BATCH = 8


def consumption(repeats: int) -> float:
    """Clips/s of tiny-preset training steps on a fixed batch (bench_train's step, fp32)."""
    args = argparse.Namespace(preset="tiny", batch_size=BATCH, frames=None, size=None, repeats=repeats, warmup=3,
                              teacher=False, teacher_model=None, precision="fp32")
    return measure(args, reference=False, device=torch.device("cpu"))["clips_per_s"]


def delivery(source, batches: int, workers: int) -> float:
    stream = BatchStream(source, BATCH, 2, 16)
    if workers == 0:
        stream.batch(0)
        t = time.perf_counter()
        for s in range(1, batches + 1):
            stream.batch(s)
        return batches * BATCH / (time.perf_counter() - t)
    it = iter(DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=2))
    for _ in range(2 * workers + 1):    # drain what was prefetched while the workers started
        next(it)
    t = time.perf_counter()
    for _ in range(3 * batches):
        next(it)
    return 3 * batches * BATCH / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--shards", default=None, help="Shard folder at 8 frames x 112 px (made here if not given).")
    args = p.parse_args()
    torch.set_num_threads(2)
    eat = consumption(10)
    print(json.dumps({"tiny_train_consumes_clips_per_s": round(eat, 1)}))
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards
        if shards is None:
            from smile_synth.app.generate import GenerateConfig, generate
            shards = f"{tmp}/shards"
            generate(GenerateConfig(n=400, out=shards, recipe=get_recipe("mixed"), frames=8, size=112, workers=2),
                     progress=False)
        sources = {
            "render black+objects": RenderSource(get_recipe("black+objects"), 8, 112),
            "render mixed": RenderSource(get_recipe("mixed"), 8, 112),
            "shards mixed": ShardSource(shards, 8, 112),
            "natural (embedded)": NaturalSource(natural_items(None), 8, 112),
            "natural + overlay": NaturalSource(natural_items(None), 8, 112, overlay=get_recipe("overlay")),
        }
        for name, src in sources.items():
            for workers in (0, 2):
                rate = delivery(src, args.batches, workers)
                print(json.dumps({"source": name, "workers": workers, "clips_per_s": round(rate, 1),
                                  "x_consumption": round(rate / eat, 2)}))


if __name__ == "__main__":
    main()
