"""Clip plans: every random draw of a clip and none of its pixels.

plan_clip(recipe, seed, index) makes exactly the draws render_clip makes (background kind, camera,
texture or photo, sprites, paths, angles, scales, shear, opacity), in the same order from the same
streams; a rasteriser then paints the plan: paint_clip (numpy/OpenCV, render.py) or
rasterise (torch, torch_render.py). So clip i of (recipe, seed) has the same objects on the same
paths on either backend. A plan is small (pose curves, sprites, indices into the texture banks) and
can be drawn in a DataLoader worker while the device paints the previous batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from smile_synth.clip import check_geometry
from smile_synth.errors import UserError

from .backgrounds import BackgroundPlan, draw_background
from .objects import ObjectTrack, choose, make_tracks
from .recipes import Recipe, get_recipe
from .resources import resources_for
from .seeding import clip_rngs

_NAMED: dict[str, Recipe] = {}


def resolve(recipe: str | Recipe) -> Recipe:
    """A Recipe, or the named preset (parsed once per process)."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in _NAMED:
        _NAMED[recipe] = get_recipe(recipe)
    return _NAMED[recipe]


@dataclass
class ClipPlan:
    """The draws of clip `index` of (recipe, seed) at frames x size px.

    background: None for overlays (objects go onto given frames). tracks: back to front, over all
    `frames` frames (with recipe.motion.static they are drawn as moving ones, then held at frame 0
    by the rasteriser)."""
    recipe: Recipe
    seed: int
    index: int
    frames: int
    size: int
    background: BackgroundPlan | None
    tracks: list[ObjectTrack]

    @property
    def static(self) -> bool:
        return self.recipe.motion.static

    def meta(self) -> dict:
        r = self.recipe
        meta = {
            "recipe": r.name, "recipe_version": r.version, "seed": int(self.seed), "index": int(self.index),
            "background": self.background.kind if self.background is not None else "given",
            "objects": [{"category": t.category, "trajectory": t.trajectory, "source": t.source} for t in self.tracks],
        }
        if r.motion.static:  # only then: moving clips keep their meta byte for byte
            meta["static"] = True  # the trajectories were drawn but not followed
        return meta


def plan_clip(recipe: str | Recipe, seed: int, index: int, frames: int = 16, size: int = 224) -> ClipPlan:
    """The draws of render_clip(recipe, seed, index, frames, size), in its order."""
    check_geometry(frames, size)
    r = resolve(recipe)
    if "given" in r.background.kinds:
        raise UserError(f"recipe {r.name!r} overlays objects on given frames; call generators.overlay_clip(frames, ...) instead")
    bg_rng, obj_rng = clip_rngs(r.draw_key, seed, index)
    res = resources_for(r, seed, size)
    kind = choose(bg_rng, r.background.kinds)
    background = draw_background(kind, bg_rng, frames, size, r.background, res)
    tracks = make_tracks(obj_rng, r, frames, size, res)  # all T frames: the same draws either way
    return ClipPlan(r, int(seed), int(index), frames, size, background, tracks)


def plan_overlay(recipe: str | Recipe, seed: int, index: int, frames: int, size: int) -> ClipPlan:
    """The draws of overlay_clip(<frames x size x size frames>, recipe, seed, index): its objects only."""
    check_geometry(frames, size)
    r = resolve(recipe)
    _, obj_rng = clip_rngs(r.draw_key, seed, index)
    tracks = make_tracks(obj_rng, r, frames, size, resources_for(r, seed, size))
    return ClipPlan(r, int(seed), int(index), frames, size, None, tracks)
