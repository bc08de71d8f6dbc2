"""`smile-synth masks`: pictures of what the student sees: frames with their object tokens, tube masks
and trajectory masks."""
from __future__ import annotations

import numpy as np
import torch

from smile_synth.errors import UserError
from training.data import BatchStream, build_source
from training.device_batches import realise
from training.masking import MaskSpec, TrajectoryMasker
from training.trainer import student_config_for

MASKED_GREY = 96          # masked tokens are drawn flat grey
OBJECT_TINT = np.array([255, 64, 32], np.float32)


def token_image(values: np.ndarray, grid: tuple[int, int, int], patch: int) -> np.ndarray:
    """Per-token values (N,) on a (T', H', W') grid -> per-pixel (T', H'*patch, W'*patch)."""
    t, h, w = grid
    return np.repeat(np.repeat(values.reshape(t, h, w), patch, axis=1), patch, axis=2)


def masked_frames(frames: np.ndarray, mask: np.ndarray, grid: tuple[int, int, int], patch: int) -> np.ndarray:
    """frames uint8 (T', H, W, 3) (one per tubelet), mask bool (N,) -> masked tokens flat grey."""
    hidden = token_image(mask, grid, patch)[..., None]
    return np.where(hidden, np.uint8(MASKED_GREY), frames)


def object_frames(frames: np.ndarray, objects: np.ndarray, grid: tuple[int, int, int], patch: int) -> np.ndarray:
    """Tint the object tokens (bool (N,)) and draw the token grid lines."""
    tint = token_image(objects, grid, patch)[..., None]
    out = np.where(tint, 0.55 * frames + 0.45 * OBJECT_TINT, frames).astype(np.uint8)
    out[:, ::patch, :] = out[:, ::patch, :] // 2 + 60
    out[:, :, ::patch] = out[:, :, ::patch] // 2 + 60
    return out


def mask_sheet(videos: np.ndarray, object_tokens: np.ndarray, masks: dict[str, np.ndarray],
               grid: tuple[int, int, int], tubelet: int, patch: int, gap: int = 2) -> np.ndarray:
    """One block per clip: a row of its frames (first of each tubelet) with object tokens tinted, then
    one row per entry of `masks` with the masked tokens grey.

    videos uint8 (B, T, H, W, 3); object_tokens bool (B, N); masks {name: bool (B, N)}. -> uint8 (H', W', 3)."""
    rows = []
    for b in range(videos.shape[0]):
        frames = videos[b, ::tubelet]                                       # (T', H, W, 3)
        rows.append(object_frames(frames, object_tokens[b], grid, patch))
        rows += [masked_frames(frames, m[b], grid, patch) for m in masks.values()]
    t, H, W = rows[0].shape[:3]
    sheet = np.full((len(rows) * (H + gap) - gap, t * (W + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c in range(t):
            sheet[r * (H + gap): r * (H + gap) + H, c * (W + gap): c * (W + gap) + W] = row[c]
    return sheet


def preview_masks(cfg, n: int = 4) -> np.ndarray:
    """The mask sheet of the first `n` clips a run with PretrainConfig `cfg` would train on:
    frames with object tokens, the tube mask and the tube + trajectory mask."""
    s = student_config_for(cfg, 1)
    batch = BatchStream(build_source(cfg, s), n, s.tubelet, s.patch).batch(0)
    if batch["error"]:
        raise UserError(batch["error"])
    if cfg.render_device is not None:   # the batch holds plans: paint them where the run would, then look here
        batch = realise(batch, torch.device(cfg.render_device), s.tubelet, s.patch)
    video = batch["video"].cpu()
    coverage = batch["coverage"].cpu() if batch["coverage"] is not None else torch.zeros(n, s.num_tokens)
    gen = torch.Generator().manual_seed(cfg.seed)
    masks = {kind: TrajectoryMasker(MaskSpec(kind, cfg.mask_ratio, cfg.traj_unmask_ratio, cfg.object_threshold),
                                    s.grid)(coverage, n, gen).numpy() for kind in ("tube", "traj")}
    objects = (coverage >= cfg.object_threshold).numpy()
    return mask_sheet(video.numpy(), objects, masks, s.grid, s.tubelet, s.patch)
