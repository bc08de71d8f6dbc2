"""The SMILE pretraining loop, top to bottom: data -> masks -> targets -> student -> AdamW -> checkpoints.

One loop for every regime: synthetic clips (shards or rendered on the fly), natural videos (with
or without overlaid objects), or a mix. Run it with `smile-synth pretrain` on one process, or under
`torchrun --nproc_per_node=N -m smile_synth pretrain ...` for DDP (each rank reads its own samples).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from smile_synth.atomic import ensure_writable_folder, write_json_atomic
from smile_synth.config import to_dict
from smile_synth.errors import UserError
from smile_synth.plots import loss_curve

from .checkpoint import CHECKPOINT, ENCODER, load_weights, read_checkpoint, save_atomic
from .config import PretrainConfig
from .data import (
    BatchStream,
    Source,
    build_source,
)
from .masking import MaskSpec, TrajectoryMasker
from .models import (
    PretrainVideoTransformer,
    StudentConfig,
    count_parameters,
    encoder_state_dict,
    student_config,
)
from .optim import build_optimizer, lr_at, warmup_steps
from .targets import normalize, pixel_targets, to_unit_video

log = logging.getLogger(__name__)
LOG_FILE = "log.jsonl"
MIN_SAMPLES_FOR_BAD_SHARE = 32       # judge the bad-sample share only once this many were tried
# settings a resumed run must share with its checkpoint
RESUME_FIXED = ("preset", "frames", "size", "target", "teacher", "batch_size", "source", "seed")


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True      # fp32 leftovers (teacher pre/post, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, local, device)


def all_ranks_sum(values: list[float], d: Dist) -> list[float]:
    """Sum small per-rank numbers over all ranks (no-op on one process)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1024 + rank


# ---- setup --------------------------------------------------------------------------------

def student_config_for(cfg: PretrainConfig, target_dim: int) -> StudentConfig:
    overrides = {k: v for k, v in (("frames", cfg.frames), ("size", cfg.size)) if v is not None}
    return student_config(cfg.preset, drop_path=cfg.drop_path, target_dim=target_dim, **overrides)


def total_steps(cfg: PretrainConfig, source: Source, world: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    if source.num_items is None:
        raise UserError("--epochs needs a dataset of known size; clips rendered on the fly are endless: use --steps N")
    return max(1, math.ceil(cfg.epochs * source.num_items / (cfg.batch_size * world)))


class Targets:
    """What the student reconstructs for a batch: __call__(video float (B, 3, T, H, W) in [0, 1]) -> (B, N, D)."""

    def __init__(self, cfg: PretrainConfig, s_grid: tuple[int, int, int], tubelet: int, patch: int,
                 device: torch.device):
        self.kind, self.tubelet, self.patch = cfg.target, tubelet, patch
        self.teacher = None
        self.dim = 3 * tubelet * patch * patch
        if cfg.target == "clip":
            from .teacher import load_teacher
            self.teacher = load_teacher(cfg.teacher, cfg.teacher_pretrained, tubelet, s_grid[1:]).to(device)
            self.dim = self.teacher.width

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        if self.teacher is not None:
            return self.teacher(video)
        return pixel_targets(video.float(), self.tubelet, self.patch)


def autocast_dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def summary(cfg: PretrainConfig, step: int, world: int) -> dict:
    """What the model saw in pretraining (shown by `compare`)."""
    shards = cfg.data if cfg.source == "synthetic" else cfg.synthetic_data
    rendered = cfg.source != "natural" and shards is None
    return {"source": cfg.source, "data": cfg.data, "recipe": cfg.synthetic_recipe if rendered else None,
            "synthetic_data": cfg.synthetic_data,
            "overlay": cfg.overlay, "mix_ratio": cfg.mix_ratio if cfg.source == "mixed" else None,
            "preset": cfg.preset, "target": cfg.target, "teacher": cfg.teacher if cfg.target == "clip" else None,
            "mask": cfg.mask_kind, "steps": step, "clips_seen": step * cfg.batch_size * world}


def describe_run(cfg: PretrainConfig, s: StudentConfig, model, steps: int, start: int, peak_lr: float,
                 d: Dist, amp, masker: TrajectoryMasker) -> str:
    """One line saying what is about to run."""
    recipe = summary(cfg, steps, d.world)["recipe"]
    synthetic = f"rendered from {recipe!r}" if recipe else (cfg.data if cfg.source == "synthetic" else cfg.synthetic_data)
    natural = (cfg.data or "embedded real clips") + (f" + {cfg.overlay!r} objects" if cfg.overlay else "")
    data = {"synthetic": synthetic, "natural": natural, "mixed": f"{synthetic} / {natural}"}[cfg.source]
    params = count_parameters(model) / 1e6
    what = f"{cfg.target} target" + (f" ({cfg.teacher})" if cfg.target == "clip" else "")
    return (f"pretrain: {cfg.preset} student ({params:.1f}M params, {s.frames}x{s.size}px) on {cfg.source} clips "
            f"({data}), {what}, {masker.spec.kind} masks ({masker.num_masked}/{s.num_tokens} tokens), "
            f"steps {start}->{steps} x {cfg.batch_size * d.world} clips, peak lr {peak_lr:.2e}, "
            f"{d.device.type} {'fp32' if amp is None else str(amp).removeprefix('torch.')}, x{d.world} processes, "
            f"{cfg.workers} workers each")


# ---- the loop -----------------------------------------------------------------------------

def loss_fn(model, video: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between the student's predictions and the targets of the masked tokens.
    video (B, 3, T, H, W) normalized, target (B, N, D), mask bool (B, N)."""
    pred = model(video, mask)                                              # (B, N_masked, D)
    return F.mse_loss(pred.float(), target[mask].reshape(pred.shape).float())


def train_step(model, targets: Targets, masker: TrajectoryMasker, batch: dict, cfg: PretrainConfig,
               device: torch.device, amp: torch.dtype | None, generator: torch.Generator) -> torch.Tensor:
    """Forward and backward of one batch; returns the loss (not yet stepped)."""
    video = to_unit_video(batch["video"].to(device, non_blocking=True))  # (B, 3, T, H, W) in [0, 1]
    B = video.shape[0]
    coverage = batch["coverage"] if masker.spec.kind == "traj" else None
    masks = [masker(coverage, B, generator) for _ in range(2 if cfg.multiple_sampling else 1)]
    mask = torch.cat(masks).to(device, non_blocking=True)                # (B * samplings, N)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        with torch.no_grad():
            target = targets(video)                                        # teacher once per clip
        inputs = normalize(video)
        if cfg.multiple_sampling:
            inputs, target = torch.cat([inputs, inputs]), torch.cat([target, target])
        loss = loss_fn(model, inputs, target, mask)
    return loss


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) a pretraining run into cfg.out. Returns the run summary."""
    d = setup_distributed()
    try:
        return _pretrain(cfg, d)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _pretrain(cfg: PretrainConfig, d: Dist) -> dict:
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    resume_from = None
    if cfg.resume == "auto":
        resume_from = ckpt_path if ckpt_path.is_file() else None
    elif cfg.resume not in (None, "none"):
        resume_from = Path(cfg.resume)
    elif ckpt_path.is_file():
        raise UserError(f"{out} already holds a run ({CHECKPOINT}); continue it with --resume auto or choose another --out")
    if d.main:
        ensure_writable_folder(out)

    # targets first: a teacher that cannot be loaded fails before any data work
    probe = student_config_for(cfg, 1)
    targets = Targets(cfg, probe.grid, probe.tubelet, probe.patch, d.device)
    s = dataclasses.replace(probe, target_dim=targets.dim)
    source = build_source(cfg, s)
    steps = total_steps(cfg, source, d.world)
    torch.manual_seed(cfg.seed)
    model: torch.nn.Module = PretrainVideoTransformer(s).to(d.device)
    model.encoder.grad_checkpointing = model.decoder.grad_checkpointing = cfg.grad_checkpointing
    global_batch = cfg.batch_size * d.world
    peak_lr = cfg.base_lr * global_batch / 256
    warm = warmup_steps(cfg.warmup, steps)
    optimizer = build_optimizer(model, peak_lr, cfg.weight_decay)
    amp = autocast_dtype(cfg, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp is torch.float16)

    start = 0
    if resume_from is not None:
        ckpt = read_checkpoint(resume_from)
        old = ckpt.get("config", {})
        for k in RESUME_FIXED:
            if k in old and old[k] != getattr(cfg, k):
                raise UserError(f"cannot resume {resume_from}: it was run with {k}={old[k]!r}, now {getattr(cfg, k)!r}; "
                                f"keep the setting or start a new run with another --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["step"])
        if start > steps:
            raise UserError(f"{resume_from} is at step {start}, past --steps {steps}; ask for more steps or use another --out")
        if d.main:
            log.warning("resuming %s at step %d", resume_from, start)
    elif cfg.init:
        missing, unexpected = load_weights(model, cfg.init)
        if d.main:
            log.warning("initialised from %s (%d missing, %d unused tensors)", cfg.init, len(missing), len(unexpected))

    raw_model = model
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    masker = TrajectoryMasker(MaskSpec(cfg.mask_kind, cfg.mask_ratio, cfg.traj_unmask_ratio, cfg.object_threshold), s.grid)
    stream = BatchStream(source, cfg.batch_size, s.tubelet, s.patch, d.rank, d.world, start)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.workers, pin_memory=d.device.type == "cuda",
                        prefetch_factor=2 if cfg.workers else None, persistent_workers=False)

    def checkpoint(step: int) -> None:
        if d.main:
            state = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "step": step, "config": to_dict(cfg),
                     "student": dataclasses.asdict(s), "summary": summary(cfg, step, d.world)}
            save_atomic(state, ckpt_path)
            if cfg.keep_every and step % cfg.keep_every == 0:
                save_atomic(state, out / f"checkpoint-{step:07d}.pt")

    bar = None
    if d.main and cfg.progress:
        print(describe_run(cfg, s, raw_model, steps, start, peak_lr, d, amp, masker), file=sys.stderr, flush=True)
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start, desc="pretrain", unit="step", dynamic_ncols=True)
    logf = open(out / LOG_FILE, "a") if d.main else None
    tried = bad = 0
    window_loss, window_n, waited, t0 = 0.0, 0, 0.0, time.perf_counter()
    model.train()
    try:
        batches = iter(loader)
        for step in range(start, steps):
            t_wait = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - t_wait
            assert batch["step"] == step, (batch["step"], step)
            # every rank must take the same stop decisions, or the others hang in the next collective
            counts = all_ranks_sum([batch["bad"], cfg.batch_size + batch["bad"], batch["error"] is not None], d)
            if counts[2]:
                raise UserError(batch["error"] or "another rank met only bad samples; see its log")
            bad += int(counts[0])
            tried += int(counts[1])
            if tried >= MIN_SAMPLES_FOR_BAD_SHARE and bad > cfg.max_bad_share * tried:
                raise UserError(f"{bad} of {tried} samples were unreadable (more than --max-bad-share {cfg.max_bad_share}); "
                                "fix or remove the bad videos (the log names them), or raise --max-bad-share")
            lr = lr_at(step, steps, warm, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step, d.rank))             # drop-path noise, resumable
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, d.rank))
            loss = train_step(model, targets, masker, batch, cfg, d.device, amp, gen)
            reduced = loss.detach().clone()
            if d.world > 1:
                dist.all_reduce(reduced)
                reduced /= d.world
            value = reduced.item()
            if not math.isfinite(value):
                raise UserError(f"loss is {value} at step {step + 1}: stopped; the last good checkpoint ({ckpt_path}) is untouched; "
                                "lower --lr or set --clip-grad")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            window_loss += value
            window_n += 1
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", bad=bad)
            if done % cfg.log_every == 0 or done == steps:
                dt = time.perf_counter() - t0
                if logf is not None:
                    logf.write(json.dumps({"step": done, "loss": window_loss / window_n, "lr": lr,
                                           "clips_per_s": window_n * global_batch / dt, "bad": bad,
                                           "data_wait": waited / dt, "time": time.time()}) + "\n")
                    logf.flush()
                window_loss, window_n, waited, t0 = 0.0, 0, 0.0, time.perf_counter()
            if (done % cfg.save_every == 0 or (cfg.keep_every and done % cfg.keep_every == 0)) and done != steps:
                checkpoint(done)
    finally:
        if bar is not None:
            bar.close()
        if logf is not None:
            logf.close()
        del loader

    checkpoint(steps)
    info = summary(cfg, steps, d.world)
    if d.main:
        save_atomic({"model": encoder_state_dict(raw_model), "student": dataclasses.asdict(s), "summary": info},
                    out / ENCODER)
        write_json_atomic(out / "run.json", {"config": to_dict(cfg), "student": dataclasses.asdict(s), "summary": info})
        if (out / LOG_FILE).is_file():
            loss_curve(out / LOG_FILE, out / "loss.png", f"{cfg.preset}, {cfg.source}, target {cfg.target}, mask {cfg.mask_kind}")
    return info


