"""SMILE pretraining, top to bottom: set up (target, data, student, AdamW, resume) -> the loop -> export.

One loop for every regime: synthetic clips (shards or rendered on the fly), natural videos (with
or without overlaid objects), or a mix. Run it with `smile-synth pretrain` on one process, or under
`torchrun --nproc_per_node=N -m smile_synth pretrain ...` for DDP (each rank reads its own samples).
The loop itself is engine.py (as MAE's main_pretrain.py and engine_pretrain.py).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from smile_synth.atomic import ensure_writable_folder, remove_stale_temporaries, write_json_atomic
from smile_synth.config import check_fits_in_memory, to_dict
from smile_synth.locks import run_folder
from smile_synth.plots import loss_curve

from .checkpoint import CHECKPOINT, load_weights, restore_training_state, resume_path, save_atomic, save_encoder
from .config import PretrainConfig
from .data import BatchStream, Source, build_source
from .device_batches import DeviceBatches, render_device_for
from .distributed import Dist, autocast_dtype, distributed_run
from .engine import LOG_FILE, Run, run_loop
from .masking import MaskSpec, TrajectoryMasker
from .models import (
    PretrainVideoTransformer,
    StudentConfig,
    count_parameters,
    encoder_state_dict,
    loss_fn,  # noqa: F401 - re-exported: its home is training.models
    student_config,
)
from .optim import build_optimizer, warmup_steps
from .targets import Target, build_target

log = logging.getLogger(__name__)
# batches(student, start step) -> the batches of steps start, start + 1, ... (BatchStream's dicts, on the device)
BatchesFor = Callable[[StudentConfig, int], Iterable[dict]]
# settings a resumed run must share with its checkpoint
RESUME_FIXED = ("preset", "frames", "size", "target", "teacher", "batch_size", "source", "seed")


# ---- the run ----------------------------------------------------------------------------------

def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) a pretraining run into cfg.out, holding its run-folder lock (rank 0; a second run
    into the folder stops with one line). Returns the run summary."""
    with distributed_run() as d:
        if d.main:
            ensure_writable_folder(cfg.out)
        with run_folder(cfg.out, "pretrain") if d.main else nullcontext():
            return _pretrain(cfg, d)


def pretrain_on(cfg: PretrainConfig, device: torch.device, batches: BatchesFor) -> dict:
    """A one-process run on `device` fed by `batches(student, start step)` (clips made on the device,
    e.g. training.device_pool) instead of cfg's source; the same loop, log, checkpoints and export."""
    device = torch.device(device)
    if device.type == "cuda":       # as setup_distributed: fp32 leftovers on tensor cores
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    ensure_writable_folder(cfg.out)
    with run_folder(cfg.out, "pretrain"):
        return _pretrain(cfg, Dist(device=device), batches)


def _pretrain(cfg: PretrainConfig, d: Dist, batches: BatchesFor | None = None) -> dict:
    out = Path(cfg.out)
    resume_from = resume_path(cfg.resume, out)
    if d.main:
        remove_stale_temporaries(out)   # half-written checkpoints of a killed run
    target, s = build_target_and_student(cfg, d.device)     # a teacher that cannot load fails before data work
    check_fits_in_memory(f"one step's batch of {cfg.batch_size} clips of {s.frames} frames x {s.size} px",
                         cfg.batch_size * 3 * s.frames * s.size ** 2 * 4, "lower --batch-size, --frames or --size")
    source = build_source(cfg, s) if batches is None else None    # given batches: cfg.steps is set
    steps = total_steps(cfg, source, d.world)
    model = build_model(cfg, s, d.device)
    lr = peak_lr(cfg, d.world)
    optimizer = build_optimizer(model, lr, cfg.weight_decay)
    amp = autocast_dtype(cfg.precision, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp is torch.float16)
    start = 0
    if resume_from is not None:
        start = resume(resume_from, cfg, model, optimizer, scaler, steps, d)
    elif cfg.init:
        init_from(cfg.init, model, d)
    run = Run(cfg, d, wrap_model(model, cfg, d), model, target, build_masker(cfg, s), optimizer, scaler, amp,
              start, steps, warmup_steps(cfg.warmup, steps), lr, out,
              partial(save_checkpoint, cfg, s, model, optimizer, scaler, d))
    loader = make_loader(source, cfg, s, d, start) if batches is None else batches(s, start)
    if d.main and cfg.progress:
        print(describe_run(run, s), file=sys.stderr, flush=True)
    run_loop(run, loader)
    del loader
    run.save(steps)
    return export(cfg, s, model, steps, d, skipped_shards(source))


# ---- setup ------------------------------------------------------------------------------------

def student_config_for(cfg: PretrainConfig, target_dim: int) -> StudentConfig:
    overrides = {k: v for k, v in (("frames", cfg.frames), ("size", cfg.size)) if v is not None}
    return student_config(cfg.preset, drop_path=cfg.drop_path, target_dim=target_dim, **overrides)


def build_target_and_student(cfg: PretrainConfig, device: torch.device) -> tuple[Target, StudentConfig]:
    """The target, and the student's config with the target's width as its output."""
    probe = student_config_for(cfg, 1)
    target = build_target(cfg, probe.grid, probe.tubelet, probe.patch, device)
    return target, dataclasses.replace(probe, target_dim=target.dim)


def total_steps(cfg: PretrainConfig, source: Source, world: int) -> int:
    """--steps, or the epochs (--epochs, else SMILE's DEFAULT_EPOCHS) over the dataset; an epoch of clips
    rendered on the fly is cfg.epoch_clips clips."""
    if cfg.steps is not None:
        return cfg.steps
    items = source.num_items if source.num_items is not None else cfg.epoch_clips
    return max(1, math.ceil(cfg.schedule_epochs * items / (cfg.batch_size * world)))


def build_model(cfg: PretrainConfig, s: StudentConfig, device: torch.device) -> PretrainVideoTransformer:
    """The student, initialised from cfg.seed."""
    torch.manual_seed(cfg.seed)
    model = PretrainVideoTransformer(s).to(device)
    model.encoder.grad_checkpointing = model.decoder.grad_checkpointing = cfg.grad_checkpointing
    return model


def peak_lr(cfg: PretrainConfig, world: int) -> float:
    """The base lr scaled by the global batch / 256."""
    global_batch = cfg.batch_size * world
    return cfg.base_lr * global_batch / 256


def wrap_model(model: torch.nn.Module, cfg: PretrainConfig, d: Dist) -> torch.nn.Module:
    """DDP over the ranks, then torch.compile when asked."""
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return model


def build_masker(cfg: PretrainConfig, s: StudentConfig) -> TrajectoryMasker:
    return TrajectoryMasker(MaskSpec(cfg.mask_kind, cfg.mask_ratio, cfg.traj_unmask_ratio, cfg.object_threshold), s.grid)


def make_loader(source: Source, cfg: PretrainConfig, s: StudentConfig, d: Dist, start: int) -> Iterable[dict]:
    """This rank's batches from step `start` on, made by cfg.workers DataLoader workers (with
    --render-device: their plans, painted on that device as each batch is taken)."""
    stream = BatchStream(source, cfg.batch_size, s.tubelet, s.patch, d.rank, d.world, start)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.workers, pin_memory=d.device.type == "cuda",
                        prefetch_factor=2 if cfg.workers else None, persistent_workers=False)
    if cfg.render_device is None:
        return loader
    return DeviceBatches(loader, render_device_for(cfg.render_device, d.device), s.tubelet, s.patch)


# ---- resume and checkpoints ---------------------------------------------------------------------

def resume(resume_from: Path, cfg: PretrainConfig, model, optimizer, scaler, steps: int, d: Dist) -> int:
    """Load model, optimizer and scaler state from a checkpoint (RESUME_FIXED settings unchanged); returns its step."""
    start = restore_training_state(resume_from, cfg, RESUME_FIXED, model, optimizer, scaler, steps)
    if d.main:
        log.warning("resuming %s at step %d", resume_from, start)
    return start


def init_from(weights: str, model, d: Dist) -> None:
    """Start from another run's weights (--init; e.g. stage 2 from stage 1)."""
    missing, unexpected = load_weights(model, weights)
    if d.main:
        log.warning("initialised from %s (%d missing, %d unused tensors)", weights, len(missing), len(unexpected))


def save_checkpoint(cfg: PretrainConfig, s: StudentConfig, model, optimizer, scaler, d: Dist, step: int) -> None:
    """OUT/checkpoint.pt (and checkpoint-STEP.pt every --keep-every steps), written by rank 0."""
    if not d.main:
        return
    out = Path(cfg.out)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "step": step, "config": to_dict(cfg),
             "student": dataclasses.asdict(s), "summary": summary(cfg, step, d.world)}
    save_atomic(state, out / CHECKPOINT)
    if cfg.keep_every and step % cfg.keep_every == 0:
        save_atomic(state, out / f"checkpoint-{step:07d}.pt")


# ---- what ran -----------------------------------------------------------------------------------

def summary(cfg: PretrainConfig, step: int, world: int) -> dict:
    """What the model saw in pretraining (shown by `compare`)."""
    recipe_set = {"recipe_set": list(cfg.recipe_set)} if cfg.recipe_set else {}    # old runs' summaries unchanged
    return {"source": cfg.source, "data": cfg.data, "recipe": cfg.rendered_recipe, **recipe_set,
            "synthetic_data": cfg.synthetic_data,
            "overlay": cfg.overlay, "mix_ratio": cfg.mix_ratio if cfg.source == "mixed" else None,
            "preset": cfg.preset, "target": cfg.target, "teacher": cfg.teacher if cfg.target == "clip" else None,
            "mask": cfg.mask_kind, "steps": step, "clips_seen": step * cfg.batch_size * world}


def describe_run(run: Run, s: StudentConfig) -> str:
    """One line saying what is about to run."""
    cfg, d, masker = run.cfg, run.d, run.masker
    recipe = cfg.rendered_recipe
    synthetic = f"rendered from {recipe!r}" if recipe else (cfg.data if cfg.source == "synthetic" else cfg.synthetic_data)
    natural = (cfg.data or "embedded real clips") + (f" + {cfg.overlay!r} objects" if cfg.overlay else "")
    data = {"synthetic": synthetic, "natural": natural, "mixed": f"{synthetic} / {natural}"}[cfg.source]
    params = count_parameters(run.raw_model) / 1e6
    what = f"{cfg.target} target" + (f" ({cfg.teacher})" if cfg.target == "clip" else "")
    amp = "fp32" if run.amp is None else str(run.amp).removeprefix("torch.")
    return (f"pretrain: {cfg.preset} student ({params:.1f}M params, {s.frames}x{s.size}px) on {cfg.source} clips "
            f"({data}), {what}, {masker.spec.kind} masks ({masker.num_masked}/{s.num_tokens} tokens), "
            f"steps {run.start}->{run.steps} x {cfg.batch_size * d.world} clips, peak lr {run.peak_lr:.2e}, "
            f"{d.device.type} {amp}, x{d.world} processes, {cfg.workers} workers each"
            + (f", clips painted on {cfg.render_device}" if cfg.render_device else ""))


def skipped_shards(source: Source) -> list[str]:
    """Unreadable shards the source left out of its index (shard sources, alone or in a mix)."""
    parts = [source, getattr(source, "synthetic", None)]
    return [bad for part in parts for bad in getattr(part, "bad_shards", [])]


def export(cfg: PretrainConfig, s: StudentConfig, model: PretrainVideoTransformer, steps: int, d: Dist,
           bad_shards: list[str] = ()) -> dict:
    """encoder.pt, run.json and loss.png of a finished run (rank 0); returns the run summary."""
    out = Path(cfg.out)
    info = summary(cfg, steps, d.world)
    if bad_shards:   # skipped with a warning at start; recorded with what the model saw
        info["skipped_shards"] = list(bad_shards)
    if d.main:
        save_encoder(out, encoder_state_dict(model), dataclasses.asdict(s), info)   # encoder.pt + .safetensors
        write_json_atomic(out / "run.json", {"config": to_dict(cfg), "student": dataclasses.asdict(s), "summary": info})
        if (out / LOG_FILE).is_file():
            loss_curve(out / LOG_FILE, out / "loss.png", f"{cfg.preset}, {cfg.source}, target {cfg.target}, mask {cfg.mask_kind}")
    return info
