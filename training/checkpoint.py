"""Checkpoints: atomic writes, resume, and loading weights from ours or VideoMAE/SMILE files.

A checkpoint is {"model", "optimizer", "scaler", "step", "config", "student", "summary"}; `encoder.pt`
is {"model": encoder weights with VideoMAE fine-tuning names, "student", "summary"}.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from smile_synth.atomic import replacing
from smile_synth.errors import UserError

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name, then rename: a file that exists is complete."""
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give an existing .pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a checkpoint (a dict of weights)")
    return ckpt


def model_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The weights of any of: our checkpoint or encoder.pt, VideoMAE/SMILE ({"model"} or {"module"}), a bare state dict."""
    for key in ("model", "module", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    return {k.removeprefix("module."): v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def matching_weights(path: str | Path, weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                     may_differ: tuple[str, ...] = (), what: str = "the model") -> dict[str, torch.Tensor]:
    """The entries of `weights` that the state dict `own` has, shapes equal. A shape mismatch means a
    checkpoint of another preset (UserError), except for names starting with `may_differ` (skipped)."""
    usable = {}
    for k, v in weights.items():
        if k not in own:
            continue
        if own[k].shape != v.shape:
            if k.startswith(may_differ):
                continue
            raise UserError(f"{path}: {k} has shape {tuple(v.shape)}, {what} needs {tuple(own[k].shape)}; "
                            "the checkpoint is of another preset (choose the matching --preset)")
        usable[k] = v
    return usable


def load_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load what matches into `model` (a PretrainVideoTransformer); the decoder head may differ (another
    target). Encoder-only files get their "encoder." prefix back. Returns (missing, unexpected) names;
    other shape mismatches raise UserError."""
    weights = model_weights(read_checkpoint(path))
    if weights and not any(k.startswith("encoder.") for k in weights) and any(k.startswith("blocks.") for k in weights):
        weights = {f"encoder.{k}": v for k, v in weights.items()}
    usable = matching_weights(path, weights, model.state_dict(), may_differ=("decoder.head",))
    if not any(k.startswith("encoder.blocks.") for k in usable):
        raise UserError(f"{path} holds no encoder weights this model can use; is it a video transformer checkpoint?")
    result = model.load_state_dict(usable, strict=False)
    return list(result.missing_keys), sorted(set(weights) - set(usable))


def load_encoder(path: str | Path, preset: str | None = None):
    """The pretrained encoder of `path` (our encoder.pt or checkpoint.pt, or a VideoMAE/SMILE
    pretraining checkpoint), ready for feature extraction.

    Our files carry their student config; for others give `preset` (its geometry must match the
    weights). Returns (VideoEncoder in eval mode, StudentConfig, summary of what it saw in pretraining,
    {} when unknown). Raises UserError for a checkpoint of another preset or without encoder weights."""
    import dataclasses

    from .models import StudentConfig, VideoEncoder, student_config
    ckpt = read_checkpoint(path)
    if isinstance(ckpt.get("student"), dict):
        fields = {f.name for f in dataclasses.fields(StudentConfig)}
        cfg = StudentConfig(**{k: v for k, v in ckpt["student"].items() if k in fields})
        arch = ("dim", "depth", "heads", "patch", "tubelet", "mlp_ratio")   # what the weights fix
        if preset is not None and any(getattr(student_config(preset), a) != getattr(cfg, a) for a in arch):
            raise UserError(f"{path} holds a {_preset_name(cfg)} encoder, not --preset {preset}; pass the matching --preset")
    elif preset is None:
        raise UserError(f"{path} does not say which model it holds; pass --preset (tiny, small, base or large)")
    else:
        cfg = student_config(preset)
    weights = model_weights(ckpt)
    weights = {k.removeprefix("encoder."): v for k, v in weights.items()
               if k.startswith("encoder.") or not k.startswith(("decoder.", "encoder_to_decoder", "mask_token"))}
    encoder = VideoEncoder(cfg)
    own = encoder.state_dict()
    usable = matching_weights(path, weights, own, what=f"a {_preset_name(cfg)} encoder")
    missing = sorted(set(own) - set(usable))
    if missing:
        raise UserError(f"{path} lacks encoder weights ({missing[0]}, ... {len(missing)} in all); "
                        "is it a video transformer pretraining checkpoint?")
    encoder.load_state_dict(usable)
    return encoder.eval(), cfg, dict(ckpt.get("summary") or {})


def _preset_name(cfg) -> str:
    from .models import PRESETS
    for name, p in PRESETS.items():
        if (p.dim, p.depth, p.heads) == (cfg.dim, cfg.depth, cfg.heads):
            return f"{name} ({cfg.frames}x{cfg.size}px)"
    return f"{cfg.dim}-wide {cfg.depth}-deep"
