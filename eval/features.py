"""Frozen-encoder features of task examples, cached on disk per (encoder, data, task settings).

feature(example) = mean over its clips x spatial crops of the mean-pooled encoder tokens, float32 (C,).
Crops: frames resized so the short side is the model's size, then `crops` squares spread along the
long side (1 = centre, 3 = both ends and centre: the standard 3-crop test).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from smile_synth.atomic import replacing
from smile_synth.video import BadVideo, VideoItem, decode_frames, video_length
from training.targets import normalize, to_unit_video

from .encoders import file_identity
from .tasks import Example, task_examples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExampleSpec:
    """How examples are drawn from each video (part of the cache key)."""
    task: str
    frames: int
    size: int
    stride: int
    windows: int = 8      # motion tasks: window positions per video
    clips: int = 2        # labels task: temporal clips per video
    crops: int = 3

    def __post_init__(self):
        from smile_synth.errors import UserError
        for name in ("frames", "size", "stride", "windows", "clips", "crops"):
            v = getattr(self, name)
            if v < 1:
                raise UserError(f"--{name} {v} must be >= 1")


@dataclass
class FeatureSet:
    features: np.ndarray            # float32 (N, C)
    labels: np.ndarray              # int64 (N,)
    items: np.ndarray               # int64 (N,) index into `paths`
    paths: list[str]                # the video list
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it was skipped

    @property
    def groups(self) -> np.ndarray:
        from .splits import source_group
        names = np.array([source_group(p) for p in self.paths] or [""])
        return names[self.items]


def spatial_crops(frames: np.ndarray, size: int, n: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (n, T, size, size, 3): short side resized to `size`, n crops along the long side."""
    _T, H, W, _ = frames.shape
    scale = size / min(H, W)
    h, w = max(size, round(H * scale)), max(size, round(W * scale))
    if (h, w) != (H, W):
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
                           for f in frames])
    offsets = np.round(np.linspace(0, max(h, w) - size, n)).astype(int) if n > 1 else [(max(h, w) - size) // 2]
    if h >= w:
        return np.stack([frames[:, o:o + size, :size] for o in offsets])
    return np.stack([frames[:, :size, o:o + size] for o in offsets])


def video_examples(task: str, index: int, item: VideoItem, frames: int, stride: int, windows: int, clips: int
                   ) -> list[Example]:
    """The examples `task` draws from the video `item` (number `index` of its list); BadVideo when it is
    unreadable or too short for one."""
    length = video_length(item.path)
    examples = task_examples(task, index, length, item.label, frames, stride, windows, clips)
    if not examples:
        raise BadVideo(f"{item.path}: too short for {task} ({length} frames)")
    return examples


def item_views(item: VideoItem, examples: list[Example], spec: ExampleSpec) -> np.ndarray:
    """uint8 (E, V, T, size, size, 3): the V = clips x crops views of each of one video's E examples."""
    needed = np.unique(np.concatenate([c for e in examples for c in e.clips]))
    frames = decode_frames(item.path, needed, short_side=spec.size)
    lookup = np.searchsorted(needed, np.arange(needed.max() + 1))
    return np.stack([np.concatenate([spatial_crops(frames[lookup[c]], spec.size, spec.crops) for c in e.clips])
                     for e in examples])


@torch.no_grad()
def encode_tokens(encoder: torch.nn.Module, views: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) views -> (B, N, C) the encoder's per-token outputs (no mask)."""
    return encoder(normalize(to_unit_video(torch.from_numpy(views))))


def embed(encoder: torch.nn.Module, views: np.ndarray) -> np.ndarray:
    """uint8 (B, T, H, W, 3) views -> float32 (B, C) mean-pooled tokens."""
    return encode_tokens(encoder, views).mean(1).float().numpy()


def extract(encoder, items: list[VideoItem], spec: ExampleSpec, batch_views: int = 32,
            progress: bool = True) -> FeatureSet:
    """Features of every example of `items` under `spec`; unreadable or too-short videos are skipped
    (and listed in `skipped`). Examples are batched across videos, `batch_views` views at a time."""
    from tqdm import tqdm

    encoder.eval()
    feats, labels, owners, skipped = [], [], [], {}
    pending, pending_n = [], 0                       # (views (E, V, ...), labels, item)

    def flush():
        nonlocal pending, pending_n
        if not pending:
            return
        views = np.concatenate([v for v, _, _ in pending])     # (E, V, T, S, S, 3)
        E, V = views.shape[:2]
        out = np.concatenate([embed(encoder, views.reshape(E * V, *views.shape[2:])[i:i + batch_views])
                              for i in range(0, E * V, batch_views)])
        feats.append(out.reshape(E, V, -1).mean(1))
        for _, ls, it in pending:
            labels.extend(ls)
            owners.extend([it] * len(ls))
        pending, pending_n = [], 0

    for i, item in enumerate(tqdm(items, desc=f"features ({spec.task})", unit="video", disable=not progress,
                                  dynamic_ncols=True)):
        try:
            examples = video_examples(spec.task, i, item, spec.frames, spec.stride, spec.windows, spec.clips)
            views = item_views(item, examples, spec)
        except BadVideo as e:
            skipped[str(item.path)] = str(e)
            log.warning("skipped %s", e)
            continue
        pending.append((views, [e.label for e in examples], i))
        pending_n += views.shape[0] * views.shape[1]
        if pending_n >= batch_views:
            flush()
    flush()
    dim = feats[0].shape[1] if feats else 0
    return FeatureSet(np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, dim), np.float32),
                      np.asarray(labels, np.int64), np.asarray(owners, np.int64),
                      [str(it.path) for it in items], skipped)


# ------------------------------------------------------------------------------------------ cache

def cache_key(encoder_id: list, items: list[VideoItem], spec: ExampleSpec) -> str:
    blob = json.dumps({"encoder": encoder_id, "spec": spec.__dict__,
                       "items": [[*file_identity(it.path), it.label] for it in items]}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def save_features(fs: FeatureSet, path: Path) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, features=fs.features, labels=fs.labels, items=fs.items,
                 meta=np.array(json.dumps({"paths": fs.paths, "skipped": fs.skipped})))


def load_features(path: Path) -> FeatureSet | None:
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return FeatureSet(z["features"], z["labels"], z["items"], meta["paths"], meta["skipped"])
    except Exception:  # noqa: BLE001 - an unreadable cache entry is recomputed
        return None


def cached_extract(encoder_id: list, load_encoder, items: list[VideoItem], spec: ExampleSpec,
                   cache_dir: Path | None, progress: bool = True) -> tuple[FeatureSet, bool]:
    """extract() through the cache: (features, whether they came from the cache). `load_encoder()` is
    only called on a miss."""
    path = Path(cache_dir) / f"{cache_key(encoder_id, items, spec)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        fs = load_features(path)
        if fs is not None:
            return fs, True
    fs = extract(load_encoder(), items, spec, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_features(fs, path)
    return fs, False
