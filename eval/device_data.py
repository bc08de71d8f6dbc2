"""The embedded scenes, decoded once here, for a machine without PyAV (the GPU study's `.devdata`).

`write_device_data(ROOT, size)` (needs PyAV and the `scenes` extra) prepares the embedded scenes
(eval/embedded.py) and stores their frames, decoded as the CPU study decodes them, as numpy arrays in
bzip2-compressed npz files (np.load reads them, without pickle):

- ROOT/natural.npz: the scenes' natural-pretraining parts, uint8 (T, size, size, 3) each: short side
  shrunk to `size` (cv2.INTER_AREA), centre square.
- ROOT/scenes.npz: the evaluation scenes, two views of every frame: ``train_K`` uint8 (T, h, w, 3) at
  short side ceil(size x 256/224), what fine-tuning decodes before its random resized crop, and ``test_K``
  uint8 (T, size, size, 3), short side `size` and the centre crop, what the probes and the fine-tuned
  model's test see.
- ROOT/device_data.json: the settings and the scenes (written last: its presence means complete). A
  second call with the same settings writes nothing.

Loading (`load_natural_videos`, `load_eval_scenes`) reads the npz without pickle and imports neither PyAV
nor eval.embedded. The direction task is not stored: the device regenerates it from its seed.
"""
from __future__ import annotations

import json
import math
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.errors import UserError

from .finetune.recipe import TRAIN_SHORT_SIDE
from .splits import source_group

MANIFEST = "device_data.json"
SCENES = "scenes.npz"
NATURAL = "natural.npz"
LAYOUT = 2                      # manifest version (2: bzip2-compressed npz)
PREPARE = "bash benchmarks/device_study.sh --prepare"    # the documented command that writes it


@dataclass(frozen=True)
class Scene:
    """One evaluation scene's frames (see the module doc)."""
    name: str                   # file stem of its embedded file (eval/<name>.mp4)
    train: np.ndarray           # uint8 (T, h, w, 3), short side train_short_side(size)
    test: np.ndarray            # uint8 (T, size, size, 3)

    @property
    def group(self) -> str:
        """Its fold group: what eval.splits.source_group gives the CPU study's file of this scene."""
        return source_group(f"eval/{self.name}.mp4")


def train_short_side(size: int) -> int:
    """The short side fine-tuning decodes at for `size` px clips (eval/finetune/data.py's rule)."""
    return math.ceil(size * TRAIN_SHORT_SIDE)


# ------------------------------------------------------------------------------------------ writing

def write_device_data(root: str | Path, size: int = 64, embedded: str | Path | None = None) -> Path:
    """Write ROOT (see the module doc) for clips of `size` px; returns ROOT. `embedded`: a folder to prepare
    the embedded scenes into (kept; default a temporary folder). Needs PyAV and the `scenes` extra."""
    from smile_synth.assets import require_footage

    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise UserError(f"device data size {size!r} must be a whole number of pixels from 8 to 1024")
    root = Path(root)
    sources = sorted(str(f) for _, files in require_footage() for f in files)
    settings = {"layout": LAYOUT, "size": size, "train_short_side": train_short_side(size), "sources": sources}
    old = _manifest_or_none(root)
    if old is not None and old.get("settings") == settings and all((root / f).is_file() for f in (SCENES, NATURAL)):
        return root
    root.mkdir(parents=True, exist_ok=True)
    if embedded is not None:
        return _write(root, size, settings, Path(embedded))
    with tempfile.TemporaryDirectory(prefix="embedded-") as tmp:
        return _write(root, size, settings, Path(tmp))


def _write(root: Path, size: int, settings: dict, embedded: Path) -> Path:
    from smile_synth.video import decode_frames, video_length

    from .embedded import prepare_embedded_data, read_manifest
    from .features import spatial_crops

    prepare_embedded_data(embedded)

    def frames(path: Path, short_side: int) -> np.ndarray:
        return decode_frames(path, np.arange(video_length(path)), short_side=short_side)

    natural, scenes, names = {}, {}, {"natural": [], "eval": []}
    for seg in read_manifest(embedded):
        path = embedded / seg.path
        square = spatial_crops(frames(path, size), size, 1)[0]              # (T, size, size, 3)
        if seg.side == "pretrain":
            natural[f"clip_{len(names['natural'])}"] = square
            names["natural"].append(seg.name)
        else:
            k = len(names["eval"])
            scenes[f"train_{k}"], scenes[f"test_{k}"] = frames(path, settings["train_short_side"]), square
            names["eval"].append(seg.name)
    for name, arrays in ((NATURAL, natural), (SCENES, scenes)):
        save_npz_bz2(root / name, arrays)
    write_json_atomic(root / MANIFEST, {"settings": settings, "natural": names["natural"], "scenes": names["eval"],
                                        "natural_frames": sum(len(a) for a in natural.values()),
                                        "scene_frames": sum(len(a) for k, a in scenes.items() if k.startswith("test_"))})
    return root


def save_npz_bz2(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's layout (one NAME.npy member per array, read back by np.load) compressed with
    bzip2 instead of deflate: the 64 px data takes 17 MiB instead of 23 (what travels to the device is
    limited to 64 MiB; LZMA saves 0.7 MiB more but writes 6x slower). Written atomically."""
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_BZIP2) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)


def folder_bytes(root: str | Path) -> int:
    """Bytes of the files directly in ROOT (what travels to the device)."""
    return sum(p.stat().st_size for p in Path(root).iterdir() if p.is_file())


# ------------------------------------------------------------------------------------------ loading

def _manifest_or_none(root: Path) -> dict | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
        return data if isinstance(data, dict) and isinstance(data.get("settings"), dict) else None
    except (OSError, ValueError):
        return None


def read_device_manifest(root: str | Path) -> dict:
    """ROOT's manifest; one UserError line when ROOT holds no complete device data of this layout."""
    root = Path(root)
    data = _manifest_or_none(root)
    if data is None or data["settings"].get("layout") != LAYOUT:
        why = "has no device data" if data is None else "holds device data of another layout"
        raise UserError(f"{root} {why} ({MANIFEST}); write it where PyAV is installed with `{PREPARE}`")
    return data


def device_data_size(root: str | Path) -> int:
    """The clip size (px) ROOT's data was written for."""
    return int(read_device_manifest(root)["settings"]["size"])


def _arrays(root: Path, name: str, keys: list[str], size: int) -> dict[str, np.ndarray]:
    """The uint8 (T, H, W, 3) arrays `keys` of ROOT/name, checked; one UserError line when unreadable."""
    path = root / name
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:   # cut short, damaged
        raise UserError(f"{path} cannot be read ({type(e).__name__}); write it again with `{PREPARE}`") from None
    for k, a in out.items():
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3 or min(a.shape[1:3]) < size or len(a) == 0:
            raise UserError(f"{path}: {k} is {a.dtype} {a.shape}, not uint8 (T, H, W, 3) frames of at least "
                            f"{size} px; write it again with `{PREPARE}`")
    return out


def load_natural_videos(root: str | Path) -> list[np.ndarray]:
    """The natural-pretraining clips: uint8 (T_i, S, S, 3) each, S the data's size."""
    root = Path(root)
    m = read_device_manifest(root)
    size = int(m["settings"]["size"])
    arrays = _arrays(root, NATURAL, [f"clip_{k}" for k in range(len(m["natural"]))], size)
    return list(arrays.values())


def load_eval_scenes(root: str | Path) -> list[Scene]:
    """The evaluation scenes, in the order they were written."""
    root = Path(root)
    m = read_device_manifest(root)
    size = int(m["settings"]["size"])
    keys = [f"{view}_{k}" for k in range(len(m["scenes"])) for view in ("train", "test")]
    arrays = _arrays(root, SCENES, keys, size)
    scenes = []
    for k, name in enumerate(m["scenes"]):
        train, test = arrays[f"train_{k}"], arrays[f"test_{k}"]
        if len(train) != len(test) or test.shape[1:3] != (size, size):
            raise UserError(f"{root / SCENES}: scene {name}'s views disagree ({train.shape} and {test.shape}); "
                            f"write it again with `{PREPARE}`")
        scenes.append(Scene(str(name), train, test))
    return scenes
