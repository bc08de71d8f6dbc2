"""Which encoder a study or probe evaluates: a pretraining run's weights, or a random init of a preset.

Loads without PyAV (only training.checkpoint and training.models), so the device evaluations use it too.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch


def file_identity(path: str | Path) -> list:
    """[resolved path, size, mtime ns] of a file (its identity in cache keys); [path, None, None] when missing."""
    p = Path(path)
    try:
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(p), None, None]


def encoder_source(checkpoint: str | None, preset: str | None, seed: int, like=None):
    """(identity for the feature cache, config, pretraining summary, loader) of a checkpoint or of a
    random init (of `preset`, or of the StudentConfig `like`: scratch with a run's geometry). The
    loader builds the encoder (in eval mode) only when features are not cached."""
    from training.checkpoint import load_encoder, resolve_weights_file
    from training.models import VideoEncoder, student_config

    if checkpoint is None:
        cfg = like if like is not None else student_config(preset)

        def scratch():
            torch.manual_seed(seed)
            return VideoEncoder(cfg).eval()
        return ["random-init", asdict(cfg), seed], cfg, {"source": "none (random init)", "steps": 0, "clips_seen": 0}, scratch
    path = resolve_weights_file(checkpoint)   # a run folder -> its encoder.pt / encoder.safetensors / checkpoint.pt
    encoder, cfg, summary = load_encoder(path, preset)   # validates the preset now, with a one-line error
    return file_identity(path), cfg, summary, lambda: encoder
