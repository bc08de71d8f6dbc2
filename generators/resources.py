"""Per-process caches shared by all clips of one (recipe, seed): texture banks, photo and cut-out
libraries. Built lazily from their own random streams, so a clip never depends on which worker
rendered it or what that worker rendered before."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from smile_synth.assets import embedded_photos
from smile_synth.errors import UserError
from smile_synth.images import check_image, list_images, read_image, read_rgb

from . import textures as tx
from .recipes import Recipe
from .seeding import bank_rng

VOLUME_FRAMES = 16  # time slices in an evolving-noise volume (played back and forth)


class LazyFiles:
    """Files decoded on first use and kept in a bounded LRU cache (memory stays flat over a long run).

    A file that fails to decode is skipped with a warning, deterministically: item i falls back to
    the next decodable file, whichever worker asks."""

    what = "file"

    def __init__(self, files: list[Path], cache_items: int):
        self.files = files
        self.cache_items = cache_items
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, k: int) -> Any:
        raise NotImplementedError

    def get(self, i: int) -> Any:
        n = len(self.files)
        for j in range(n):
            k = (i + j) % n
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
            if k in self._bad:
                continue
            try:
                item = self._load(k)
            except (ValueError, OSError) as e:
                self._bad.add(k)
                warnings.warn(f"skipping undecodable {self.what} {self.files[k]}: {e}", stacklevel=2)
                continue
            self._cache[k] = item
            if len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
            return item
        raise UserError(f"no {self.what} in {self.files[0].parent} could be decoded; check the images")


class ImageLibrary(LazyFiles):
    """Photos (RGB), downscaled to at most `max_side`."""

    what = "photo"

    def __init__(self, paths: list[Path], max_side: int, cache_items: int = 256):
        super().__init__(paths, cache_items)
        self.max_side = max_side

    def _load(self, k: int) -> np.ndarray:
        return read_rgb(self.files[k], self.max_side)


@dataclass
class Cutout:
    rgba: np.ndarray  # uint8 (h, w, 4), cropped to its alpha's bounding box
    category: str


class CutoutLibrary(LazyFiles):
    """Segmented objects laid out as <root>/<category>/<image>.png (alpha = object mask)."""

    what = "cut-out"

    def __init__(self, root: str, without_alpha: str, max_side: int, cache_items: int = 2048):
        files = list_images(root, "cut-out object")
        self.root = Path(root).expanduser()
        files = [f for f in files if f.parent != self.root]
        if not files:
            raise UserError(f"cut-out folder {self.root} has images but no <category>/ subfolders; lay it out as <root>/<category>/<image>.png")
        has_alpha = [check_image(f) for f in files]
        if without_alpha == "error" and not all(has_alpha):
            bad = files[has_alpha.index(False)]
            raise UserError(f"cut-out {bad} has no alpha channel; give objects RGBA masks or set objects.cutout_without_alpha=opaque")
        super().__init__(files, cache_items)
        self.max_side = max_side

    def _load(self, k: int) -> Cutout:
        img = read_image(self.files[k])
        if img.shape[2] == 3:
            img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
        ys, xs = np.nonzero(img[..., 3] > 0)
        if len(ys) == 0:
            raise ValueError("alpha channel is empty")
        img = img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
        if max(img.shape[:2]) > self.max_side:
            f = self.max_side / max(img.shape[:2])
            img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=cv2.INTER_AREA)
        return Cutout(np.ascontiguousarray(img), self.files[k].parent.name)


@dataclass
class Resources:
    recipe: Recipe
    seed: int
    size: int
    _banks: dict[str, np.ndarray] = field(default_factory=dict)
    _photos: ImageLibrary | None = None
    _cutouts: CutoutLibrary | None = None

    def photos(self) -> ImageLibrary:
        if self._photos is None:
            d = self.recipe.background.photo_dir
            paths = list_images(d, "photo") if d else list(embedded_photos())
            if d:
                for p in paths:
                    check_image(p)
            if not paths:
                raise UserError("no embedded sample photos found (scikit-image/scikit-learn missing); set background.photo_dir")
            self._photos = ImageLibrary(paths, max_side=2 * self.size)
        return self._photos

    def cutouts(self) -> CutoutLibrary:
        if self._cutouts is None:
            o = self.recipe.objects
            self._cutouts = CutoutLibrary(o.cutout_dir, o.cutout_without_alpha, max_side=max(256, 2 * self.size))
        return self._cutouts

    def bank(self, kind: str) -> np.ndarray:
        """uint8 textures: (N, S, S, 3) for 2-D kinds, (N, VOLUME_FRAMES, S, S, 3) for perlin3d."""
        if kind not in self._banks:
            self._banks[kind] = self._build_bank(kind)
        return self._banks[kind]

    def _build_bank(self, kind: str) -> np.ndarray:
        b = self.recipe.background
        rng = bank_rng(self.recipe.draw_key, self.seed, f"{kind}@{self.size}")  # static or not: the same banks
        S = 2 * self.size  # room for crops, pans and zooms
        n = b.bank_size
        if kind == "perlin":
            items = [tx.colorize(tx.fbm(tx.perlin2d, (S, S), tuple(rng.uniform(2, 6, 2)), b.noise_octaves, rng), rng) for _ in range(n)]
        elif kind == "spectral":
            items = [tx.colorize(tx.spectral_noise(S, rng.uniform(*b.spectral_alpha), rng), rng) for _ in range(n)]
        elif kind == "fractal":
            items = [(tx.ifs_fractal(S, rng) * 255).astype(np.uint8) for _ in range(n)]
        elif kind == "perlin3d":
            # Rendered at half resolution and upscaled: the finest octaves are still sharper than the frame.
            half = (3 * self.size) // 4
            items = []
            for _ in range(max(1, n // 2)):  # volumes are 16x larger: keep half as many
                vol = tx.fbm(tx.perlin3d, (VOLUME_FRAMES, half, half), (rng.uniform(1, 3),) + tuple(rng.uniform(2, 5, 2)),
                             min(b.noise_octaves, 4), rng)
                rgb = tx.colorize(vol, rng)
                items.append(np.stack([cv2.resize(f, (S * 3 // 4, S * 3 // 4), interpolation=cv2.INTER_LINEAR) for f in rgb]))
        else:
            raise ValueError(kind)
        return np.stack(items)


_CACHE: dict[tuple[str, int, int], Resources] = {}


def resources_for(recipe: Recipe, seed: int, size: int) -> Resources:
    """The process-wide Resources of (recipe, seed, size); a few are kept, oldest dropped first."""
    key = (recipe.draw_key, int(seed), int(size))
    if key not in _CACHE:
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = Resources(recipe, seed, size)
    return _CACHE[key]
