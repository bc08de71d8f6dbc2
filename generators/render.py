"""render_clip / overlay_clip: recipe -> background + objects -> compositor -> Clip."""
from __future__ import annotations

import numpy as np

from smile_synth.clip import Clip, check_geometry
from smile_synth.errors import UserError

from .backgrounds import render_background
from .compositor import composite
from .objects import choose, hold_pose, make_tracks
from .recipes import Recipe, get_recipe
from .resources import resources_for
from .seeding import clip_rngs


def _resolve(recipe: str | Recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else _named(recipe)


_NAMED: dict[str, Recipe] = {}


def _named(name: str) -> Recipe:
    if name not in _NAMED:
        _NAMED[name] = get_recipe(name)
    return _NAMED[name]


def _meta(r: Recipe, seed: int, index: int, background: str, tracks) -> dict:
    meta = {
        "recipe": r.name, "recipe_version": r.version, "seed": int(seed), "index": int(index),
        "background": background,
        "objects": [{"category": t.category, "trajectory": t.trajectory, "source": t.source} for t in tracks],
    }
    if r.motion.static:  # only then: moving clips keep their meta byte for byte
        meta["static"] = True  # the trajectories were drawn but not followed
    return meta


def _repeat_frames(video: np.ndarray, masks: np.ndarray, boxes: np.ndarray, T: int):
    """One composed frame -> T copies: video (1, H, W, 3) -> (T, H, W, 3), masks (K, 1, H, W) ->
    (K, T, H, W), boxes (K, 1, 4) -> (K, T, 4). Real copies, writable like a moving clip's arrays."""
    return np.repeat(video, T, axis=0), np.repeat(masks, T, axis=1), np.repeat(boxes, T, axis=1)


def render_clip(recipe: str | Recipe, seed: int, index: int, frames: int = 16, size: int = 224) -> Clip:
    """Clip `index` of (recipe, seed): a pure function of its arguments.

    Returns Clip(video uint8 (T, H, W, 3), masks bool (K, T, H, W), boxes float32 (K, T, 4), meta).
    With motion.static every frame is frame 0 of the moving clip of the same (seed, index): the
    same draws are made, then frame 0 alone is composed and repeated.
    """
    check_geometry(frames, size)
    r = _resolve(recipe)
    if "given" in r.background.kinds:
        raise UserError(f"recipe {r.name!r} overlays objects on given frames; call generators.overlay_clip(frames, ...) instead")
    static = r.motion.static
    bg_rng, obj_rng = clip_rngs(r.draw_key, seed, index)
    res = resources_for(r, seed, size)
    kind = choose(bg_rng, r.background.kinds)
    video = render_background(kind, bg_rng, frames, size, r.background, res, still=static)  # (1, ...) if static
    tracks = make_tracks(obj_rng, r, frames, size, res)  # all T frames: the same draws either way
    if not static:
        video, masks, boxes = composite(video, tracks)
    else:
        video, masks, boxes = _repeat_frames(*composite(video, [hold_pose(t, 1) for t in tracks]), frames)
    return Clip(video, masks, boxes, _meta(r, seed, index, kind, tracks))


def overlay_clip(frames: np.ndarray, recipe: str | Recipe = "overlay", seed: int = 0, index: int = 0) -> Clip:
    """Add recipe's moving objects onto given frames (uint8 (T, H, W, 3), square, H % 16 == 0).

    The frames are not modified; the objects of (recipe, seed, index) are the same whatever the frames.
    With motion.static the objects stay at their frame-0 pose on every frame, which play as given."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise UserError(f"overlay frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    T, H, W = frames.shape[:3]
    if H != W:
        raise UserError(f"overlay frames must be square (crop first), got {H}x{W}")
    check_geometry(T, H)
    r = _resolve(recipe)
    _, obj_rng = clip_rngs(r.draw_key, seed, index)
    tracks = make_tracks(obj_rng, r, T, H, resources_for(r, seed, H))
    posed = [hold_pose(t, T) for t in tracks] if r.motion.static else tracks
    video, masks, boxes = composite(frames.copy(), posed)
    return Clip(video, masks, boxes, _meta(r, seed, index, "given", tracks))


def prepare(recipe: str | Recipe, seed: int, size: int) -> Recipe:
    """Check the recipe's folders and build its texture banks now, in this process.

    Call it before forking workers: bad folders fail at once with one clear error, and forked
    workers share the banks instead of each building its own."""
    r = _resolve(recipe)
    res = resources_for(r, seed, size)
    kinds = {k for k, w in r.background.kinds.items() if w > 0}
    if "photo" in kinds or r.objects.fills.get("photo", 0) > 0:
        res.photos()
    if r.objects.sources.get("cutout", 0) > 0:
        res.cutouts()
    for kind in sorted(kinds & {"perlin", "perlin3d", "spectral", "fractal"}):
        res.bank(kind)
    return r
