"""Diagnostics for motion probes: a hand-crafted motion baseline and feature statistics.

They tell a probe that found nothing from features that hold nothing: the baseline shows what an
untrained motion cue reaches on the same examples, and per-video centering removes scenery (the
motion tasks' labels are balanced inside every video, so a video's mean feature carries no label).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .features import FeatureSet


class MotionStatistics(torch.nn.Module):
    """Hand-crafted motion features: video (B, 3, T, H, W) -> (B, 1, C), C = 3 * T + (T - 1) // 2."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        gray = video.mean(1)                                              # (B, T, H, W)
        feats = []
        for scale in (1, 2, 4):
            x = torch.nn.functional.avg_pool2d(gray, scale) if scale > 1 else gray
            feats += [(x[:, k:] - x[:, :-k]).abs().mean((1, 2, 3)).add(1e-4).log() for k in range(1, x.shape[1])]
            feats.append((x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3)).add(1e-4).log())   # sharpness
        step = (gray[:, 1:] - gray[:, :-1]).abs().mean((2, 3))              # (B, T-1)
        feats += [step[:, i] - step[:, -1 - i] for i in range(step.shape[1] // 2)]   # early vs late change
        return torch.stack(feats, 1)[:, None, :]


def centered(fs: FeatureSet) -> FeatureSet:
    """The features with each video's mean feature subtracted."""
    x = fs.features.copy()
    for item in np.unique(fs.items):
        x[fs.items == item] -= x[fs.items == item].mean(0)
    return replace(fs, features=x)


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of the normalized squared singular values) of centred (N, C) features: 1 for one
    direction of variation, C for isotropic ones."""
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p + 1e-12)).sum()))
