"""What `--target flow` costs the data workers: a batch of clips rendered with their flow and reduced to
per-token means (training.flow_target), against the same batch rendered plain, in this process.

Batches alternate (plain batch, the flow clips rendered alone, flow batch) so all see the same machine
load; the figures are medians over the repeats and their ratio, printed with the CPU model.

    python benchmarks/bench_flow_target.py [--recipe mixed] [--frames 16] [--size 224] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from generators.recipes import get_recipe
from training.data import BatchStream, RenderSource

BATCH = 8


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def batch_seconds(stream: BatchStream, step: int) -> float:
    t = time.perf_counter()
    stream.batch(step)
    return time.perf_counter() - t


def render_seconds(stream: BatchStream, step: int) -> float:
    """The batch's clips rendered (with the source's annotations), not yet reduced to tokens or stacked."""
    t = time.perf_counter()
    for g in range(step * BATCH, (step + 1) * BATCH):
        stream.source.get(g, 0)
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
    times = {"plain": [], "render": [], "flow": []}
    for step in range(1, a.repeats + 1):                                 # the same clips for all three
        times["plain"].append(batch_seconds(plain, step))
        times["render"].append(render_seconds(flow, step))
        times["flow"].append(batch_seconds(flow, step))
    ms = {k: 1e3 * statistics.median(v) / BATCH for k, v in times.items()}
    print(f"CPU: {cpu_model()}")
    print(f"{a.recipe}, {a.frames} x {a.size} px, batches of {BATCH}, median of {a.repeats}, ms per clip: "
          f"plain batch {ms['plain']:.1f}; clips rendered with flow {ms['render']:.1f}; batch with the flow target "
          f"{ms['flow']:.1f} (x{ms['flow'] / ms['plain']:.2f} the plain batch; the token means "
          f"{ms['flow'] - ms['render']:.1f} ms of it, with stacking)")


if __name__ == "__main__":
    main()
