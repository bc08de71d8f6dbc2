"""The device throughput table of the GPU study (issue 21): renderer clips/s, pretraining clips/s and MFU,
and data_wait with CPU-worker against device rendering.

    python benchmarks/bench_device.py --out DIR [--device cuda] [--budget-s 150]
    python benchmarks/bench_device.py --out DIR --dry-run       # CPU, 1-2 steps each, tiny sizes

Writes DIR/bench.md (the tables, headed by the device, torch and CUDA versions and the CPU model) and
DIR/bench.json, both rewritten after every row, so a run cut short keeps what it measured. A row that
would start after --budget-s seconds is listed as not run; a row that fails is listed with its error
and the others still run (exit status 1 then).

- Renderer: generators.torch_render painting a batch of noise+objects plans (16 frames at 64, 112 and
  224 px) on the device, median of repeats; beside it, how fast one CPU core draws the plans (what each
  DataLoader worker does under `pretrain --render-device`). The batch repeats a few distinct plans:
  the painting costs the same, and drawing hundreds of plans would take longer than the row.
- Pretraining: one training step as the trainer takes it (engine.train_step + optimizer_step, bf16
  autocast on a GPU) of micro, micro8 (the study's student), tiny, small and base at their own sizes,
  with HOG targets and with a random-weight ViT-B/16 CLIP teacher loaded through the real path (a local
  weights file, as the tests load theirs: no network), on a batch already on the device (data
  excluded). FLOPs: one step (forward, backward and teacher) counted by
  torch.utils.flop_counter.FlopCounterMode. MFU: those FLOPs per second over the device's dense bf16
  peak (bench_train.PEAK_TFLOPS, named in the header); beside it, the share of a large bf16 matrix
  product's rate measured in this process.
- data_wait: `pretrain` itself for a few steps (HOG target, noise+objects rendered on the fly): clips
  painted in CPU workers (numpy), then painted on the device (--render-device); the last log window's
  share of time spent waiting for data, and its clips/s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_train import PEAK_TFLOPS   # benchmarks/ is sys.path[0] when run as a script

from eval.gpu_study import cpu_model, device_name
from generators.torch_render import plan_batch, rasterise
from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.errors import one_line
from training.config import PretrainConfig
from training.distributed import autocast_dtype
from training.engine import LOG_FILE, optimizer_step, train_step
from training.layers import Linear
from training.optim import build_optimizer
from training.trainer import build_masker, build_model, build_target_and_student, peak_lr, pretrain

PRESETS = ("micro", "micro8", "tiny", "small", "base")   # micro8: the GPU study's student (eval.gpu_study)
TARGETS = ("hog", "clip")
RECIPE = "noise+objects"       # the moving-noise regime's clips


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How much each row does. DEVICE is the table's; DRY (--dry-run) only proves every path runs (small
    and base take the same path as tiny, and seconds per step on CPU: left out)."""
    render_frames: int
    render_sizes: tuple[int, ...]
    render_batch: int                 # clips painted per timed call
    render_plans: int                 # distinct plans in that batch (repeated to fill it)
    render_repeats: int
    presets: tuple[str, ...]          # the pretraining rows' students
    batch: dict[str, int]             # clips per training step, per preset
    frames: int | None                # None: each preset's own geometry
    size: int | None
    warmup_steps: int
    timed_steps: int
    teacher: str                      # open_clip model of the random-weight teacher
    teacher_presets: tuple[str, ...]  # presets measured with it too
    matmul_side: int                  # the in-process matmul baseline: side x side x side
    wait_preset: str
    wait_batch: int
    wait_steps: int                   # the last half of them make the measured log window
    workers: int


DEVICE = BenchSettings(
    render_frames=16, render_sizes=(64, 112, 224), render_batch=256, render_plans=32, render_repeats=3,
    presets=PRESETS, batch={"micro": 512, "micro8": 512, "tiny": 256, "small": 64, "base": 32}, frames=None,
    size=None, warmup_steps=2, timed_steps=5, teacher="ViT-B-16", teacher_presets=PRESETS, matmul_side=8192,
    wait_preset="micro8", wait_batch=512, wait_steps=24, workers=12)
DRY = BenchSettings(
    render_frames=4, render_sizes=(32,), render_batch=4, render_plans=2, render_repeats=1,
    presets=("micro", "tiny"), batch=dict.fromkeys(PRESETS, 1), frames=4, size=32,
    warmup_steps=0, timed_steps=1, teacher="ViT-S-16", teacher_presets=("micro",), matmul_side=256,
    wait_preset="micro", wait_batch=2, wait_steps=2, workers=1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of `repeats` calls of fn(), each waited for on the device."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_tflops(device: torch.device) -> tuple[str, float] | None:
    """(name, dense bf16 TFLOP/s) of the device's peak, or None when bench_train does not know it."""
    name = device_name(device)
    return next(((k, v) for k, v in PEAK_TFLOPS.items() if k in name), None) if device.type == "cuda" else None


def matmul_tflops(device: torch.device, side: int) -> float:
    """TFLOP/s of a side^3 matrix product (bf16 on a GPU, fp32 on CPU): the in-process baseline."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    return 2 * side ** 3 / median_seconds(lambda: a @ b, 10, device) / 1e12


# ---- rows ---------------------------------------------------------------------------------------

def render_row(size: int, device: torch.device, s: BenchSettings) -> dict:
    """Painting clips/s of a batch on `device`, and plans/s on one core."""
    plan_batch(RECIPE, 0, range(2), s.render_frames, size)            # texture banks: once, not timed
    t = time.perf_counter()
    plans = plan_batch(RECIPE, 0, range(s.render_plans), s.render_frames, size)
    plan_s = (time.perf_counter() - t) / s.render_plans
    batch = plans.take(np.arange(s.render_batch) % s.render_plans)
    rasterise(batch.rows(0, 2), device)                                  # atlas upload, kernels
    synchronize(device)
    paint_s = median_seconds(lambda: rasterise(batch, device), s.render_repeats, device)
    return {"frames": s.render_frames, "size": size, "batch": s.render_batch,
            "paint_clips_s": s.render_batch / paint_s, "plan_clips_s_one_core": 1 / plan_s}


def counted_flops(step, model: torch.nn.Module) -> int:
    """FLOPs of one call of step(), counted by FlopCounterMode. The student's fp32 CPU linears go through
    F.linear meanwhile: their oneDNN path (training.layers.Linear) is an op the counter does not know."""
    linears = [(m, m.fast) for m in model.modules() if isinstance(m, Linear)]
    for m, _ in linears:
        m.fast = False
    try:
        with FlopCounterMode(display=False) as counter:
            step()
    finally:
        for m, fast in linears:
            m.fast = fast
    return counter.get_total_flops()


def pretrain_row(preset: str, target: str, device: torch.device, s: BenchSettings, teacher_file: Path,
                 matmul: float) -> dict:
    """clips/s, step FLOPs and MFU of one training step of `preset` with `target` on a batch on `device`."""
    cfg = PretrainConfig(preset=preset, target=target, teacher=s.teacher, teacher_pretrained=str(teacher_file),
                         frames=s.frames, size=s.size, batch_size=s.batch[preset], mask="tube",
                         progress=False).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                  # "RANDOM CLIP TEACHER": meant here
        tgt, student = build_target_and_student(cfg, device)
    model = build_model(cfg, student, device)
    optimizer = build_optimizer(model, peak_lr(cfg, 1), cfg.weight_decay)
    amp = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    masker = build_masker(cfg, student)
    B = cfg.batch_size
    video = torch.randint(0, 256, (B, student.frames, student.size, student.size, 3), dtype=torch.uint8, device=device)
    batch = {"video": video, "coverage": None}
    gen = torch.Generator("cpu").manual_seed(0)

    def step() -> None:
        loss, _ = train_step(model, tgt, masker, batch, cfg, device, amp, gen)
        optimizer_step(optimizer, scaler, loss, model, cfg.clip_grad)

    for _ in range(s.warmup_steps):
        step()
    synchronize(device)
    flops = counted_flops(step, model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = median_seconds(step, s.timed_steps, device)
    tflops = flops / step_s / 1e12
    peak = peak_tflops(device)
    row = {"preset": preset, "target": target if target == "hog" else f"clip ({s.teacher}, random)",
           "frames": student.frames, "size": student.size, "batch": B, "step_s": step_s, "clips_per_s": B / step_s,
           "step_tflop": flops / 1e12, "tflops": tflops, "of_matmul": tflops / matmul,
           "mfu": tflops / peak[1] if peak else None}
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return row


def data_wait_row(render_device: str | None, device: torch.device, s: BenchSettings, out: Path) -> dict:
    """`pretrain` for s.wait_steps steps: data_wait and clips/s of the last log window."""
    window = max(1, s.wait_steps // 2)
    cfg = PretrainConfig(source="synthetic", recipe=RECIPE, preset=s.wait_preset, target="hog", frames=s.frames,
                         size=s.size, batch_size=s.wait_batch, steps=s.wait_steps, log_every=window,
                         save_every=s.wait_steps, workers=s.workers, render_device=render_device, out=str(out),
                         resume="none", progress=False).validate()
    pretrain(cfg)
    last = json.loads((out / LOG_FILE).read_text().splitlines()[-1])
    where = f"device ({render_device})" if render_device else f"{s.workers} CPU workers (numpy)"
    return {"rendering": where, "preset": s.wait_preset, "batch": s.wait_batch,
            "steps": f"{last['step'] - window + 1}-{last['step']}", "data_wait": last["data_wait"],
            "clips_per_s": last["clips_per_s"]}


# ---- the table ------------------------------------------------------------------------------------

def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict], columns: list[str]) -> list[str]:
    """Markdown rows; a row that did not run shows its status across the table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt(row[c]) if c in row else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, header: dict, sections: dict[str, list[dict]]) -> None:
    """bench.md and bench.json in `out`, written whole each time (temp file and rename)."""
    columns = {"renderer": ["frames", "size", "batch", "paint_clips_s", "plan_clips_s_one_core"],
               "pretraining": ["preset", "target", "frames", "size", "batch", "clips_per_s", "step_tflop",
                               "tflops", "mfu", "of_matmul", "peak_mem_gib"],
               "data_wait": ["rendering", "preset", "batch", "steps", "data_wait", "clips_per_s"]}
    lines = ["# Device throughput (benchmarks/bench_device.py)", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    for name, rows in sections.items():
        lines += ["", f"## {name}", "", *table(rows, columns[name] + ["row_s", "status"])]
    with replacing(out / "bench.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json_atomic(out / "bench.json", {"header": header, **sections})


def random_teacher_file(model: str, folder: Path) -> Path:
    """A random-weight open_clip `model` saved as a local state-dict file (no download), as the tests make theirs."""
    import open_clip
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = open_clip.create_model(model, pretrained=None)
    path = folder / f"{model}-random.pt"
    torch.save(clip.state_dict(), path)
    return path


def header_of(device: torch.device, s: BenchSettings, dry_run: bool, matmul: float) -> dict:
    """What the table was measured on, and the peak its MFU is against."""
    peak = peak_tflops(device)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    return {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda, "cpu": cpu_model(),
            "settings": "dry run (CPU-sized)" if dry_run else "device",
            "mfu peak": f"{peak[0]} dense bf16 {peak[1]:g} TFLOP/s" if peak else "n/a (no known peak for this device)",
            f"matmul baseline ({s.matmul_side}^3, {dtype})": f"{matmul:.3g} TFLOP/s"}


def jobs_of(s: BenchSettings, device: torch.device, render_device: str, tmp: Path, matmul: float) -> list[tuple]:
    """(section, what the row is, how to measure it) for every row of the table, in order."""
    teacher_file = random_teacher_file(s.teacher, tmp)
    jobs = [("renderer", {"size": size}, lambda size=size: render_row(size, device, s)) for size in s.render_sizes]
    jobs += [("pretraining", {"preset": p, "target": t},
              lambda p=p, t=t: pretrain_row(p, t, device, s, teacher_file, matmul))
             for p in s.presets for t in TARGETS if t != "clip" or p in s.teacher_presets]
    jobs += [("data_wait", {"rendering": r or "CPU workers"},
              lambda r=r, i=i: data_wait_row(r, device, s, tmp / f"wait{i}"))
             for i, r in enumerate((None, render_device))]
    return jobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for bench.md and bench.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-s", type=float, default=150.0, help="start no row after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="CPU-sized: 1-2 steps each, tiny sizes")
    args = ap.parse_args()
    s = DRY if args.dry_run else DEVICE
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    matmul = matmul_tflops(device, s.matmul_side)
    header = header_of(device, s, args.dry_run, matmul)
    print(f"bench_device on {header['device']}, CPU {header['cpu']}, torch {header['torch']}, CUDA {header['cuda']}",
          flush=True)
    sections: dict[str, list[dict]] = {"renderer": [], "pretraining": [], "data_wait": []}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for section, label, job in jobs_of(s, device, args.device, Path(tmp), matmul):
            t = time.monotonic()
            if t > deadline:
                row = {**label, "status": f"not run: past --budget-s {args.budget_s:g}"}
            else:
                try:
                    row = {**job(), "status": "ok"}
                except Exception as e:  # noqa: BLE001 - one failed row (an OOM, say) must not lose the table
                    failed = True
                    row = {**label, "status": f"failed: {type(e).__name__}: {one_line(str(e))}"}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            row["row_s"] = round(time.monotonic() - t, 1)
            sections[section].append(row)
            print(json.dumps({"section": section, **row}), flush=True)
            write_report(out, header, sections)
    print((out / "bench.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
