"""The fine-tuning classifier: VideoMAE's `modeling_finetune.VisionTransformer` with mean pooling.

video (B, 3, T, H, W) normalized -> patch_embed + fixed sin-cos positions -> blocks -> mean over all
tokens -> fc_norm (LayerNorm) -> dropout -> head (Linear) -> logits (B, num_classes).

The state dict has exactly VideoMAE's keys and shapes (`patch_embed.proj.weight`, `blocks.0.attn.q_bias`,
..., `fc_norm.weight`, `head.weight`; 162 tensors for ViT-B/16 with 16 frames), so VideoMAE/SMILE
fine-tuned checkpoints load here and ours load there. A pretraining encoder (ours or VideoMAE's) loads
into it with only `fc_norm` and `head` new: its final `norm` is not used under mean pooling, as in VideoMAE.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import trunc_normal_

from smile_synth.errors import UserError
from training.checkpoint import (
    encoder_weights,
    matching_weights,
    model_weights,
    read_checkpoint,
    resolve_weights_file,
)
from training import hf
from training.layers import Linear
from training.models import StudentConfig, VideoEncoder, student_config

HEAD_INIT_SCALE = 0.001      # VideoMAE's --init_scale: the new head starts near zero


class VideoClassifier(VideoEncoder):
    """forward(video (B, 3, T, H, W) normalized) -> logits (B, num_classes)."""

    def __init__(self, cfg: StudentConfig, num_classes: int, head_dropout: float = 0.0,
                 init_scale: float = HEAD_INIT_SCALE):
        super().__init__(cfg)
        self.cfg, self.num_classes = cfg, num_classes
        self.norm = nn.Identity()                     # mean pooling: fc_norm after the pool instead
        self.fc_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.fc_dropout = nn.Dropout(head_dropout)
        self.head = Linear(cfg.dim, num_classes)
        self.apply(_init_finetune)
        with torch.no_grad():
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C): the mean over all tokens of the last block's output, through fc_norm."""
        return self.fc_norm(self.forward_blocks(video).mean(1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_dropout(self.forward_features(video)))

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer ids for timm's layer-wise lr decay: patch_embed 0, block i i+1, fc_norm and head last
        (unmatched, so scale 1, as VideoMAE's get_num_layer_for_vit; timm's (99999,) would put fc_norm
        with the last block)."""
        return {"stem": r"^patch_embed", "blocks": [(r"^blocks\.(\d+)", None)]}

    def no_weight_decay(self) -> set[str]:
        return set()      # biases and norms (ndim 1) are excluded by the parameter-group rule


def _init_finetune(m: nn.Module) -> None:
    """VideoMAE's fine-tuning init: trunc-normal(0.02) linears, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_classifier(preset: str, num_classes: int, head_dropout: float = 0.0, init_scale: float = HEAD_INIT_SCALE,
                     **overrides) -> VideoClassifier:
    """The named preset's classifier (random weights); `overrides` are StudentConfig fields, e.g.
    build_classifier("base", 101, frames=16, drop_path=0.1)."""
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, not {num_classes}")
    return VideoClassifier(student_config(preset, **overrides), num_classes, head_dropout, init_scale)


def load_into_classifier(model: VideoClassifier, path, strict_head: bool = False, ckpt: dict | None = None) -> dict:
    """Load a checkpoint into `model`: a pretraining encoder (only fc_norm and head stay new) or a
    fine-tuned classifier (everything; its head must have model's classes when `strict_head`). `ckpt`: the
    file's contents when already read (read_checkpoint), else it is read here.
    Returns {"missing": [...], "unused": [...], "classifier": bool}. Shape mismatches of the
    encoder raise UserError (another preset)."""
    path = resolve_weights_file(path)
    weights = encoder_weights(model_weights(ckpt if ckpt is not None else read_checkpoint(path)))
    own = model.state_dict()
    classifier = hf.layout_of(weights) == hf.CLASSIFIER          # a `head` over `fc_norm`
    if classifier and weights["head.weight"].shape != own["head.weight"].shape:
        if strict_head:
            raise UserError(f"{path} classifies {weights['head.weight'].shape[0]} classes, the data has "
                            f"{own['head.weight'].shape[0]}; fine-tune it on data with its classes, or start from "
                            "its encoder by giving a pretraining checkpoint")
        weights = {k: v for k, v in weights.items() if not k.startswith("head.")}
    usable = matching_weights(path, weights, own, what=f"a {model.cfg.dim}-wide {model.cfg.depth}-deep classifier")
    if not any(k.startswith("blocks.") for k in usable):
        raise UserError(f"{path} holds no encoder weights this model can use; is it a video transformer checkpoint?")
    missing = sorted(set(own) - set(usable))
    encoder_missing = [k for k in missing if not k.startswith(("fc_norm.", "head."))]
    if encoder_missing:
        raise UserError(f"{path} lacks encoder weights ({encoder_missing[0]}, ... {len(encoder_missing)} in all); "
                        "is it a checkpoint of this preset?")
    model.load_state_dict(usable, strict=False)
    return {"missing": missing, "unused": sorted(set(weights) - set(usable)), "classifier": classifier}
