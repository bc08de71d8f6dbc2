"""AdamW with VideoMAE's parameter groups and a linear-warmup cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices; not norms, biases, or tokens (ndim <= 1 or in model.no_weight_decay())."""
    skip = getattr(model, "no_weight_decay", lambda: set())()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def lr_at(step: int, total: int, warmup: int, peak: float, final: float = 0.0) -> float:
    """Learning rate of step (0-based): linear warmup to `peak` over `warmup` steps, then cosine to `final`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps(warmup: float, total: int) -> int:
    """`warmup` < 1 is a share of the run, >= 1 a number of steps."""
    return round(warmup * total) if warmup < 1 else min(int(warmup), total)
