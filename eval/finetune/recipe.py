"""The fine-tuning recipe's numbers, timm pieces and batch order, shared by `smile-synth finetune` (run.py) and the
study's device evaluations (eval/device_eval.py). Nothing here reads video, so it imports without PyAV.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import FinetuneConfig

CROP_RATIO = (3 / 4, 4 / 3)         # random resized crop's aspect range
TRAIN_SHORT_SIDE = 256 / 224        # decode at this x size, then crop (VideoMAE: short side 256 for 224 crops)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per pass over n entries (at least one)."""
    return max(1, n // (batch_size * world))


def schedule(cfg: FinetuneConfig, n_entries: int, world: int) -> tuple[int, int, float]:
    """(steps, warmup steps, peak lr): --steps or --epochs over the entries, --warmup-epochs (at most half
    the steps, for very short runs), and lr x global batch / 256."""
    per_epoch = steps_per_epoch(n_entries, cfg.batch_size, world)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch))
    warmup = min(round(cfg.warmup_epochs * per_epoch), steps // 2)
    return steps, warmup, cfg.lr * cfg.batch_size * world / 256


def build_recipe(cfg: FinetuneConfig, model: torch.nn.Module, steps: int, warmup: int, peak: float, n_classes: int):
    """timm's pieces of VideoMAE's recipe for `model` (a VideoClassifier): (AdamW over layer-decay groups,
    warmup + cosine schedule per step, Mixup/CutMix or None, its loss)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import param_groups_layer_decay
    from timm.scheduler import CosineLRScheduler

    groups = param_groups_layer_decay(model, cfg.weight_decay, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=cfg.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=peak, betas=(0.9, 0.999))
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, steps - warmup), lr_min=cfg.min_lr, warmup_t=warmup,
                                  warmup_lr_init=cfg.warmup_lr, warmup_prefix=True, t_in_epochs=False)
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob, switch_prob=cfg.mixup_switch_prob,
                  label_smoothing=cfg.label_smoothing, num_classes=n_classes) if cfg.mixes else None
    criterion = SoftTargetCrossEntropy() if mixup else (
        LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing > 0 else torch.nn.CrossEntropyLoss())
    return optimizer, scheduler, mixup, criterion


class StepBatches(torch.utils.data.Sampler):
    """The batches of steps [start, steps) for one rank: each epoch is a permutation of the entries
    (seeded by run seed and epoch) cut into batches of `batch_size` per rank, the last short batch
    dropped. Yields lists of (epoch, position, entry index)."""

    def __init__(self, n: int, batch_size: int, steps: int, start: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.steps, self.start = n, batch_size, steps, start
        self.seed, self.rank, self.world = seed, rank, world

    @property
    def per_epoch(self) -> int:
        return steps_per_epoch(self.n, self.batch, self.world)

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            epoch, k = divmod(step, self.per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            first = (k * self.world + self.rank) * self.batch
            idx = np.resize(order, first + self.batch)[first:first + self.batch]   # wraps when n < one batch
            yield [(epoch, first + p, int(i)) for p, i in enumerate(idx)]
