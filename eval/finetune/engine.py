"""The fine-tuning loop and the multi-view test (as VideoMAE's engine_for_finetuning.py; setup is run.py).

train_loop: per step, mixup/cutmix on the batch (timm's Mixup on (B, 3*T, H, W), so one box and one
lambda hold for all frames of a clip), soft-target cross-entropy (or label-smoothed CE without mixup),
backward, optional clipping, AdamW step, lr from timm's cosine scheduler per step.
test_views: softmax averaged over the clips x crops views of each test example.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch

from smile_synth.errors import UserError
from smile_synth.video import BadVideo, VideoItem
from training.distributed import Dist, all_ranks_mean, all_ranks_sum
from training.engine import LOG_FILE, LossLog, SampleTally, optimizer_step, step_seed
from training.targets import normalize, to_unit_video

from ..features import ExampleSpec, item_views, video_examples
from ..tasks import Example

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loop:
    """What the loop works with, built by run.py."""
    model: torch.nn.Module                # what is called (DDP-wrapped or not)
    raw_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object                     # timm CosineLRScheduler, stepped per update
    scaler: torch.amp.GradScaler
    mixup: object | None                  # timm Mixup, or None
    criterion: torch.nn.Module
    amp: torch.dtype | None
    d: Dist
    start: int
    steps: int
    seed: int
    clip_grad: float | None
    clips_per_step: int                   # global clips per step (log's clips/s)
    log_every: int
    save_every: int
    max_bad_share: float
    out: Path
    save: object                          # save(step)
    progress: bool = True


def mix_clips(mixup, video: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Mixup/CutMix applied per clip, consistently over frames: video (B, 3, T, H, W), labels (B,)
    -> mixed video, soft targets (B, classes) summing to one. Odd batches lose their last clip (timm's
    Mixup pairs clip i with clip B-1-i)."""
    if len(video) % 2:
        video, label = video[:-1], label[:-1]
    B, C, T, H, W = video.shape
    flat = video.reshape(B, C * T, H, W)
    flat, target = mixup(flat, label)
    return flat.reshape(B, C, T, H, W), target


def train_step(loop: Loop, batch: dict, step: int) -> float:
    """One optimizer step on a batch; returns the loss averaged over ranks."""
    d = loop.d
    g = step_seed(loop.seed, step, d.rank)
    torch.manual_seed(g)                               # drop path, dropout
    np.random.seed(g % 2**32)                          # timm Mixup draws lambda and the mode from numpy
    video = batch["video"].to(d.device, non_blocking=True)
    label = batch["label"].to(d.device, non_blocking=True)
    if loop.mixup is not None:
        video, target = mix_clips(loop.mixup, video, label)
    else:
        target = label
    with torch.autocast(d.device.type, dtype=loop.amp or torch.float32, enabled=loop.amp is not None):
        logits = loop.model(video)
    loss = loop.criterion(logits.float(), target)
    value = all_ranks_mean(loss, d)
    if not math.isfinite(value):
        raise UserError(f"loss is {value} at step {step + 1}: stopped; the last good checkpoint is untouched; "
                        "lower --lr or set --clip-grad")
    optimizer_step(loop.optimizer, loop.scaler, loss, loop.raw_model, loop.clip_grad)
    return value


def train_loop(loop: Loop, loader) -> int:
    """Steps loop.start -> loop.steps; returns the number of bad (skipped) training samples."""
    from tqdm import tqdm

    d = loop.d
    bar = tqdm(total=loop.steps, initial=loop.start, desc="finetune", unit="step", dynamic_ncols=True,
               disable=not (d.main and loop.progress))
    log = LossLog(loop.out / LOG_FILE if d.main else None, loop.clips_per_step, loop.start)
    tally = SampleTally(loop.max_bad_share)
    loop.model.train()
    try:
        batches = iter(loader)
        for step in range(loop.start, loop.steps):
            batch = log.next_batch(batches)
            n = batch["videos"]            # the bad share is of videos, as "bad" counts videos (not clips)
            tally.add({"bad": batch["bad"], "error": None}, n, d)     # stops past --max-bad-share only
            loop.scheduler.step_update(step)
            lr = max(g["lr"] for g in loop.optimizer.param_groups)
            clips = 0 if batch["video"] is None else len(batch["video"])
            # a batch left with too few clips (all its videos unreadable) is skipped on every rank, as DDP needs
            if all_ranks_sum([clips < (2 if loop.mixup is not None else 1)], d)[0]:
                value = float("nan")
            else:
                value = train_step(loop, batch, step)
                log.add(value)
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", bad=tally.bad)
            if (done % loop.log_every == 0 or done == loop.steps) and log.n:
                log.flush(done, lr, tally.bad)
            if done % loop.save_every == 0 and done != loop.steps:
                loop.save(done)
    finally:
        bar.close()
        log.close()
    return tally.bad


# ------------------------------------------------------------------------------------------ testing

def test_examples(items: list[VideoItem], task: str, frames: int, stride: int, windows: int, clips: int
                  ) -> tuple[list[Example], dict[str, str]]:
    """The test examples of `items` (labels task: one per video with `clips` evenly spread clips), and
    the videos skipped (path -> why)."""
    out, skipped = [], {}
    for i, item in enumerate(items):
        try:
            out += video_examples(task, i, item, frames, stride, windows, clips)
        except BadVideo as e:
            skipped[str(item.path)] = str(e)
            log.warning("skipped test video %s", e)
    return out, skipped


@torch.no_grad()
def test_views(model: torch.nn.Module, items: list[VideoItem], examples: list[Example], spec: ExampleSpec,
               d: Dist, amp: torch.dtype | None, batch_views: int = 16, progress: bool = True
               ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(probabilities float64 (E, classes), labels int64 (E,), skipped videos) of the examples, each the
    mean softmax over its clips x crops views. Ranks share the videos and gather the results."""
    from tqdm import tqdm

    model.eval()
    by_item: dict[int, list[int]] = {}
    for k, e in enumerate(examples):
        by_item.setdefault(e.item, []).append(k)
    mine = sorted(by_item)[d.rank::d.world]
    probs: dict[int, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for it in tqdm(mine, desc="test", unit="video", disable=not (d.main and progress), dynamic_ncols=True):
        ks = by_item[it]
        try:
            views = item_views(items[it], [examples[k] for k in ks], spec)          # (E, V, T, S, S, 3)
        except BadVideo as e:
            skipped[str(items[it].path)] = str(e)
            log.warning("skipped test video %s", e)
            continue
        E, V = views.shape[:2]
        flat = views.reshape(E * V, *views.shape[2:])
        out = []
        for i in range(0, E * V, batch_views):
            video = normalize(to_unit_video(torch.from_numpy(flat[i:i + batch_views]).to(d.device)))
            with torch.autocast(d.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                out.append(model(video).float().softmax(-1).cpu().numpy())
        p = np.concatenate(out).reshape(E, V, -1).mean(1)
        for k, row in zip(ks, p):
            probs[k] = row
    if d.world > 1:
        import torch.distributed as dist
        parts: list = [None] * d.world
        dist.all_gather_object(parts, (probs, skipped))
        probs, skipped = {}, {}
        for p, s in parts:
            probs.update(p)
            skipped.update(s)
    keys = sorted(probs)
    labels = np.array([examples[k].label for k in keys], np.int64)
    return (np.stack([probs[k] for k in keys]).astype(np.float64) if keys else np.zeros((0, 0))), labels, skipped
