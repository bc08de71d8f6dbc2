"""Recipes: named, versioned presets describing what a clip looks like.

All lengths are given in pixels at the 224 px reference size and scale linearly with the
rendered size, so one recipe serves 112, 224 or 448 px clips alike.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from functools import cached_property
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smile_synth.config import build, load_mapping, parse_assignment, set_path, to_dict
from smile_synth.errors import UserError

from .trajectories import TRAJECTORIES

REFERENCE_SIZE = 224
DEFAULT_RECIPE = "mixed"   # what `generate` and `pretrain --source synthetic` render unless told otherwise
BACKGROUND_KINDS = ("black", "solid", "gradient", "photo", "perlin", "perlin3d", "spectral", "fractal", "given")
OBJECT_SOURCES = ("procedural", "cutout")
SHAPES = ("circle", "ellipse", "polygon", "star", "blob")
FILLS = ("flat", "gradient", "noise", "photo")
Pair = tuple[float, float]

# Field metadata of settings added after recipes were first fingerprinted: such a setting is left
# out of Recipe.to_dict (so of Recipe.key and dataset.json) while it holds its default, so existing
# datasets keep their fingerprint and resumed runs stay bit-identical.
OMIT_AT_DEFAULT = "omit_at_default"


def later_setting(default: Any) -> Any:
    """A dataclass field (immutable `default`) that stays out of the fingerprint while it is the default."""
    return field(default=default, metadata={OMIT_AT_DEFAULT: True})


def settings_dict(obj: Any) -> dict[str, Any]:
    """to_dict(obj) without the later settings (see OMIT_AT_DEFAULT) that hold their default, at any depth."""
    def prune(o: Any, d: dict[str, Any]) -> dict[str, Any]:
        for f in dataclasses.fields(o):
            v = getattr(o, f.name)
            if f.metadata.get(OMIT_AT_DEFAULT) and v == f.default:
                del d[f.name]
            elif dataclasses.is_dataclass(v):
                prune(v, d[f.name])
        return d
    return prune(obj, to_dict(obj))


def _pair(name: str, v: Pair, lo: float = 0.0, hi: float = float("inf")) -> None:
    if not (lo <= v[0] <= v[1] <= hi):
        bound = f"inside [{lo:g}, {hi:g}]" if hi != float("inf") else f">= {lo:g}"
        raise UserError(f"{name}={list(v)} is out of range: need min <= max, both {bound}")


def _weights(name: str, w: dict[str, float], known: tuple[str, ...]) -> None:
    for k, v in w.items():
        for part in k.split("+"):
            if part not in known:
                raise UserError(f"{name} has unknown kind {part!r}; choose from {', '.join(known)}")
        if v < 0:
            raise UserError(f"{name}.{k}={v} is negative; weights must be >= 0")
    if not w or sum(w.values()) <= 0:
        raise UserError(f"{name} needs at least one kind with a positive weight")


@dataclass(frozen=True)
class CameraSpec:
    prob: float = 0.0  # chance that a clip's background moves
    pan: float = 1.5  # max pan speed, px/frame
    zoom: float = 0.01  # max |d log zoom| per frame
    rotation: float = 0.5  # max deg/frame
    shake: float = 0.0  # shake amplitude, px

    def validate(self) -> None:
        if not 0 <= self.prob <= 1:
            raise UserError(f"background.camera.prob={self.prob} must be in [0, 1]")
        for k in ("pan", "zoom", "rotation", "shake"):
            if getattr(self, k) < 0:
                raise UserError(f"background.camera.{k}={getattr(self, k)} is negative; speeds must be >= 0")


@dataclass(frozen=True)
class BackgroundSpec:
    kinds: dict[str, float] = field(default_factory=lambda: {"black": 1.0})
    photo_dir: str | None = None  # None: the embedded sample photographs
    noise_octaves: int = 5
    spectral_alpha: Pair = (1.0, 2.5)  # 1/f^alpha exponent range
    bank_size: int = 16  # pre-rendered textures per kind (per-clip crops and warps)
    camera: CameraSpec = field(default_factory=CameraSpec)

    def validate(self) -> None:
        _weights("background.kinds", self.kinds, BACKGROUND_KINDS)
        _pair("background.spectral_alpha", self.spectral_alpha, 0.0, 4.0)
        if not 1 <= self.noise_octaves <= 10:
            raise UserError(f"background.noise_octaves={self.noise_octaves} must be in [1, 10]")
        if self.bank_size < 1:
            raise UserError(f"background.bank_size={self.bank_size} must be >= 1")


@dataclass(frozen=True)
class ObjectSpec:
    count: tuple[int, int] = (2, 2)
    sources: dict[str, float] = field(default_factory=lambda: {"procedural": 1.0})
    cutout_dir: str | None = None  # <root>/<category>/<image>.png with alpha
    cutout_without_alpha: str = "error"  # or "opaque": use the whole image as the object
    shapes: dict[str, float] = field(default_factory=lambda: {s: 1.0 for s in SHAPES})
    fills: dict[str, float] = field(default_factory=lambda: {f: 1.0 for f in FILLS})
    soft_edge_prob: float = 0.3
    size: Pair = (32.0, 128.0)  # longer side at the first frame, px
    aspect: Pair = (0.5, 2.0)  # width / height

    def validate(self) -> None:
        if not 0 <= self.count[0] <= self.count[1] <= 16:
            raise UserError(f"objects.count={list(self.count)} must satisfy 0 <= min <= max <= 16")
        _weights("objects.sources", self.sources, OBJECT_SOURCES)
        _weights("objects.shapes", self.shapes, SHAPES)
        _weights("objects.fills", self.fills, FILLS)
        if self.cutout_without_alpha not in ("error", "opaque"):
            raise UserError(f"objects.cutout_without_alpha={self.cutout_without_alpha!r}: use 'error' or 'opaque'")
        if self.sources.get("cutout", 0) > 0 and not self.cutout_dir:
            raise UserError("objects.sources uses 'cutout' but objects.cutout_dir is not set; set it to <root> with <root>/<category>/<image>.png")
        if not 0 <= self.soft_edge_prob <= 1:
            raise UserError(f"objects.soft_edge_prob={self.soft_edge_prob} must be in [0, 1]")
        _pair("objects.size", self.size, 2.0)
        _pair("objects.aspect", self.aspect, 0.05, 20.0)


@dataclass(frozen=True)
class MotionSpec:
    trajectories: dict[str, float] = field(default_factory=lambda: {"gaussian": 1.0})
    extent: Pair = (40.0, 180.0)  # gaussian / bezier path extent, px
    gaussian_points: int = 20  # random points before smoothing
    gaussian_sigma: float = 3.0  # smoothing, in points
    speed: Pair = (1.0, 6.0)  # px/frame
    accel: Pair = (0.05, 0.5)  # px/frame^2
    radius: Pair = (15.0, 70.0)  # circular / elliptical radii, px
    angular_speed: Pair = (3.0, 15.0)  # deg/frame along the ellipse
    amplitude: Pair = (5.0, 30.0)  # sinusoidal, px
    period: Pair = (6.0, 24.0)  # sinusoidal, frames
    rotation_speed: float = 6.0  # max object rotation, deg/frame
    scale_drift: float = 0.025  # max |d log size| per frame
    shear: float = 0.0  # max |shear|
    opacity: Pair = (1.0, 1.0)
    # Hold every object, and the background (camera, noise evolution), still at its frame-0 pose.
    # The clip draws the same random numbers as its moving twin (same recipe otherwise, seed, index),
    # so it shows the same objects and background: each frame is the moving clip's frame 0.
    # Given frames (overlay) are the user's video and play as they are; only the objects hold still.
    static: bool = later_setting(False)

    def validate(self) -> None:
        _weights("motion.trajectories", self.trajectories, tuple(TRAJECTORIES))
        for k in ("extent", "speed", "accel", "radius", "angular_speed", "amplitude"):
            _pair(f"motion.{k}", getattr(self, k))
        _pair("motion.period", self.period, 1e-3)
        _pair("motion.opacity", self.opacity, 0.0, 1.0)
        for k in ("rotation_speed", "scale_drift", "shear", "gaussian_sigma"):
            if getattr(self, k) < 0:
                raise UserError(f"motion.{k}={getattr(self, k)} is negative; it must be >= 0")
        if self.gaussian_points < 4:
            raise UserError(f"motion.gaussian_points={self.gaussian_points} must be >= 4")

    def scaled(self, f: float) -> "MotionSpec":
        s = lambda p: (p[0] * f, p[1] * f)  # noqa: E731
        return replace(self, extent=s(self.extent), speed=s(self.speed), accel=s(self.accel),
                       radius=s(self.radius), amplitude=s(self.amplitude))


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    version: int = 1
    description: str = ""
    background: BackgroundSpec = field(default_factory=BackgroundSpec)
    objects: ObjectSpec = field(default_factory=ObjectSpec)
    motion: MotionSpec = field(default_factory=MotionSpec)

    def validate(self) -> None:
        if self.version < 1:
            raise UserError(f"recipe version={self.version} must be >= 1")

    @cached_property
    def key(self) -> str:
        """Canonical fingerprint: any change to any setting gives other clips."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @cached_property
    def draw_key(self) -> str:
        """Fingerprint of what the random draws depend on: `key` less motion.static, which changes
        how a clip is shown, not what is drawn. Seeds clips and texture banks, so a static clip has
        the very objects and background of its moving twin. Equals `key` for moving recipes."""
        return replace(self, motion=replace(self.motion, static=False)).key if self.motion.static else self.key

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON (what `key` and dataset.json record); see OMIT_AT_DEFAULT."""
        return settings_dict(self)


_PHOTO_FILLS = {"flat": 1.0, "gradient": 1.0, "noise": 1.0, "photo": 1.0}
_PRESETS: dict[str, dict[str, Any]] = {
    "black+objects": dict(version=1, description="2 procedural objects on gaussian paths over black (SMILE's no-video setting)"),
    "noise+objects": dict(version=1, description="objects over evolving Perlin/fBm and 1/f^alpha noise textures",
                          background=dict(kinds={"perlin": 1.0, "perlin3d": 1.0, "spectral": 1.0}, camera=dict(prob=0.5))),
    "image+objects": dict(version=1, description="objects over still photographs with gentle camera motion",
                          background=dict(kinds={"photo": 1.0}, camera=dict(prob=0.7, shake=1.0))),
    "fractal+objects": dict(version=1, description="objects over IFS fractal textures",
                            background=dict(kinds={"fractal": 1.0}, camera=dict(prob=0.5))),
    "mixed": dict(version=1, description="every background, 1-3 objects, every trajectory kind, some shear and transparency",
                  background=dict(kinds={"black": 1.0, "solid": 0.5, "gradient": 0.5, "photo": 2.0, "perlin": 1.0,
                                         "perlin3d": 1.0, "spectral": 1.0, "fractal": 1.0},
                                  camera=dict(prob=0.5, shake=1.0)),
                  objects=dict(count=[1, 3]),
                  motion=dict(trajectories={"gaussian": 3.0, "constant_velocity": 1.0, "accelerating": 1.0, "bezier": 1.0,
                                            "circular": 1.0, "sinusoidal": 1.0, "bouncing": 1.0,
                                            "circular+constant_velocity": 0.5},
                              shear=0.15, opacity=[0.7, 1.0])),
    "overlay": dict(version=1, description="objects added onto given frames (SMILE stage 1 on natural video)",
                    background=dict(kinds={"given": 1.0})),
}


# the recipe's sections (background, objects, motion): a KEY=VALUE starting with one of these is a recipe setting
RECIPE_SECTIONS = tuple(f.name for f in dataclasses.fields(Recipe) if dataclasses.is_dataclass(getattr(Recipe(), f.name)))


def recipe_names() -> list[str]:
    return list(_PRESETS)


def describe_recipes() -> list[tuple[str, int, str]]:
    return [(n, p["version"], p["description"]) for n, p in _PRESETS.items()]


def get_recipe(spec: str | Recipe, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Resolve a preset name, or a YAML/JSON file (`base: NAME` + overrides), plus KEY=VALUE overrides."""
    if isinstance(spec, Recipe) and not overrides:
        return spec
    if isinstance(spec, Recipe):
        data, base = {}, spec
    elif spec in _PRESETS:
        data, base = {"name": spec, **copy.deepcopy(_PRESETS[spec])}, None  # overrides must not leak into the preset
    elif Path(spec).suffix in (".yaml", ".yml", ".json"):
        data = load_mapping(spec)
        parent = data.pop("base", None)
        base = get_recipe(parent) if parent else None
        data.setdefault("name", Path(spec).stem)
    else:
        raise UserError(f"unknown recipe {spec!r}; choose one of {', '.join(_PRESETS)} or pass a .yaml/.json file (see `smile-synth recipes`)")
    for text in overrides:
        keys, value = parse_assignment(text)
        set_path(data, keys, value)
    return build(Recipe, data, base)
