"""What the student reconstructs: VideoMAE's per-patch normalized pixels, MaskFeat's HOG, MotionMAE-style frame
differences, or standardized CLIP tokens.

Videos here are float (B, 3, T, H, W) in [0, 1] unless said otherwise; targets are (B, N, D) over
all N tokens in (t, h, w) order, from which the trainer takes the masked ones.

Targets are registered by name (`--target`): a builder (cfg, grid, tubelet, patch, device) -> Target
under @register_target("name"); build_target(cfg, ...) picks cfg.target's. Adding a target is one
function and its registration. A target that needs the clip's ground truth rather than its pixels
(flow) has of_batch(batch, device) -> (values, weight) instead: the data workers compute it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from smile_synth.errors import UserError

from .flow_target import FlowTarget, check_flow_sources
from .hog import hog_dim, hog_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_video(video: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, 3, T, H, W) in [0, 1]."""
    return video.permute(0, 4, 1, 2, 3).float().div_(255.0)


_STATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}   # (device, dtype, mean, std) -> (mean, std) tensors


def normalize(video: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(B, 3, T, H, W) in [0, 1] -> per-channel standardized (the student's input).

    mean and std are uploaded once per device and dtype: a tensor built from Python numbers on every call is
    a host-to-device copy per batch, which on CUDA also waits for the work queued before it."""
    key = (video.device, video.dtype, tuple(mean), tuple(std))
    if key not in _STATS:
        _STATS[key] = tuple(torch.tensor(v, device=video.device, dtype=video.dtype).view(1, 3, 1, 1, 1)
                            for v in (mean, std))
    m, s = _STATS[key]
    return (video - m) / s


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, N, tubelet * patch * patch, 3), tokens in (t, h, w) order and the pixels
    of each token in (t, y, x) order, as VideoMAE."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)                                  # (B, t, h, w, p0, p1, p2, C)
    return x.reshape(B, -1, tubelet * patch * patch, C)


def pixel_targets(video: torch.Tensor, tubelet: int, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """VideoMAE's normalized-pixel target: each token's pixels standardized per colour channel.

    (B, 3, T, H, W) in [0, 1] -> (B, N, tubelet * patch^2 * 3)."""
    x = patchify(video, tubelet, patch)
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps)
    return x.flatten(2)


def motion_targets(video: torch.Tensor, tubelet: int, patch: int, eps: float = 1e-6) -> torch.Tensor:
    """MotionMAE-style target: each tubelet's frame differences (frame k+1 - frame k inside the tubelet),
    standardized per token and colour channel as pixel_targets.

    (B, 3, T, H, W) in [0, 1] -> (B, N, (tubelet - 1) * patch^2 * 3)."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H, W)
    diff = (x[:, :, :, 1:] - x[:, :, :, :-1]).reshape(B, C, -1, H, W)      # (B, 3, T' * (tubelet - 1), H, W)
    return pixel_targets(diff, tubelet - 1, patch, eps)


def standardize_tokens(tokens: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardize each channel over a clip's tokens: (B, N, D) -> (B, N, D), zero mean, unit std per (clip, channel)."""
    mean = tokens.mean(dim=1, keepdim=True)
    std = tokens.var(dim=1, unbiased=False, keepdim=True).add(eps).sqrt()
    return (tokens - mean) / std


def resize_token_grid(tokens: torch.Tensor, grid: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) on an h x w grid -> (B, H'*W', D) on the `out` grid: the mean over each output
    token's area when shrinking (14x14 -> 7x7 averages 2x2 blocks), bilinear when growing."""
    if tuple(grid) == tuple(out):
        return tokens
    B, _, D = tokens.shape
    x = tokens.transpose(1, 2).reshape(B, D, *grid)
    shrink = out[0] <= grid[0] and out[1] <= grid[1]
    x = F.interpolate(x.float(), size=out, mode="area") if shrink else \
        F.interpolate(x.float(), size=out, mode="bilinear", align_corners=False)
    return x.flatten(2).transpose(1, 2).to(tokens.dtype)


# ---- the registry ------------------------------------------------------------------------------

class Target(Protocol):
    """__call__(video float (B, 3, T, H, W) in [0, 1]) -> (B, N, dim), run under no_grad."""
    dim: int

    def __call__(self, video: torch.Tensor) -> torch.Tensor: ...


# builder(cfg: PretrainConfig, grid (T', H', W') of the student, tubelet, patch, device) -> Target
TargetBuilder = Callable[..., Target]
TARGETS: dict[str, TargetBuilder] = {}


def register_target(name: str) -> Callable[[TargetBuilder], TargetBuilder]:
    """Decorator: register a target builder under `name` (a --target choice)."""
    def register(builder: TargetBuilder) -> TargetBuilder:
        TARGETS[name] = builder
        return builder
    return register


def build_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    """The target of PretrainConfig `cfg` (cfg.target) for a student with this token grid and tubelet/patch sizes."""
    return TARGETS[cfg.target](cfg, grid, tubelet, patch, device)


class TeacherTarget:
    """A frozen CLIP image tower's standardized patch tokens (training.teacher.ClipTeacher)."""

    def __init__(self, teacher: torch.nn.Module):
        self.teacher, self.dim = teacher, teacher.width

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self.teacher(video)


class PixelTarget:
    """VideoMAE's normalized pixels (pixel_targets)."""

    def __init__(self, tubelet: int, patch: int):
        self.tubelet, self.patch = tubelet, patch
        self.dim = 3 * tubelet * patch * patch

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return pixel_targets(video.float(), self.tubelet, self.patch)


class HogTarget:
    """MaskFeat's HOG of the first frame of each tubelet (training.hog.hog_targets)."""

    def __init__(self, tubelet: int, patch: int):
        self.tubelet, self.patch = tubelet, patch
        self.dim = hog_dim(patch)            # UserError unless patch is a multiple of 8: at build, before data work

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return hog_targets(video, self.tubelet, self.patch)


class MotionTarget:
    """Frame differences inside each tubelet (motion_targets)."""

    def __init__(self, tubelet: int, patch: int):
        if tubelet < 2:
            raise UserError(f"--target motion needs tubelets of 2 or more frames (frame differences), not {tubelet}")
        self.tubelet, self.patch = tubelet, patch
        self.dim = 3 * (tubelet - 1) * patch * patch

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return motion_targets(video.float(), self.tubelet, self.patch)


@register_target("clip")
def clip_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    """CLIP teacher cfg.teacher with weights cfg.teacher_pretrained, its tokens resized to the student's grid."""
    from .teacher import load_teacher  # open_clip is heavy: only when asked for
    return TeacherTarget(load_teacher(cfg.teacher, cfg.teacher_pretrained, tubelet, grid[1:]).to(device))


@register_target("pixel")
def pixel_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    return PixelTarget(tubelet, patch)


@register_target("hog")
def hog_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    return HogTarget(tubelet, patch)


@register_target("motion")
def motion_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    return MotionTarget(tubelet, patch)


@register_target("flow")
def flow_target(cfg, grid: tuple[int, int, int], tubelet: int, patch: int, device: torch.device) -> Target:
    """Each token's mean exact flow (training.flow_target); clips without known motion stop here, in one line."""
    check_flow_sources(cfg)
    return FlowTarget(tubelet)
