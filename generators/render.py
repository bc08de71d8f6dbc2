"""render_clip / overlay_clip: recipe -> background + objects -> compositor -> Clip."""
from __future__ import annotations

import numpy as np

from smile_synth.clip import Clip
from smile_synth.errors import UserError

from .backgrounds import paint_background
from .compositor import composite
from .flow import annotate, check_annotations
from .objects import hold_pose
from .plan import ClipPlan, plan_clip, plan_overlay, resolve
from .recipes import Recipe
from .resources import resources_for


def _repeat_frames(video: np.ndarray, masks: np.ndarray, boxes: np.ndarray, T: int):
    """One composed frame -> T copies: video (1, H, W, 3) -> (T, H, W, 3), masks (K, 1, H, W) ->
    (K, T, H, W), boxes (K, 1, 4) -> (K, T, 4). Real copies, writable like a moving clip's arrays."""
    return np.repeat(video, T, axis=0), np.repeat(masks, T, axis=1), np.repeat(boxes, T, axis=1)


def paint_clip(plan: ClipPlan) -> Clip:
    """The numpy/OpenCV rasteriser: the Clip of a rendered (not overlay) plan.

    With motion.static every frame is frame 0 of the moving clip of the same (seed, index): frame 0
    alone is composed and repeated."""
    res = resources_for(plan.recipe, plan.seed, plan.size)
    video = paint_background(plan.background, res, plan.frames, plan.size, still=plan.static)  # (1, ...) if static
    if not plan.static:
        video, masks, boxes = composite(video, plan.tracks)
    else:
        video, masks, boxes = _repeat_frames(*composite(video, [hold_pose(t, 1) for t in plan.tracks]), plan.frames)
    return Clip(video, masks, boxes, plan.meta())


def render_clip(recipe: str | Recipe, seed: int, index: int, frames: int = 16, size: int = 224,
                annotations: tuple[str, ...] = ()) -> Clip:
    """Clip `index` of (recipe, seed): a pure function of its arguments.

    Returns Clip(video uint8 (T, H, W, 3), masks bool (K, T, H, W), boxes float32 (K, T, 4), meta).
    With motion.static every frame is frame 0 of the moving clip of the same (seed, index): the
    same draws are made, then frame 0 alone is composed and repeated.
    annotations: names from generators.flow.ANNOTATIONS ("flow", "tracks") to add to the Clip; the
    pixels, masks, boxes and meta are the same with or without them.
    """
    check_annotations(annotations)
    plan = plan_clip(recipe, seed, index, frames, size)
    return annotate(plan, paint_clip(plan), annotations)


def overlay_clip(frames: np.ndarray, recipe: str | Recipe = "overlay", seed: int = 0, index: int = 0,
                 annotations: tuple[str, ...] = ()) -> Clip:
    """Add recipe's moving objects onto given frames (uint8 (T, H, W, 3), square, H % 16 == 0).

    The frames are not modified; the objects of (recipe, seed, index) are the same whatever the frames.
    With motion.static the objects stay at their frame-0 pose on every frame, which play as given.
    annotations: as render_clip's; the given frames' own motion is unknown, so only object pixels
    have valid flow."""
    check_annotations(annotations)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise UserError(f"overlay frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    T, H, W = frames.shape[:3]
    if H != W:
        raise UserError(f"overlay frames must be square (crop first), got {H}x{W}")
    plan = plan_overlay(recipe, seed, index, T, H)   # checks T and H (check_geometry)
    posed = [hold_pose(t, T) for t in plan.tracks] if plan.static else plan.tracks
    video, masks, boxes = composite(frames.copy(), posed)
    return annotate(plan, Clip(video, masks, boxes, plan.meta()), annotations)


def prepare(recipe: str | Recipe, seed: int, size: int) -> Recipe:
    """Check the recipe's folders and build its texture banks now, in this process.

    Call it before forking workers: bad folders fail at once with one clear error, and forked
    workers share the banks instead of each building its own."""
    r = resolve(recipe)
    res = resources_for(r, seed, size)
    kinds = {k for k, w in r.background.kinds.items() if w > 0}
    if "photo" in kinds or r.objects.fills.get("photo", 0) > 0:
        res.photos()
    if r.objects.sources.get("cutout", 0) > 0:
        res.cutouts()
    for kind in sorted(kinds & {"perlin", "perlin3d", "spectral", "fractal"}):
        res.bank(kind)
    return r
