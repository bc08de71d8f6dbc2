"""How long the GPU study's device evaluations take per model, and what cropping on the device saves.

    python benchmarks/bench_device_eval.py --data .devdata [--device cuda] [--preset micro8] [--steps 20]

Prints (with the CPU model, and the GPU's name on CUDA):
1. the batch of one fine-tuning step (finetune_batch x repeated_aug clips) made two ways in this process,
   median of repeats: the CPU study's per-clip augmentation (eval/finetune/data.py's ClipAugment on
   decoded frames, no RandAugment or erasing, as the study) against eval/device_clips.py's one gather and
   grid_sample for the whole batch; their ratio;
2. one scratch model through DeviceEvaluations.evaluate at --steps fine-tuning steps (the rest at the
   defaults): building the examples once, then the fine-tuning and probe seconds, and seconds per step.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from bench_device import median_seconds, synchronize   # benchmarks/ is sys.path[0] when run as a script

from eval.gpu_study import cpu_model


def batch_ratio(ev, settings, repeats: int) -> None:
    from eval.finetune.data import ClipAugment

    d = ev.task_data(settings)["speed"]
    train, store = d.train, d.train_store
    C, size = settings.finetune_batch * settings.repeated_aug, ev.student.size
    augment = ClipAugment(size, None, True, 0.0, settings.min_crop_scale)
    rng = np.random.default_rng(0)
    host = []                                       # each picked example's decoded frames, as ClipAugment gets them
    for i in rng.integers(0, len(train), C):
        v = train.videos[i]
        h, w = store.hw[v].tolist()
        host.append(store.frames[torch.as_tensor(store.starts[v] + train.clips[i, 0])][:, :h, :w].cpu().numpy())

    def per_clip():
        torch.stack([augment(f, k) for k, f in enumerate(host)])

    video, _ = ev._training_clips(d, train, 1, 0, settings)
    cpu_s = median_seconds(per_clip, repeats, torch.device("cpu"))
    synchronize(ev.device)                          # the draws above: not part of the timed crops
    dev_s = median_seconds(lambda: video(0), repeats, ev.device)
    print(f"one step's batch ({C} clips of {ev.student.frames} x {size} px): per-clip ClipAugment {1e3 * cpu_s:.1f} ms, "
          f"device crop {1e3 * dev_s:.2f} ms on {ev.device}: {cpu_s / dev_s:.1f}x (median of {repeats})")


def main() -> None:
    from eval.device_eval import DeviceEvalSettings, DeviceEvaluations

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=".devdata")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="micro8")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}"
          + (f"; GPU: {torch.cuda.get_device_name()}" if a.device.startswith("cuda") else ""))
    settings = dataclasses.replace(DeviceEvalSettings(), finetune_steps=a.steps)
    t = time.perf_counter()
    ev = DeviceEvaluations(a.data, a.preset, a.device, settings)
    print(f"examples built once: {time.perf_counter() - t:.1f} s "
          + ", ".join(f"{k} {len(v.train)} training / {len(v.probe)} probe examples" for k, v in ev.task_data(settings).items()))
    batch_ratio(ev, settings, a.repeats)
    t = time.perf_counter()
    rows = ev.evaluate(None, 0)
    total = time.perf_counter() - t
    steps = a.steps * len(settings.finetune)
    print(f"{a.preset} scratch, {a.steps} steps x {settings.finetune_batch} x {settings.repeated_aug} clips per "
          f"fine-tuning: {total:.1f} s ({ev.seconds['finetune']:.1f} s fine-tuning, "
          f"{1e3 * ev.seconds['finetune'] / steps:.0f} ms per step with its test; {ev.seconds['probes']:.1f} s probes)")
    print("; ".join(f"{r['task']}/{r['probe']} {100 * r['top1']:.1f}% (chance {100 * r['chance']:.1f}%)" for r in rows))


if __name__ == "__main__":
    main()
