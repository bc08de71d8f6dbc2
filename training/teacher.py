"""The frozen CLIP teacher: one open_clip factory for model names, pretrained tags and local files.

`load_teacher("ViT-B-16", "openai")` resolves the tag to a weights file (the local cache first; the
network only when it answers within seconds), builds the open_clip model from that file and keeps its
image tower. `pretrained` may also be a path to a checkpoint file (a whole open_clip model, or only
its image tower, keys bare or under "visual."), or "none" for a randomly
initialised teacher (tests only; loudly warned). Weights that cannot be obtained fail at once with one
line naming the model, the tag and the ways out; there is never a silent fallback to random weights.
"""
from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from smile_synth.errors import UserError

from .checkpoint import WEIGHT_SUFFIXES
from .targets import resize_token_grid, standardize_tokens

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0


def _reachable(url: str) -> bool:
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _cached_or_download(model: str, tag: str, cfg: dict) -> str:
    """Local path of the weights for (model, tag): cached copy, else a download if the host answers."""
    hub = cfg.get("hf_hub", "")
    url = cfg.get("url", "")
    way_out = (f"cannot obtain CLIP weights for --teacher {model} --teacher-pretrained {tag} (offline and not cached); "
               f"pass a local file with --teacher-pretrained PATH, or train without a teacher with --target pixel")
    if hub:
        from huggingface_hub import hf_hub_download
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        try:
            return hf_hub_download(repo, filename, local_files_only=True)
        except Exception:  # noqa: BLE001 - any miss in the cache means "not cached"
            pass
        if not _reachable("https://huggingface.co"):
            raise UserError(way_out)
        return hf_hub_download(repo, filename)
    if url:
        from open_clip.pretrained import download_pretrained_from_url
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if cached.is_file():
            return str(cached)
        if not _reachable(url):
            raise UserError(way_out)
        return download_pretrained_from_url(url)
    raise UserError(f"open_clip has no download location for {model}/{tag}; pass --teacher-pretrained PATH")


def resolve_weights(model: str, pretrained: str) -> str | None:
    """A weights file for (model, pretrained), or None for pretrained="none". Raises UserError."""
    import open_clip
    if model not in open_clip.list_models():
        raise UserError(f"unknown --teacher {model!r}; open_clip models include ViT-B-16, ViT-L-14 (see open_clip.list_models())")
    if pretrained.lower() == "none":
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if os.sep in pretrained or path.suffix in WEIGHT_SUFFIXES:
        raise UserError(f"--teacher-pretrained {pretrained}: no such file; give an existing checkpoint or an open_clip tag")
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none known"
        raise UserError(f"--teacher-pretrained {pretrained!r} is not a tag of {model} (tags: {tags}); or pass a local file")
    return _cached_or_download(model, pretrained, cfg)


class ClipTeacher(nn.Module):
    """Frozen open_clip image tower -> standardized patch tokens on the student's token grid.

    forward(video float (B, 3, T, H, W) in [0, 1]) -> (B, T/tubelet * h * w, width): the tower sees
    the first frame of each tubelet, resized to its own input size and normalized with its own
    mean/std; its last-block patch tokens after the final LayerNorm (no projection) are resized to the
    student's (h, w) grid and standardized per channel over each clip's tokens."""

    def __init__(self, visual: nn.Module, mean, std, tubelet: int, out_grid: tuple[int, int]):
        super().__init__()
        self.visual = visual.eval().requires_grad_(False)
        self.visual.output_tokens = True
        size = visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        patch = visual.patch_size
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        self.grid = (self.image_size[0] // patch[0], self.image_size[1] // patch[1])
        self.width = visual.ln_post.normalized_shape[0]
        self.tubelet, self.out_grid = tubelet, tuple(out_grid)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B = video.shape[0]
        frames = video[:, :, :: self.tubelet].transpose(1, 2).flatten(0, 1)  # (B*T', 3, H, W)
        if tuple(frames.shape[-2:]) != self.image_size:
            frames = F.interpolate(frames, size=self.image_size, mode="bicubic", align_corners=False).clamp_(0, 1)
        frames = (frames - self.mean.to(frames.dtype)) / self.std.to(frames.dtype)
        _, tokens = self.visual(frames)                                     # (B*T', g*g, width)
        tokens = resize_token_grid(tokens, self.grid, self.out_grid)         # (B*T', h*w, width)
        tokens = tokens.reshape(B, -1, tokens.shape[-1]).float()            # (B, T'*h*w, width), (t, h, w) order
        return standardize_tokens(tokens)


def _load_image_tower(visual: nn.Module, path: str) -> bool:
    """Load a file holding only the image tower's weights (keys bare or under "visual."). True if it fit."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a loadable tensor file
        return False
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        return False
    sd = {k.removeprefix("module.").removeprefix("visual."): v for k, v in sd.items()}
    try:
        visual.load_state_dict(sd, strict=True)
    except RuntimeError:
        return False
    return True


def load_teacher(model: str = "ViT-B-16", pretrained: str = "openai", tubelet: int = 2,
                 out_grid: tuple[int, int] = (14, 14)) -> ClipTeacher:
    """Build the frozen teacher. Raises UserError when the weights cannot be obtained."""
    import open_clip
    weights = resolve_weights(model, pretrained)
    if weights is None:
        warnings.warn(f"RANDOM CLIP TEACHER: --teacher-pretrained none gives {model} random weights; "
                      "its targets carry no semantics (use this for tests only)", stacklevel=2)
    try:
        clip = open_clip.create_model(model, pretrained=weights)
    except Exception as e:  # noqa: BLE001 - torch.load/unpickling raise many types for a bad file
        clip = open_clip.create_model(model, pretrained=None)
        if not _load_image_tower(clip.visual, weights):
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"cannot load {model} weights from {weights}: {first}; "
                            f"is it an open_clip checkpoint of {model} (or of its image tower)?") from None
    visual = clip.visual
    if not hasattr(visual, "ln_post") or not hasattr(visual, "patch_size"):
        raise UserError(f"--teacher {model} has no ViT image tower with patch tokens; use a ViT model such as ViT-B-16")
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = cfg.get("mean", getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    del clip
    return ClipTeacher(visual, mean, std, tubelet, out_grid)
