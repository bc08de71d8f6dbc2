"""Checkpoints: atomic writes, resume, and loading weights from ours or VideoMAE/SMILE files.

A checkpoint is {"model", "optimizer", "scaler", "step", "config", "student", "summary"}; `encoder.pt`
is {"model": encoder weights with VideoMAE fine-tuning names, "student", "summary"}.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smile_synth.errors import UserError

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name, then rename: a file that exists is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def load_weights(model: nn.Module, path: str | Path, strict_shapes: bool = True) -> tuple[list[str], list[str]]:
    """Load what matches into `model` (a PretrainVideoTransformer). Encoder-only files get their
    "encoder." prefix back. Returns (missing, unexpected) names; shape mismatches raise UserError."""
    weights = model_weights(read_checkpoint(path))
    own = model.state_dict()
    if weights and not any(k.startswith("encoder.") for k in weights) and any(k.startswith("blocks.") for k in weights):
        weights = {f"encoder.{k}": v for k, v in weights.items()}
    usable = {}
    for k, v in weights.items():
        if k in own and own[k].shape != v.shape:
            if strict_shapes and not k.startswith("decoder.head"):
                raise UserError(f"{path}: {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}; "
                                "the checkpoint is of another preset (choose the matching --preset)")
            continue
        if k in own:
            usable[k] = v
    if not any(k.startswith("encoder.blocks.") for k in usable):
        raise UserError(f"{path} holds no encoder weights this model can use; is it a video transformer checkpoint?")
    result = model.load_state_dict(usable, strict=False)
    return list(result.missing_keys), sorted(set(weights) - set(usable))
