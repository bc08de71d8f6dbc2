"""The pretraining loop (as MAE's engine_pretrain.py beside main_pretrain.py; the setup is trainer.py).

run_loop(run, loader) trains steps run.start -> run.steps; each step: count the batch's bad samples
over all ranks, set the lr, train_one_step (seed, masks, targets, loss, backward, optimizer step),
log, and checkpoint when due.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from smile_synth.atomic import replacing
from smile_synth.errors import UserError

from .checkpoint import CHECKPOINT
from .config import PretrainConfig
from .distributed import Dist, all_ranks_mean, all_ranks_sum
from .masking import TrajectoryMasker
from .models import loss_fn
from .optim import lr_at
from .targets import Target, normalize, to_unit_video

LOG_FILE = "log.jsonl"
MIN_SAMPLES_FOR_BAD_SHARE = 32       # judge the bad-sample share only once this many were tried


@dataclasses.dataclass
class Run:
    """Everything the loop works with, built by trainer.pretrain."""
    cfg: PretrainConfig
    d: Dist
    model: torch.nn.Module               # what is called: raw_model, or it wrapped in DDP / torch.compile
    raw_model: torch.nn.Module
    target: Target
    masker: TrajectoryMasker
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None              # autocast dtype; None = fp32
    start: int                           # first step (> 0 when resumed)
    steps: int
    warmup: int                          # warmup steps
    peak_lr: float
    out: Path
    save: Callable[[int], None]          # save(step): checkpoint (rank 0 writes)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1024 + rank


# ---- one step ---------------------------------------------------------------------------------

def train_step(model, target: Target, masker: TrajectoryMasker, batch: dict, cfg: PretrainConfig,
               device: torch.device, amp: torch.dtype | None, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of one batch; returns the loss (not yet backpropagated) and, beside it, what the trivial
    solutions would score on the same masked tokens (trivial_loss)."""
    video = to_unit_video(batch["video"].to(device, non_blocking=True))  # (B, 3, T, H, W) in [0, 1]
    B = video.shape[0]
    masks = [masker(batch["coverage"], B, generator) for _ in range(2 if cfg.multiple_sampling else 1)]
    mask = torch.cat(masks).to(device, non_blocking=True)                # (B * samplings, N)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        with torch.no_grad():
            targets, weight = target_values(target, video, batch)          # teacher once per clip
        inputs = normalize(video)
        if cfg.multiple_sampling:
            inputs, targets = torch.cat([inputs, inputs]), torch.cat([targets, targets])
            weight = None if weight is None else torch.cat([weight, weight])
        loss = loss_fn(model, inputs, targets, mask, weight)
    return loss, trivial_loss(targets, mask, weight)


def target_values(target: Target, video: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's targets (B, N, D) and their 0/1 weights (B, N, D), or None when every entry counts:
    computed from the pixels, or (a target with of_batch, e.g. flow) carried by the batch."""
    of_batch = getattr(target, "of_batch", None)
    if of_batch is None:
        return target(video), None
    return of_batch(batch, video.device)


def trivial_loss(targets: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The trivial solutions' losses on the batch's masked tokens: (predicting zeros, the best constant).
    targets (B, N, D), mask bool (B, N), weight (B, N, D) 0/1 or None (all count) -> float32 (2,).

    The best constant is each target channel's mean over the masked tokens, so its loss is their
    per-channel variance. A student below it has learned something about the clip; one at it has
    found only the average. For pixel targets (standardized tokens) the two nearly coincide. With
    weights, both are means over the counted entries, as loss_fn's."""
    x = targets.flatten(0, 1).float()                                      # (B * N, D); fp32 under bf16 autocast too
    if weight is None:
        w = mask.flatten().float()                                         # (B * N,) 1 for masked tokens
        n = w.sum()
        mean, square = (w @ x) / n, (w @ (x * x)) / n                      # (D,) each: two matmuls, no gather
        return torch.stack([square.mean(), (square - mean * mean).mean()])
    w = weight.flatten(0, 1).float() * mask.flatten().float()[:, None]     # (B * N, D) 1 for counted entries
    count = w.sum(0)                                                       # (D,)
    total, sums, squares = count.sum().clamp_min(1.0), (w * x).sum(0), (w * x * x).sum(0)
    spread = squares - sums * sums / count.clamp_min(1.0)                  # (D,) each channel's squares about its mean
    return torch.stack([squares.sum() / total, spread.sum() / total])


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
                   model: torch.nn.Module, clip_grad: float | None) -> None:
    """Backward (scaled for fp16), optional clipping of `model`'s gradient norm, optimizer step
    (pretraining's and fine-tuning's)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()


def train_one_step(run: Run, batch: dict, step: int) -> tuple[float, tuple[float, float]]:
    """Train on one batch; returns its loss and trivial levels (zeros, best constant), averaged over
    ranks. A non-finite loss stops the run before the optimizer steps."""
    cfg, d = run.cfg, run.d
    torch.manual_seed(step_seed(cfg.seed, step, d.rank))             # drop-path noise, resumable
    coverage = batch.get("coverage")       # on the render device with --render-device: masks are drawn there
    gen = torch.Generator(coverage.device if coverage is not None else "cpu").manual_seed(step_seed(cfg.seed, step, d.rank))
    loss, trivial = train_step(run.model, run.target, run.masker, batch, cfg, d.device, run.amp, gen)
    value = all_ranks_mean(loss, d)
    if not math.isfinite(value):
        raise UserError(f"loss is {value} at step {step + 1}: stopped; the last good checkpoint "
                        f"({run.out / CHECKPOINT}) is untouched; lower --lr or set --clip-grad")
    optimizer_step(run.optimizer, run.scaler, loss, run.raw_model, cfg.clip_grad)
    return value, (all_ranks_mean(trivial[0], d), all_ranks_mean(trivial[1], d))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


# ---- bookkeeping ------------------------------------------------------------------------------

@dataclasses.dataclass
class SampleTally:
    """Bad samples over all ranks so far; stops the run when there are too many."""
    max_bad_share: float
    bad: int = 0
    tried: int = 0

    def add(self, batch: dict, batch_size: int, d: Dist) -> None:
        # every rank must take the same stop decisions, or the others hang in the next collective
        counts = all_ranks_sum([batch["bad"], batch_size + batch["bad"], batch["error"] is not None], d)
        if counts[2]:
            raise UserError(batch["error"] or "another rank met only bad samples; see its log")
        self.bad += int(counts[0])
        self.tried += int(counts[1])
        if self.tried >= MIN_SAMPLES_FOR_BAD_SHARE and self.bad > self.max_bad_share * self.tried:
            raise UserError(f"{self.bad} of {self.tried} samples were unreadable (more than --max-bad-share "
                            f"{self.max_bad_share}); fix or remove the bad videos (the log names them), "
                            "or raise --max-bad-share")


def keep_log_until(path: Path, step: int) -> None:
    """Cut log.jsonl back to the entries up to `step` (a resumed run logs the steps after it again;
    a line half-written by a killed run is dropped)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with replacing(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept))


class LossLog:
    """Per window of steps: mean loss (and its trivial levels, when given), clips/s and the share of time
    spent waiting for data, appended to log.jsonl (by rank 0: path None elsewhere)."""

    def __init__(self, path: Path | None, global_batch: int, start: int = 0):
        if path is not None:
            keep_log_until(path, start)
        self.file = open(path, "a") if path is not None else None  # noqa: SIM115 - closed by close()
        self.global_batch = global_batch
        self.reset()

    def reset(self) -> None:
        self.loss, self.trivial, self.n, self.waited, self.t0 = 0.0, None, 0, 0.0, time.perf_counter()

    def next_batch(self, batches) -> dict:
        t = time.perf_counter()
        batch = next(batches)
        self.waited += time.perf_counter() - t
        return batch

    def add(self, loss: float, trivial: tuple[float, float] | None = None) -> None:
        self.loss += loss
        if trivial is not None:
            self.trivial = [a + b for a, b in zip(self.trivial or (0.0, 0.0), trivial)]
        self.n += 1

    def flush(self, step: int, lr: float, bad: int) -> None:
        dt = time.perf_counter() - self.t0
        if self.file is not None:
            trivial = {} if self.trivial is None else \
                {"zero_loss": self.trivial[0] / self.n, "constant_loss": self.trivial[1] / self.n}
            self.file.write(json.dumps({"step": step, "loss": self.loss / self.n, **trivial, "lr": lr,
                                        "clips_per_s": self.n * self.global_batch / dt, "bad": bad,
                                        "data_wait": self.waited / dt, "time": time.time()}) + "\n")
            self.file.flush()
        self.reset()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def progress_bar(run: Run):
    """A tqdm bar on rank 0 with cfg.progress, else None."""
    if not (run.d.main and run.cfg.progress):
        return None
    from tqdm import tqdm
    return tqdm(total=run.steps, initial=run.start, desc="pretrain", unit="step", dynamic_ncols=True)


def checkpoint_due(cfg: PretrainConfig, done: int, steps: int) -> bool:
    """After `done` steps, short of the last (the trainer saves that one after the loop)?"""
    return bool(done % cfg.save_every == 0 or (cfg.keep_every and done % cfg.keep_every == 0)) and done != steps


# ---- the loop ---------------------------------------------------------------------------------

def run_loop(run: Run, loader: Iterable[dict]) -> None:
    """Steps run.start -> run.steps over the loader's batches (one per step, BatchStream's)."""
    cfg, d = run.cfg, run.d
    bar = progress_bar(run)
    log = LossLog(run.out / LOG_FILE if d.main else None, cfg.batch_size * d.world, run.start)
    samples = SampleTally(cfg.max_bad_share)
    run.model.train()
    try:
        batches = iter(loader)
        for step in range(run.start, run.steps):
            batch = log.next_batch(batches)
            assert batch["step"] == step, (batch["step"], step)
            samples.add(batch, cfg.batch_size, d)
            lr = set_lr(run.optimizer, lr_at(step, run.steps, run.warmup, run.peak_lr))
            value, trivial = train_one_step(run, batch, step)
            log.add(value, trivial)
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", constant=f"{trivial[1]:.4f}", lr=f"{lr:.2e}", bad=samples.bad)
            if done % cfg.log_every == 0 or done == run.steps:
                log.flush(done, lr, samples.bad)
            if checkpoint_due(cfg, done, run.steps):
                run.save(done)
    finally:
        if bar is not None:
            bar.close()
        log.close()
