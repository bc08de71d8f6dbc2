"""`smile-synth export-pairs`: the consecutive frame pairs of shards generated with --annotations flow, with
their exact forward flow, as a folder that FlyingChairs-style (flo) or KITTI-style (kitti) readers load as it is.

Pairs are numbered PPPPPPP (7 digits, from 0) in the order they are written: clip by clip in shard order,
frames (t, t+1) for t = 0 .. T-2.

--format flo (FlyingChairs' layout; with --images ppm, torchvision.datasets.FlyingChairs(root) loads
OUT = root/FlyingChairs, and RAFT's reader root=OUT/data, with its chairs_split.txt = our split file):
    OUT/data/PPPPPPP_img1.IMG, PPPPPPP_img2.IMG   frames t and t+1, 8-bit RGB (IMG: --images, png or ppm)
    OUT/data/PPPPPPP_flow.flo                     forward flow t -> t+1, Middlebury .flo; 0 where not valid
    OUT/masks/PPPPPPP_valid.png                   8-bit, 255 where the flow is valid (.flo cannot say)
    OUT/masks/PPPPPPP_occ.png                     8-bit, 255 where the surface is occluded at t+1
--format kitti (KITTI 2015's layout; torchvision.datasets.KittiFlow(root) loads OUT = root/KittiFlow, RAFT's
KITTI reader root=OUT):
    OUT/training/image_2/PPPPPPP_10.IMG, PPPPPPP_11.IMG   frames t and t+1
    OUT/training/flow_occ/PPPPPPP_10.png          KITTI 16-bit flow; valid = flow_valid (occluded pixels included)
    OUT/training/flow_noc/PPPPPPP_10.png          the same, valid only where also not occluded
both:
    OUT/pairs.txt                    one line per pair: img1 img2 flow, paths relative to OUT
    OUT/FlyingChairs_train_val.txt   one line per pair: 1 = training, 2 = validation (the pairs of clips
                                     whose index is a multiple of VAL_EVERY: a stable split, by clip)
    OUT/sources.txt                  one line per pair: the clip's index and t
    OUT/export-pairs.json            what was exported from where, and the counts
Every file is written to a temporary name and renamed; the lists are written last.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from smile_synth.atomic import ensure_writable_folder, write_bytes_atomic, write_json_atomic
from smile_synth.errors import UserError
from smile_synth.flow_io import flo_bytes, kitti_png_bytes

FORMATS = ("flo", "kitti")
IMAGE_FORMATS = ("png", "ppm")
VAL_EVERY = 20              # clips with index % VAL_EVERY == 0 are validation: 5%, independent of --n
PAIR_DIGITS = 7
FOLDERS = {"flo": ("data", "masks"), "kitti": ("training/image_2", "training/flow_occ", "training/flow_noc")}
TRAIN, VAL = 1, 2           # FlyingChairs_train_val.txt's codes
log = logging.getLogger("smile_synth")


@dataclass
class Exported:
    """The lists written after the pairs: one entry per pair."""
    pairs: list[str] = field(default_factory=list)      # "img1 img2 flow"
    split: list[int] = field(default_factory=list)      # TRAIN or VAL
    sources: list[str] = field(default_factory=list)    # "clip_index t"
    clips: int = 0
    skipped: list[str] = field(default_factory=list)    # samples that did not decode: "shard key: why"


def image_bytes(rgb: np.ndarray, ext: str) -> bytes:
    """uint8 (H, W, 3) RGB -> the bytes of a .png or .ppm file."""
    ok, data = cv2.imencode(f".{ext}", np.ascontiguousarray(rgb[..., ::-1]))   # OpenCV encodes B, G, R
    if not ok:
        raise ValueError(f"OpenCV could not encode a .{ext} image")
    return data.tobytes()


def mask_png(mask: np.ndarray) -> bytes:
    """bool (H, W) -> 8-bit PNG bytes, 255 where True."""
    ok, data = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise ValueError("OpenCV could not encode a mask PNG")
    return data.tobytes()


def pair_files(fmt: str, pair: str, ext: str) -> tuple[str, str, str]:
    """(img1, img2, flow) of pair id `pair`, relative to OUT."""
    if fmt == "flo":
        return f"data/{pair}_img1.{ext}", f"data/{pair}_img2.{ext}", f"data/{pair}_flow.flo"
    return f"training/image_2/{pair}_10.{ext}", f"training/image_2/{pair}_11.{ext}", f"training/flow_occ/{pair}_10.png"


def write_pairs(clip, out: Path, fmt: str, ext: str, done: Exported) -> None:
    """Write every consecutive pair of one annotated clip and note them in `done`."""
    frames = [image_bytes(f, ext) for f in clip.video]      # each frame once: it is img2 of one pair, img1 of the next
    index = clip.meta.get("index", -1)
    for t in range(clip.num_frames - 1):
        pair = f"{len(done.pairs):0{PAIR_DIGITS}d}"
        if len(pair) > PAIR_DIGITS:
            raise UserError(f"more than {10 ** PAIR_DIGITS} pairs; export fewer clips with --n")
        img1, img2, flow_file = pair_files(fmt, pair, ext)
        valid, occluded = clip.flow_valid[t], clip.occluded[t]
        write_bytes_atomic(out / img1, frames[t])
        write_bytes_atomic(out / img2, frames[t + 1])
        if fmt == "flo":
            write_bytes_atomic(out / flow_file, flo_bytes(np.where(valid[..., None], clip.flow[t], 0)))
            write_bytes_atomic(out / "masks" / f"{pair}_valid.png", mask_png(valid))
            write_bytes_atomic(out / "masks" / f"{pair}_occ.png", mask_png(occluded))
        else:
            write_bytes_atomic(out / flow_file, kitti_png_bytes(clip.flow[t], valid))
            write_bytes_atomic(out / f"training/flow_noc/{pair}_10.png", kitti_png_bytes(clip.flow[t], valid & ~occluded))
        done.pairs.append(f"{img1} {img2} {flow_file}")
        done.split.append(VAL if index % VAL_EVERY == 0 else TRAIN)
        done.sources.append(f"{index} {t}")
    done.clips += 1


def check_out(out: Path) -> Path:
    """OUT new or empty (an export never mixes with other files); created, and proven writable."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} is not an empty folder; export-pairs writes into a new or empty one "
                        "(remove it or choose another)")
    return ensure_writable_folder(out, "--out")


def expected_clips(shards: Path, n: int | None) -> int | None:
    """How many clips the export will read (from the shards' sidecars), for the progress bar; None if unknown."""
    from smile_synth.shards import read_json, shard_paths, sidecar_path

    try:
        total = sum(read_json(sidecar_path(s))["count"] for s in shard_paths(shards))
    except (OSError, ValueError, KeyError, TypeError):
        return n
    return total if n is None else min(n, total)


def export_pairs(shards: str | Path, out: str | Path, fmt: str = "flo", n: int | None = None, ext: str = "png",
                 progress: bool = True) -> Exported:
    """Write the pairs of up to `n` clips (all when None) of `shards` into `out` (see the module docstring)."""
    from smile_synth.shards import decode_sample, iter_samples   # here: the shard reader brings PyAV

    shards, out = Path(shards), check_out(Path(out))
    done = Exported()
    bar = tqdm(total=expected_clips(shards, n), unit="clip", desc="export-pairs", disable=not progress)
    try:
        for shard, key, sample in iter_samples(shards):
            if n is not None and done.clips >= n:
                break
            try:
                clip = decode_sample(sample)
            except ValueError as e:          # one bad sample does not end the export
                done.skipped.append(f"{shard} {key}: {e}")
                log.warning("skipping %s %s: %s", shard, key, e)
                continue
            if clip.flow is None:
                raise UserError(f"{shards} holds clips without flow ({shard} {key}); generate them with "
                                "`smile-synth generate --annotations flow`")
            if not done.clips:
                for folder in FOLDERS[fmt]:
                    (out / folder).mkdir(parents=True, exist_ok=True)
            write_pairs(clip, out, fmt, ext, done)
            bar.update(1)
    finally:
        bar.close()
    if not done.clips:
        raise UserError(f"{shards} holds no readable clips; check it with `smile-synth inspect {shards} --verify`")
    write_bytes_atomic(out / "pairs.txt", "".join(f"{line}\n" for line in done.pairs).encode())
    write_bytes_atomic(out / "FlyingChairs_train_val.txt", "".join(f"{code}\n" for code in done.split).encode())
    write_bytes_atomic(out / "sources.txt", "".join(f"{line}\n" for line in done.sources).encode())
    write_json_atomic(out / "export-pairs.json", {"shards": str(shards.resolve()), "format": fmt, "images": ext,
                                                  "clips": done.clips, "pairs": len(done.pairs),
                                                  "validation_pairs": done.split.count(VAL), "skipped": done.skipped})
    return done
