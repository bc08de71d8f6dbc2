"""Fine-tuning speed: clips/s of `smile-synth finetune` steps per preset, peak memory, and whether the
data pipeline keeps up.

Step: mixup/cutmix + forward + soft-target CE + backward + AdamW (layer-decay groups), fp32 on CPU
(bf16 autocast on a GPU), on one in-memory batch, median over repeats. Each preset runs in its own
process so its peak RSS is its own. Delivery: TrainClips (decode + RandAugment + crop + flip +
erasing, 2 clips per video) on the embedded real clips, in this process and through a DataLoader with
2 workers. Delivery / consumption > 1 means the data is not what limits the step.

    python benchmarks/bench_finetune.py [--repeats 5] [--presets tiny small] [--gpu-base]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch

# (videos per step, clips per video) per preset on CPU; base at the GPU setting
BATCH = {"tiny": (8, 2), "small": (2, 2), "base": (16, 2)}
NUM_CLASSES = 101


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def step_speed(preset: str, repeats: int, device: str = "cpu", queue=None) -> dict:
    """Clips/s of fine-tuning steps of `preset` (median of `repeats` timed steps after 2 warm-up steps)."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import param_groups_layer_decay

    from eval.finetune.engine import mix_clips
    from eval.finetune.model import build_classifier
    from training.layers import flops_per_token_matmul

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_classifier(preset, NUM_CLASSES, drop_path=0.1).to(dev).train()
    s = model.cfg
    opt = torch.optim.AdamW(param_groups_layer_decay(model, 0.05, layer_decay=0.75), lr=1e-4, betas=(0.9, 0.999))
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES)
    videos, per = BATCH[preset]
    B = videos * per
    video = torch.randn(B, 3, s.frames, s.size, s.size, device=dev)
    label = torch.randint(0, NUM_CLASSES, (B,), device=dev)
    crit = SoftTargetCrossEntropy()
    amp = torch.bfloat16 if dev.type == "cuda" else None

    def step():
        x, y = mix_clips(mixup, video.clone(), label)
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    tokens = s.num_tokens
    flops_per_clip = 3 * (flops_per_token_matmul(s.dim, s.depth, tokens) * tokens + 2 * tokens * 3 * s.tubelet * s.patch ** 2 * s.dim)
    out = {"preset": preset, "frames": s.frames, "size": s.size, "clips_per_step": B, "step_s": dt,
           "clips_per_s": B / dt, "tflops_per_s": flops_per_clip * B / dt / 1e12,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if dev.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    if queue is not None:
        queue.put(out)
    return out


def in_own_process(preset: str, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=step_speed, args=(preset, repeats, "cpu", q))
    p.start()
    out = q.get()
    p.join()
    return out


def delivery(preset: str, videos: int, workers: int) -> float:
    """Clips/s TrainClips delivers at the preset's geometry on the embedded clips (labels task sampling)."""
    from torch.utils.data import DataLoader

    from eval.finetune.data import ClipAugment, Entry, StepBatches, TrainClips, collate
    from smile_synth.video import natural_items
    from training.models import student_config

    s = student_config(preset)
    items = [type(it)(it.path, i) for i, it in enumerate(natural_items(None))]
    entries = [Entry(i, i) for i in range(len(items))]
    per = BATCH[preset][1]
    data = TrainClips(items, entries, s.frames, 4, s.size, ClipAugment(s.size, "rand-m7-n4-mstd0.5-inc1", True, 0.25), per, 0)
    batch = BATCH[preset][0]
    steps = max(2, videos // batch)
    loader = DataLoader(data, batch_sampler=StepBatches(len(entries), batch, steps + 1, 0, 0), collate_fn=collate,
                        num_workers=workers, prefetch_factor=2 if workers else None)
    it = iter(loader)
    next(it)                                             # warm: worker start, first decode (then cached)
    t = time.perf_counter()
    n = sum(len(next(it)["label"]) for _ in range(steps))
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--videos", type=int, default=32, help="videos per delivery measurement")
    ap.add_argument("--gpu-base", action="store_true", help="also base at 16x224, batch 32, bf16 on the GPU")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for preset in args.presets:
        r = in_own_process(preset, args.repeats)
        for workers in (0, 2):
            r[f"delivery_clips_per_s_w{workers}"] = delivery(preset, args.videos, workers)
        r["delivery_over_step_w2"] = r["delivery_clips_per_s_w2"] / r["clips_per_s"]
        rows.append(r)
        print(json.dumps(r))
    if args.gpu_base and torch.cuda.is_available():
        r = step_speed("base", args.repeats, "cuda")
        peak = 989e12       # H100/H200 SXM dense bf16
        r["mfu"] = r["tflops_per_s"] * 1e12 / peak
        print(json.dumps(r))
    print("\n| preset | frames x px | clips/step | step s | clips/s | peak RSS GiB | data clips/s (0 / 2 workers) | data / step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['frames']}x{r['size']} | {r['clips_per_step']} | {r['step_s']:.3f} | {r['clips_per_s']:.1f} | "
              f"{r['peak_rss_gib']:.2f} | {r['delivery_clips_per_s_w0']:.1f} / {r['delivery_clips_per_s_w2']:.1f} | "
              f"{r['delivery_over_step_w2']:.1f}x |")


if __name__ == "__main__":
    main()
