"""MaskFeat's HOG target as plain tensor ops: fixed [-1, 0, 1] filters, hard binning, average pooling.

Per colour channel: central-difference gradients ([-1, 0, 1]), 9 unsigned orientation bins over
[0, 180) degrees, each pixel voting its gradient magnitude into one bin, the votes averaged over
8x8-pixel cells and each cell's 9-bin histogram L2-normalised. This is skimage.feature.hog(channel,
orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2") computed per channel,
batched and on whatever device the video is on (tests/test_hog.py checks the two agree).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from smile_synth.errors import UserError

CELL = 8        # px per cell side
BINS = 9        # unsigned orientation bins of 20 degrees each
EPS = 1e-5      # skimage's L2 block-norm eps: h / sqrt(|h|^2 + eps^2)


def hog_dim(patch: int) -> int:
    """Length of one token's HOG target: (patch / 8)^2 cells x 3 channels x 9 bins (patch 16 -> 108)."""
    check_patch(patch)
    return 3 * BINS * (patch // CELL) ** 2


def check_patch(patch: int) -> None:
    """A token must hold whole cells."""
    if patch % CELL:
        raise UserError(f"--target hog needs a patch size that is a multiple of {CELL} (its {CELL}x{CELL}-pixel "
                        f"cells), not {patch}; use a patch of {CELL * max(1, round(patch / CELL))} or another --target")


def hog_cells(images: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-channel HOG cell histograms: images (B, C, H, W) in [0, 1] -> (B, C, H // 8, W // 8, 9).

    Bin i holds the mean over the cell's 64 pixels of the gradient magnitude (intensity units per
    2 px) of the pixels whose orientation is in [20 i, 20 (i + 1)) degrees, rows pointing down as in
    skimage; each cell's 9 bins are then L2-normalised (all zero for a flat cell). Pixels past the
    last whole cell are ignored, as in skimage. Computed in float32 (float64 input stays float64)
    whatever autocast is on: bf16 gradients would move orientations across bin edges."""
    B, C, H, W = images.shape
    x = images if images.dtype == torch.float64 else images.float()
    with torch.autocast(x.device.type, enabled=False):
        x = x.reshape(B * C, 1, H, W)
        # the [-1, 0, 1] filters as differences of shifted views: the same numbers as F.conv2d with that
        # kernel, ~7x faster on CPU (a 3x1 conv2d takes the slow path). Valid part only, then a zero
        # ring: the outermost pixels have no gradient (skimage's edge rule), rather than the false edges
        # that zero padding or the halved ones that replicate padding would give
        g_row = F.pad(x[:, :, 2:] - x[:, :, :-2], (0, 0, 1, 1))              # I[y + 1] - I[y - 1], rows down
        g_col = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (1, 1, 0, 0))        # I[x + 1] - I[x - 1]
        magnitude = torch.hypot(g_row, g_col)
        degrees = torch.rad2deg(torch.atan2(g_row, g_col)).remainder_(180.0)  # unsigned, [0, 180]
        # a rounding to exactly 180 degrees is 0 degrees, so wrap it into bin 0 (skimage drops it)
        bins = degrees.div_(180.0 / BINS).floor_().long().remainder_(BINS)
        votes = torch.zeros(B * C, BINS, H, W, dtype=x.dtype, device=x.device)
        votes.scatter_(1, bins, magnitude)                                    # (B C, 9, H, W), one-hot x magnitude
        hist = F.avg_pool2d(votes, CELL)                                      # (B C, 9, H / 8, W / 8), floor
        hist = hist / hist.square().sum(dim=1, keepdim=True).add_(eps * eps).sqrt_()
    return hist.reshape(B, C, BINS, H // CELL, W // CELL).permute(0, 1, 3, 4, 2)


def hog_targets(video: torch.Tensor, tubelet: int, patch: int, eps: float = EPS) -> torch.Tensor:
    """MaskFeat's HOG target of each token, from the first frame of its tubelet.

    video (B, 3, T, H, W) in [0, 1] -> (B, N, 3 * 9 * (patch / 8)^2), tokens in (t, h, w) order as
    patchify's; a token's vector is its cells' histograms in (cell_y, cell_x, channel, bin) order,
    bin fastest. patch must be a multiple of 8 (UserError otherwise); H and W multiples of patch."""
    check_patch(patch)
    B, C, T, H, W = video.shape
    t = T // tubelet
    frames = video[:, :, : t * tubelet : tubelet]                             # (B, C, T', H, W): frame 0, tubelet, ...
    cells = hog_cells(frames.transpose(1, 2).reshape(B * t, C, H, W), eps)    # (B T', C, H/8, W/8, 9)
    k, h, w = patch // CELL, H // patch, W // patch                           # cells per token side, token grid
    cells = cells.reshape(B, t, C, h, k, w, k, BINS).permute(0, 1, 3, 5, 4, 6, 2, 7)  # (B, t, h, w, ky, kx, C, bin)
    return cells.reshape(B, t * h * w, k * k * C * BINS)

