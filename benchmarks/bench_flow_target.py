"""What `--target flow` costs the data workers: a batch of clips rendered with their flow and reduced to
per-token means (training.flow_target), against the same batch rendered plain, in this process.

Batches alternate (plain, flow, the flow batch's token means alone) so all see the same machine load;
the figures are medians over the repeats and their ratios, printed with the CPU model.

    python benchmarks/bench_flow_target.py [--recipe mixed] [--frames 16] [--size 224] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

from eval.gpu_study import cpu_model
from generators.recipes import get_recipe
from training.data import BatchStream, RenderSource
from training.flow_target import batch_token_flow

BATCH = 8


def batch_seconds(stream: BatchStream, step: int) -> float:
    t = time.perf_counter()
    stream.batch(step)
    return time.perf_counter() - t


def token_means_seconds(stream: BatchStream, step: int) -> float:
    """batch_token_flow alone, on the batch's clips rendered with flow beforehand."""
    samples = [stream.source.get(g, 0) for g in range(step * BATCH, (step + 1) * BATCH)]
    t = time.perf_counter()
    batch_token_flow(samples, stream.tubelet, stream.patch)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="mixed")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    recipe = get_recipe(a.recipe)
    plain = BatchStream(RenderSource(recipe, a.frames, a.size), BATCH, 2, 16)
    flow = BatchStream(RenderSource(recipe, a.frames, a.size, annotations=("flow",)), BATCH, 2, 16)
    batch_seconds(plain, 0), batch_seconds(flow, 0)                     # warm-up: banks, caches
    times = {"plain": [], "flow": [], "means": []}
    for step in range(1, a.repeats + 1):                                 # the same clips for all three
        times["plain"].append(batch_seconds(plain, step))
        times["flow"].append(batch_seconds(flow, step))
        times["means"].append(token_means_seconds(flow, step))
    ms = {k: 1e3 * statistics.median(v) / BATCH for k, v in times.items()}
    print(f"CPU: {cpu_model()}")
    print(f"{a.recipe}, {a.frames} x {a.size} px, batches of {BATCH}, median of {a.repeats}, ms per clip: "
          f"plain batch {ms['plain']:.1f}; batch with the flow target {ms['flow']:.1f} "
          f"(x{ms['flow'] / ms['plain']:.2f}); of which the token means {ms['means']:.1f} "
          f"({ms['means'] / ms['plain']:.2f} of a plain batch; the rest is rendering the flow)")


if __name__ == "__main__":
    main()
