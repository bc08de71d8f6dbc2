"""The torch rasteriser: batches of clip plans painted on any torch device (cuda, cpu, ...).

    >>> from generators import render_batch
    >>> out = render_batch("black+objects", seed=0, indices=range(256), frames=16, size=64, device="cuda")
    >>> out.video            # uint8 (256, 16, 64, 64, 3) on the device

Clip i is painted from plan_clip(recipe, seed, i), the draws render_clip makes, so it has the same
objects on the same paths as render_clip's clip i; only the rasteriser differs (bilinear sampling by
grid_sample instead of OpenCV's fixed-point warps, rounding once instead of at each uint8 step: a
level or two at edges; over 55 dB PSNR and 0.99 mask IoU against render_clip).

Plans are stacked into arrays (BatchPlan, numpy: cheap to pickle from DataLoader workers); the
device then paints every clip of the batch at once:
- backgrounds: banked textures, texture volumes and photos live in one atlas tensor per (device,
  recipe, seed, size), uploaded once; one trilinear grid_sample reads every textured clip's
  camera view (z picks the slice; volumes blend neighbouring slices). Black, solid and gradient
  backgrounds are computed in place.
- objects: one bilinear grid_sample per object layer for the whole batch (sprites come with the plan:
  they are per-clip draws), composited back to front with the compositor's ownership rule (a pixel
  is object k's when k gives more than half its final colour).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .backgrounds import STILL_KINDS
from .compositor import premultiply, sprite_matrices
from .plan import ClipPlan, plan_clip, plan_overlay, resolve
from .recipes import Recipe
from .resources import Resources, resources_for

KINDS = ("black", "solid", "gradient", "photo", "perlin", "spectral", "fractal", "perlin3d")  # codes 0..7
ATLAS_KINDS = ("photo", *STILL_KINDS, "perlin3d")     # painted from the atlas
MAX_ATLAS_PHOTOS = 256                                 # photos kept on a device (a few hundred MB at 224 px)
PIXELS_PER_PASS = 2 ** 26                              # clip pixels painted at once: about 4 GB of working tensors


# BatchPlan's per-clip fields, and those of them the painting reads as tensors (the rest steer it)
PAINTED = ("camera", "colour", "gradient", "positions", "sprites", "inverse", "opacity")
PER_CLIP = ("indices", "kind", "source", "counts", *PAINTED)


@dataclass
class BatchPlan:
    """B clip plans of one (recipe, seed, frames, size) as stacked arrays; Tr = frames drawn (1 for a
    still synthetic clip, which is repeated, else frames); K = most objects in a clip.

    kind int8 (B,) code into KINDS; source int32 (B,) bank item or photo; camera float32 (B, Tr, 2, 3)
    output px -> source px; colour uint8 (B, 3); gradient float32 (B, 7) two colours and an angle;
    positions float32 (B, Tr) volume time; sprites uint8 (B, K, 4, h, w) premultiplied RGBA, zero
    padded; inverse float32 (B, K, Tr, 2, 3) frame px -> sprite px; opacity float32 (B, K, Tr), 0 for
    absent objects; counts int64 (B,) objects per clip. overlay: objects only (kind etc. unused).
    The PAINTED fields may be torch tensors already on the painting device (BatchPlan.to: a pool of
    plans uploaded once, training.device_pool); kind, source, indices and counts stay numpy, since
    they steer the painting from the host."""
    recipe: Recipe
    seed: int
    frames: int
    size: int
    indices: np.ndarray
    overlay: bool
    static: bool
    kind: np.ndarray
    source: np.ndarray
    camera: np.ndarray
    colour: np.ndarray
    gradient: np.ndarray
    positions: np.ndarray
    sprites: np.ndarray
    inverse: np.ndarray
    opacity: np.ndarray
    counts: np.ndarray

    def rows(self, start: int, stop: int) -> BatchPlan:
        """The plan of clips start..stop-1 (same K and sprite canvas)."""
        return dataclasses.replace(self, **{f: getattr(self, f)[start:stop] for f in PER_CLIP})

    def take(self, rows: np.ndarray) -> BatchPlan:
        """The plan of clips at positions `rows` int64 (n,) (any order, repeats allowed); fields held on
        a device are gathered there."""
        on: dict[torch.device, torch.Tensor] = {}        # the rows uploaded once per device

        def pick(a):
            if not isinstance(a, torch.Tensor):
                return a[rows]
            if a.device not in on:
                on[a.device] = torch.as_tensor(rows, device=a.device)
            return a[on[a.device]]
        return dataclasses.replace(self, **{f: pick(getattr(self, f)) for f in PER_CLIP})

    def to(self, device: str | torch.device) -> BatchPlan:
        """This plan with its PAINTED fields uploaded to `device` (once; take() then gathers there)."""
        return dataclasses.replace(self, **{f: torch.as_tensor(getattr(self, f), device=device) for f in PAINTED})

    @property
    def drawn_frames(self) -> int:
        """Tr: frames painted (1 when a still synthetic clip is painted once and repeated)."""
        return self.inverse.shape[2] if self.inverse.shape[1] else self.camera.shape[1]


def stack_plans(plans: Sequence[ClipPlan]) -> BatchPlan:
    """Stack clip plans of one (recipe, seed, frames, size) into a BatchPlan."""
    p0 = plans[0]
    if any((p.recipe.draw_key, p.seed, p.frames, p.size, p.background is None) !=
           (p0.recipe.draw_key, p0.seed, p0.frames, p0.size, p0.background is None) for p in plans):
        raise ValueError("a BatchPlan holds plans of one recipe, seed, frames, size and kind (rendered or overlay)")
    B, T, overlay = len(plans), p0.frames, p0.background is None
    static = p0.static
    Tr = 1 if static and not overlay else T        # a still clip is painted once; held overlays play their frames
    K = max((len(p.tracks) for p in plans), default=0)
    sprites = [[premultiply(t.sprite) for t in p.tracks] for p in plans]
    h = max([2] + [s.shape[0] for row in sprites for s in row])
    w = max([2] + [s.shape[1] for row in sprites for s in row])
    plan = BatchPlan(
        recipe=p0.recipe, seed=p0.seed, frames=T, size=p0.size, indices=np.array([p.index for p in plans], np.int64),
        overlay=overlay, static=static,
        kind=np.zeros(B, np.int8), source=np.zeros(B, np.int32), camera=np.zeros((B, Tr, 2, 3), np.float32),
        colour=np.zeros((B, 3), np.uint8), gradient=np.zeros((B, 7), np.float32), positions=np.zeros((B, Tr), np.float32),
        sprites=np.zeros((B, K, 4, h, w), np.uint8), inverse=np.zeros((B, K, Tr, 2, 3), np.float32),
        opacity=np.zeros((B, K, Tr), np.float32), counts=np.array([len(p.tracks) for p in plans], np.int64))
    for b, p in enumerate(plans):
        bg = p.background
        if bg is not None:
            plan.kind[b] = KINDS.index(bg.kind)
            plan.source[b] = bg.source
            if bg.camera is not None:
                plan.camera[b] = bg.camera[:Tr]
            if bg.colour is not None:
                plan.colour[b] = bg.colour
            if bg.gradient is not None:
                plan.gradient[b] = [*bg.gradient[0].ravel(), bg.gradient[1]]
            if bg.positions is not None:
                plan.positions[b] = bg.positions[:Tr]
        for k, (track, sprite) in enumerate(zip(p.tracks, sprites[b])):
            sh, sw = sprite.shape[:2]
            plan.sprites[b, k, :, :sh, :sw] = sprite.transpose(2, 0, 1)
            held = 1 if static else Tr                 # static: the frame-0 pose on every painted frame
            M = sprite_matrices(track)[:held]           # sprite px -> frame px
            square = np.concatenate([M, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(M), 1, 3))], axis=1)
            inv = np.linalg.inv(square)[:, :2]                                      # frame px -> sprite px
            plan.inverse[b, k] = inv if held == Tr else np.repeat(inv, Tr, axis=0)
            plan.opacity[b, k] = track.opacity[:held] if held == Tr else np.repeat(track.opacity[:1], Tr)
    return plan


def concat_plans(parts: Sequence[BatchPlan]) -> BatchPlan:
    """numpy BatchPlans of one (recipe, seed, frames, size, kind) -> one, objects and sprite canvases
    zero padded to the largest K, h, w (a padded object is absent: opacity 0, empty sprite)."""
    K = max(p.sprites.shape[1] for p in parts)
    h, w = max(p.sprites.shape[3] for p in parts), max(p.sprites.shape[4] for p in parts)

    def padded(p: BatchPlan, field: str) -> np.ndarray:
        a = getattr(p, field)
        if field not in ("sprites", "inverse", "opacity"):
            return a
        pad = [(0, 0), (0, K - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        if field == "sprites":
            pad[3], pad[4] = (0, h - a.shape[3]), (0, w - a.shape[4])
        return np.pad(a, pad)
    return dataclasses.replace(parts[0], **{f: np.concatenate([padded(p, f) for p in parts]) for f in PER_CLIP})


def plan_batch(recipe: str | Recipe, seed: int, indices: Sequence[int], frames: int = 16, size: int = 224) -> BatchPlan:
    """The stacked plans of clips `indices` of (recipe, seed): all the batch's draws, no pixels."""
    return stack_plans([plan_clip(recipe, seed, int(i), frames, size) for i in indices])


def plan_overlay_batch(recipe: str | Recipe, seed: int, indices: Sequence[int], frames: int, size: int) -> BatchPlan:
    """The stacked object plans of overlay_clip for clips `indices` of (recipe, seed)."""
    return stack_plans([plan_overlay(recipe, seed, int(i), frames, size) for i in indices])


# ---- what a batch renders to ----------------------------------------------------------------

@dataclass
class RenderedBatch:
    """Clips painted on a device.

    video uint8 (B, T, H, W, 3); owner int8 (B, T, H, W): the object (0-based, back to front) that owns
    each pixel, -1 for none: object k's pixel mask is owner == k (the compositor's masks, disjoint);
    boxes float32 (B, K, T, 4) x1 y1 x2 y2 (x2, y2 exclusive) of each object's mask, NaN where not
    visible or absent; counts int64 (B,) objects per clip. Still clips' tensors may be broadcast
    views over time (call .contiguous() before writing into them)."""
    video: torch.Tensor
    owner: torch.Tensor
    boxes: torch.Tensor
    counts: torch.Tensor

    def objects(self) -> torch.Tensor:
        """bool (B, T, H, W): the union of the objects' masks (what trajectory masking needs)."""
        return self.owner >= 0

    def masks(self) -> torch.Tensor:
        """bool (B, K, T, H, W) per-object pixel masks (K = most objects in a clip; absent ones empty)."""
        k = torch.arange(self.boxes.shape[1], device=self.owner.device).view(1, -1, 1, 1, 1)
        return self.owner.unsqueeze(1) == k


# ---- device resources --------------------------------------------------------------------------

class Atlas:
    """The textures and photos of one (recipe, seed, size) on one device: float32 (1, 3, D, C, C) slices
    zero padded into a C = 2 x size canvas, with each slice's own (h, w) in hw float32 (D, 2). The banks
    are uploaded once; a photo is uploaded when a batch first needs it, into the next free slice."""

    def __init__(self, res: Resources, device: torch.device):
        self.res, self.device, self.canvas = res, device, 2 * res.size
        self.bank_first: dict[str, int] = {}     # banked kind -> the slice of its item 0
        self.bank_stride: dict[str, int] = {}    # slices per item: a volume's length, else 1
        images: list[np.ndarray] = []
        kinds = {k for k, w in res.recipe.background.kinds.items() if w > 0}
        for kind in (k for k in ATLAS_KINDS if k in kinds and k != "photo"):
            bank = res.bank(kind)
            self.bank_first[kind], self.bank_stride[kind] = len(images), bank.shape[1] if kind == "perlin3d" else 1
            images.extend(bank.reshape(-1, *bank.shape[-3:]))                     # a volume: its slices in order
        self.banked = len(images)
        self.photo_slice: dict[int, int] = {}    # photo item -> its slice, after the banks
        self.slices = torch.zeros(1, 3, 0, self.canvas, self.canvas, dtype=torch.float32, device=device)
        self.hw = torch.zeros(0, 2, dtype=torch.float32, device=device)
        self._put(0, images)

    def _put(self, start: int, images: Sequence[np.ndarray], room: int = 0) -> None:
        """Write images (h, w, 3) into slices start, start + 1, ...; the tensors grow to hold them and at
        least `room` slices (>= 2: align_corners needs a span)."""
        C, D, need = self.canvas, self.slices.shape[2], max(2, start + len(images), room)
        if need > D:
            self.slices = torch.cat([self.slices, self.slices.new_zeros(1, 3, need - D, C, C)], dim=2)
            self.hw = torch.cat([self.hw, self.hw.new_full((need - D, 2), 2.0)])
        for d, img in enumerate(images, start):
            h, w = img.shape[:2]
            self.slices[0, :, d, :h, :w] = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1)
        if images:
            self.hw[start:start + len(images)] = torch.tensor([img.shape[:2] for img in images], dtype=torch.float32)

    def need_photos(self, items: Sequence[int]) -> None:
        """Make sure these photos are in the atlas (a full atlas starts its photos over)."""
        wanted = {int(i) for i in items}
        new = sorted(wanted - self.photo_slice.keys())
        if not new:
            return
        if len(self.photo_slice) + len(new) > MAX_ATLAS_PHOTOS:
            self.photo_slice, new = {}, sorted(wanted)
            self.slices[:, :, self.banked:] = 0          # the zero padding around smaller photos
        start = self.banked + len(self.photo_slice)
        self.photo_slice.update((i, start + n) for n, i in enumerate(new))
        lib = self.res.photos()          # room for as many photos as the atlas keeps: grown once
        self._put(start, [lib.get(i) for i in new], room=self.banked + min(len(lib), MAX_ATLAS_PHOTOS))

    def slices_of(self, kinds: np.ndarray, items: np.ndarray) -> np.ndarray:
        """int64 (n,) first slice of each (kind code, item) pair (n,), (n,); banks by arithmetic."""
        out = np.empty(len(kinds), np.int64)
        for code in np.unique(kinds):
            rows, name = kinds == code, KINDS[code]
            if name == "photo":
                out[rows] = [self.photo_slice[int(i)] for i in items[rows]]
            else:   # a bank's items are consecutive, `stride` slices apart
                out[rows] = self.bank_first[name] + items[rows].astype(np.int64) * self.bank_stride[name]
        return out


_ATLASES: dict[tuple[str, str, int, int], Atlas] = {}


def atlas_for(recipe: Recipe, seed: int, size: int, device: torch.device) -> Atlas:
    """The process's Atlas of (recipe, seed, size) on `device` (a few kept, oldest dropped first)."""
    key = (str(device), recipe.draw_key, int(seed), int(size))
    if key not in _ATLASES:
        if len(_ATLASES) >= 4:
            _ATLASES.pop(next(iter(_ATLASES)))
        _ATLASES[key] = Atlas(resources_for(recipe, seed, size), device)
    return _ATLASES[key]


# ---- pure tensor steps ---------------------------------------------------------------------------

def pixel_grid(size: int, device: torch.device) -> torch.Tensor:
    """float32 (size * size, 3): (x, y, 1) of every pixel centre, row-major."""
    y, x = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                          torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones_like(x).flatten()], dim=1)


def map_pixels(maps: torch.Tensor, size: int) -> torch.Tensor:
    """maps float32 (..., 2, 3) affines -> (..., size, size, 2) the (x, y) each output pixel maps to."""
    xy = pixel_grid(size, maps.device) @ maps.transpose(-1, -2)                   # (..., P, 2)
    return xy.unflatten(-2, (size, size))


def reflect101(u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Coordinates folded into [0, n - 1] as OpenCV's BORDER_REFLECT_101 does (for linear sampling,
    folding the coordinate equals reading the reflected pixels)."""
    period = 2 * (n - 1)
    u = torch.remainder(u, period)
    return torch.where(u > n - 1, period - u, u)


def gradient_at(xy: torch.Tensor, gradient: torch.Tensor, canvas: int) -> torch.Tensor:
    """backgrounds.gradient_paint evaluated at source px xy (n, T, H, W, 2), no uint8 step in between.
    gradient (n, 7): two colours in [0, 1] and an angle. -> float32 (n, 3, T, H, W) in [0, 255]."""
    c0, c1, a = gradient[:, 0:3], gradient[:, 3:6], gradient[:, 6]
    x = xy.clamp(0, canvas - 1) * (2.0 / (canvas - 1)) - 1.0                      # linspace(-1, 1, canvas)
    view = (-1, 1, 1, 1)
    proj = (torch.cos(a).view(view) * x[..., 0] + torch.sin(a).view(view) * x[..., 1]) * 0.5 + 0.5
    t = proj.clamp(0, 1).unsqueeze(1)                                              # (n, 1, T, H, W)
    img = c0.view(-1, 3, 1, 1, 1) + (c1 - c0).view(-1, 3, 1, 1, 1) * t
    return torch.floor(img * 255)


def paint_backgrounds(plan: BatchPlan, device: torch.device) -> torch.Tensor:
    """float32 (B, 3, Tr, S, S) background values 0..255 (integers, as the uint8 backgrounds are)."""
    B, S, Tr = len(plan.kind), plan.size, plan.drawn_frames
    colour = torch.as_tensor(plan.colour, device=device).float()
    video = colour.view(B, 3, 1, 1, 1).expand(B, 3, Tr, S, S).clone()              # solid; black is 0
    textured = np.flatnonzero(plan.kind >= KINDS.index("gradient"))
    if len(textured) == 0:
        return video
    camera = torch.as_tensor(plan.camera[textured], device=device)
    xy = map_pixels(camera, S)                                                     # (n, Tr, S, S, 2)
    grad = np.flatnonzero(plan.kind[textured] == KINDS.index("gradient"))
    if len(grad):
        src = reflect101(xy[torch.from_numpy(grad).to(device)], torch.tensor(2.0 * S, device=device))
        colours = torch.as_tensor(plan.gradient[textured[grad]], device=device)
        video[torch.from_numpy(textured[grad]).to(device)] = gradient_at(src, colours, 2 * S)
    sampled = np.flatnonzero(plan.kind[textured] != KINDS.index("gradient"))
    if len(sampled):
        rows = textured[sampled]
        atlas = atlas_for(plan.recipe, plan.seed, S, device)
        if (plan.kind[rows] == KINDS.index("photo")).any():
            atlas.need_photos(plan.source[rows][plan.kind[rows] == KINDS.index("photo")])
        first = torch.from_numpy(atlas.slices_of(plan.kind[rows], plan.source[rows])).to(device)
        hw = atlas.hw[first]                                                       # (n, 2) h, w
        s = torch.from_numpy(sampled).to(device)
        u = reflect101(xy[s][..., 0], hw[:, 1].view(-1, 1, 1, 1))
        v = reflect101(xy[s][..., 1], hw[:, 0].view(-1, 1, 1, 1))
        z = first.float().view(-1, 1, 1, 1) + torch.as_tensor(plan.positions[rows], device=device).view(-1, Tr, 1, 1)
        C, D = atlas.canvas, atlas.slices.shape[2]
        grid = torch.stack([u * (2.0 / (C - 1)) - 1, v * (2.0 / (C - 1)) - 1, z.expand_as(u) * (2.0 / (D - 1)) - 1], dim=-1)
        out = F.grid_sample(atlas.slices, grid.reshape(1, -1, S, S, 3), mode="bilinear",
                            padding_mode="border", align_corners=True)             # (1, 3, n * Tr, S, S)
        video[torch.from_numpy(rows).to(device)] = torch.round(out[0].unflatten(1, (len(rows), Tr)).transpose(0, 1))
    return video


def composite_layers(video: torch.Tensor, plan: BatchPlan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint the plan's objects back to front onto video float32 (B, 3, Tr, S, S) 0..255 (not rounded:
    the compositor rounds each uint8 step, this only once at the end; they differ by a level at most).

    Ownership: a running owner and its share of the colour; object k's share after the layers in front
    of it is a_k prod (1 - a_j), and only a layer with a > 1/2 (uint8 alpha > 127) can take a pixel
    over. Per layer one grid_sample and a few passes over the batch: memory traffic bounds this.
    -> (video, owner int8 (B, Tr, S, S), -1 = none)."""
    B, _, Tr, S, _ = video.shape
    K, h, w = plan.sprites.shape[1], plan.sprites.shape[3], plan.sprites.shape[4]
    owner = torch.full((B, Tr, S, S), -1, dtype=torch.int8, device=device)
    share = torch.zeros((B, Tr, S, S), dtype=torch.float32, device=device)
    if K == 0:
        return video, owner
    sprites = torch.as_tensor(plan.sprites, device=device)
    # frame px -> grid_sample's [-1, 1] sprite coordinates, folded into the affines (align_corners=True)
    to_grid = torch.as_tensor(plan.inverse, device=device) * torch.tensor([[2.0 / (w - 1)], [2.0 / (h - 1)]], device=device)
    to_grid[..., 2] -= 1
    opacity = torch.as_tensor(plan.opacity, device=device).view(B, K, 1, Tr, 1, 1)
    resident = isinstance(plan.opacity, torch.Tensor)   # a device plan: always scale, no host sync to decide
    for k in range(K):
        grid = map_pixels(to_grid[:, k], S)                                        # (B, Tr, S, S, 2)
        rgba = F.grid_sample(sprites[:, k].float(), grid.view(B, Tr * S, S, 2), mode="bilinear",
                             padding_mode="zeros", align_corners=True).view(B, 4, Tr, S, S)
        if resident or (plan.opacity[:, k] < 1).any():
            rgba.mul_(opacity[:, k])
        a = rgba[:, 3]                                                             # (B, Tr, S, S) 0..255
        keep = a.mul(-1 / 255).add_(1)                                             # 1 - alpha
        video = torch.addcmul(rgba[:, :3], video, keep.unsqueeze(1))               # premultiplied "over"
        take = a >= 127.5
        share.mul_(keep)
        owner.masked_fill_(take, k)
        share = torch.where(take, 1 - keep, share)
    return video, torch.where(share > 0.5, owner, torch.tensor(-1, dtype=torch.int8, device=device))


def mask_boxes(owner: torch.Tensor, K: int) -> torch.Tensor:
    """owner int8 (B, T, H, W) -> float32 (B, K, T, 4) x1 y1 x2 y2 (exclusive) of owner == k, NaN if empty."""
    B, T, H, W = owner.shape
    out = torch.full((B, K, T, 4), float("nan"), device=owner.device)
    for k in range(K):
        m = owner == k
        cols, rows = m.any(dim=2).to(torch.uint8), m.any(dim=3).to(torch.uint8)   # (B, T, W), (B, T, H)
        seen = m.flatten(2).any(dim=2)                                              # (B, T)
        box = torch.stack([cols.argmax(2), rows.argmax(2), W - cols.flip(2).argmax(2), H - rows.flip(2).argmax(2)], -1)
        out[:, k] = torch.where(seen.unsqueeze(-1), box.float(), out[:, k])
    return out


# ---- the rasteriser ----------------------------------------------------------------------------

def rasterise(plan: BatchPlan, device: str | torch.device = "cpu", frames: torch.Tensor | None = None,
              pixels_per_pass: int = PIXELS_PER_PASS) -> RenderedBatch:
    """Paint a BatchPlan on `device`, at most `pixels_per_pass` clip pixels at a time (bounded memory).
    frames: uint8 (B, T, S, S, 3) on the device, for overlay plans."""
    device = torch.device(device)
    B, T, S = len(plan.counts), plan.frames, plan.size
    if plan.overlay and (frames is None or tuple(frames.shape) != (B, T, S, S, 3)):
        raise ValueError(f"an overlay plan needs frames uint8 ({B}, {T}, {S}, {S}, 3)")
    step = max(1, pixels_per_pass // (plan.drawn_frames * S * S))
    if B <= step:
        return _rasterise(plan, device, frames)
    parts = [_rasterise(plan.rows(i, i + step), device, None if frames is None else frames[i:i + step])
             for i in range(0, B, step)]
    return RenderedBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("video", "owner", "boxes", "counts")))


def _rasterise(plan: BatchPlan, device: torch.device, frames: torch.Tensor | None) -> RenderedBatch:
    B, T, S = len(plan.counts), plan.frames, plan.size
    if plan.overlay:
        base = frames.to(device).permute(0, 4, 1, 2, 3).float()
    else:
        base = paint_backgrounds(plan, device)
    video, owner = composite_layers(base, plan, device)
    boxes = mask_boxes(owner, plan.sprites.shape[1])
    video = video.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)  # (B, Tr, S, S, 3)
    Tr = video.shape[1]
    if Tr != T:                                                                    # a still clip: frame 0 repeated
        video, owner, boxes = video.expand(B, T, S, S, 3), owner.expand(B, T, S, S), boxes.expand(-1, -1, T, -1)
    return RenderedBatch(video.contiguous() if Tr == T else video, owner, boxes,
                         torch.as_tensor(plan.counts, device=device))


def render_batch(recipe: str | Recipe, seed: int, indices: Sequence[int], frames: int = 16, size: int = 224,
                 device: str | torch.device = "cpu") -> RenderedBatch:
    """Clips `indices` of (recipe, seed), painted on `device`: the objects and paths of render_clip's."""
    return rasterise(plan_batch(resolve(recipe), seed, indices, frames, size), device)


def overlay_batch(frames: torch.Tensor, recipe: str | Recipe = "overlay", seed: int = 0,
                  indices: Sequence[int] = (0,)) -> RenderedBatch:
    """overlay_clip for a batch: objects of clips `indices` of (recipe, seed) onto frames uint8
    (B, T, S, S, 3) already on their device; the frames are not modified."""
    B, T, S = frames.shape[:3]
    if len(indices) != B:
        raise ValueError(f"{len(indices)} indices for {B} clips of frames")
    return rasterise(plan_overlay_batch(resolve(recipe), seed, indices, T, S), frames.device, frames)
