"""The student: a VideoMAE-style masked video transformer, and its named presets.

The encoder sees only the visible tokens; a light decoder fills in mask tokens and predicts the
targets (CLIP features or normalized pixels) of the masked ones. Parameter names and shapes match
the VideoMAE / SMILE pretraining checkpoints (`encoder.blocks.0.attn.q_bias`, `encoder_to_decoder.weight`,
`mask_token`, `decoder.head.weight`, ...), so released checkpoints load with `load_state_dict`, and the
encoder's weights (prefix "encoder." stripped) load into VideoMAE's fine-tuning ViT.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from smile_synth.config import MAX_FRAMES, MAX_SIZE
from smile_synth.errors import UserError, shown

from .layers import Block, Linear, PatchEmbed, init_weights, sincos_table


# Upper bounds of a student's sizes: far beyond any video transformer (VideoMAE's largest, ViT-g, is 1408 wide
# and 40 deep, 16 frames x 224 px), low enough that a model within them can be built in memory. Frames and
# frame size share the options' bounds.
GEOMETRY_LIMITS = {"size": MAX_SIZE, "frames": MAX_FRAMES, "patch": 512, "tubelet": 64, "dim": 16384, "depth": 512,
                   "heads": 512, "decoder_dim": 16384, "decoder_depth": 512, "decoder_heads": 512,
                   "target_dim": 1 << 20}
MAX_MLP_RATIO = 64.0
PLAIN_NAMES = {"size": "frame size", "patch": "patch size", "tubelet": "tubelet size"}   # messages' words for ours
MAX_TABLE = 1 << 28            # elements of one fixed position table (tokens x width): 1 GiB in fp32
MAX_PARAMETERS = 1 << 33       # 8.6 G parameters, 34 GB in fp32


@dataclass(frozen=True)
class StudentConfig:
    """Geometry and widths of a student; `target_dim` is the decoder's output per token."""
    size: int = 224                # frame side, px
    frames: int = 16
    patch: int = 16                # px
    tubelet: int = 2               # frames per token
    dim: int = 768
    depth: int = 12
    heads: int = 12
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    target_dim: int = 1536         # 3 * tubelet * patch^2 = normalized pixels; the teacher's width for CLIP

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W')."""
        return self.frames // self.tubelet, self.size // self.patch, self.size // self.patch

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def validate(self, where: str = "", names: Mapping[str, str] | None = None) -> StudentConfig:
        """self, checked: whole-number sizes within GEOMETRY_LIMITS, the model within MAX_TABLE and
        MAX_PARAMETERS, sizes divisible; else one UserError. The one validator for every source: the CLI's
        preset and options, a checkpoint's "student", a transformers config.json. `where` names the file the
        values came from and `names` its name for each field (config.json's "hidden_size" for dim); types are
        checked first, so values read from a file may be anything."""
        at, name = (f"{where}: " if where else ""), (lambda f: (names or PLAIN_NAMES).get(f, f))

        def refuse(field: str, requirement: str):
            raise UserError(f"{at}{name(field)} {shown(getattr(self, field))} {requirement}")

        for field, most in GEOMETRY_LIMITS.items():
            value, least = getattr(self, field), 0 if field == "decoder_depth" else 1   # no decoder: allowed
            if not isinstance(value, int) or isinstance(value, bool):
                refuse(field, "must be a whole number")
            if not least <= value <= most:
                refuse(field, f"must be from {least} to {most}")
        for field in ("mlp_ratio", "drop_path"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                refuse(field, "must be a finite number")
        if not 0 < self.mlp_ratio <= MAX_MLP_RATIO or int(self.dim * self.mlp_ratio) < 1:
            refuse("mlp_ratio", f"must be above 0 and at most {MAX_MLP_RATIO:g}")
        if not 0 <= self.drop_path < 1:
            refuse("drop_path", "must be in [0, 1)")
        if self.size % self.patch:
            hint = "" if where else f"; use e.g. --size {self.size // self.patch * self.patch or self.patch}"
            raise UserError(f"{at}{name('size')} {self.size} is not a multiple of the {name('patch')} {self.patch}{hint}")
        if self.frames % self.tubelet:
            hint = "" if where else "; use an even number of frames"
            raise UserError(f"{at}{name('frames')} {self.frames} is not a multiple of the "
                            f"{name('tubelet')} {self.tubelet}{hint}")
        for d, h in (("dim", "heads"), ("decoder_dim", "decoder_heads")):
            if getattr(self, d) % getattr(self, h):
                raise UserError(f"{at}{name(d)} {getattr(self, d)} is not divisible by {name(h)} {getattr(self, h)}")
        table = self.num_tokens * max(self.dim, self.decoder_dim)
        if table > MAX_TABLE:
            raise UserError(f"{at}{name('frames')} {self.frames} and {name('size')} {self.size} make {self.num_tokens} "
                            f"tokens, a {table * 4 / 2**30:.1f} GiB position table at width "
                            f"{max(self.dim, self.decoder_dim)}; at most {MAX_TABLE * 4 / 2**30:g} GiB is supported")
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise UserError(f"{at}{name('dim')} {self.dim} and {name('depth')} {self.depth} (decoder "
                            f"{self.decoder_dim} x {self.decoder_depth}) make about "
                            f"{self.parameter_estimate() / 1e9:.0f} G parameters; at most "
                            f"{MAX_PARAMETERS / 1e9:.1f} G are supported")
        return self

    def parameter_estimate(self) -> int:
        """About how many parameters the pretraining model has (the attention and MLP weights, the patch
        embedding and the decoder head), for the size bound."""
        def blocks(width: int, depth: int) -> int:
            return depth * (4 + 2 * self.mlp_ratio) * width ** 2
        return int(blocks(self.dim, self.depth) + blocks(self.decoder_dim, self.decoder_depth)
                   + self.dim * 3 * self.tubelet * self.patch ** 2 + self.decoder_dim * (self.dim + self.target_dim))


PRESETS: dict[str, StudentConfig] = {
    # CPU tests and demos. micro is the smoke-scale study's student: 64 px with 16 px patches (64 tokens,
    # 2.1 M encoder parameters), 4x cheaper a step than 8 px patches, which learned no faster per step
    "micro": StudentConfig(size=64, frames=8, patch=16, dim=192, depth=4, heads=3, decoder_dim=96, decoder_depth=2,
                           decoder_heads=3),
    # micro with 8 px patches (256 tokens): the GPU study's candidate at the 64 px of its prepared data
    "micro8": StudentConfig(size=64, frames=8, patch=8, dim=192, depth=4, heads=3, decoder_dim=96, decoder_depth=2,
                            decoder_heads=3),
    "tiny": StudentConfig(size=112, frames=8, dim=192, depth=4, heads=3, decoder_dim=96, decoder_heads=3),
    "small": StudentConfig(dim=384, depth=12, heads=6, decoder_dim=192, decoder_heads=3),
    "base": StudentConfig(dim=768, depth=12, heads=12, decoder_dim=384, decoder_heads=6),
    "large": StudentConfig(dim=1024, depth=24, heads=16, decoder_dim=512, decoder_heads=8),
}


def student_config(preset: str, **overrides) -> StudentConfig:
    """The preset's config with `overrides` (StudentConfig field names) applied and validated."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(StudentConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise UserError(f"unknown student setting {bad[0]!r}; settings are {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[preset], **overrides).validate()


ARCH_FIELDS = ("dim", "depth", "heads", "patch", "tubelet", "mlp_ratio")   # what an encoder's weights fix


def same_arch(a: StudentConfig, b: StudentConfig) -> bool:
    """Do the two configs' encoders take the same weights (frames and size may differ)?"""
    return all(getattr(a, f) == getattr(b, f) for f in ARCH_FIELDS)


def matching_preset(cfg: StudentConfig) -> str | None:
    """The name of the preset whose architecture `cfg` has, or None."""
    return next((name for name, p in PRESETS.items() if same_arch(p, cfg)), None)


def preset_of(cfg: StudentConfig) -> str:
    """matching_preset(cfg), or one UserError when no preset has that architecture."""
    name = matching_preset(cfg)
    if name is None:
        raise UserError(f"no preset has a {cfg.dim}-wide, {cfg.depth}-deep model; choose one of {', '.join(PRESETS)}")
    return name


def run_block(blk: nn.Module, x: torch.Tensor, recompute: bool) -> torch.Tensor:
    """blk(x); with `recompute`, its activations are not kept but recomputed in backward (memory for time)."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(blk, x, use_reentrant=False)
    return blk(x)


class VideoEncoder(nn.Module):
    """ViT over tubelet tokens. forward(video (B, 3, T, H, W), mask bool (B, N) or None) -> (B, N_visible, C)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.dim, cfg.patch, cfg.tubelet)
        self.register_buffer("pos_embed", sincos_table(cfg.num_tokens, cfg.dim), persistent=False)
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, p) for p in dpr)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.grad_checkpointing = False

    def forward_blocks(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The last block's output (B, N_visible, C), before the final norm."""
        x = self.patch_embed(video) + self.pos_embed.to(video.dtype)      # (B, N, C)
        if mask is not None:
            B, _, C = x.shape
            x = x[~mask].reshape(B, -1, C)                                 # every clip has the same count
        for blk in self.blocks:
            x = run_block(blk, x, self.grad_checkpointing and self.training)
        return x

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.forward_blocks(video, mask))


class VideoDecoder(nn.Module):
    """forward(x (B, N_all, D), n_masked) -> (B, n_masked, target_dim): predictions for the last n_masked tokens."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(cfg.decoder_dim, eps=1e-6)
        self.head = Linear(cfg.decoder_dim, cfg.target_dim)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, n_masked: int) -> torch.Tensor:
        for blk in self.blocks:
            x = run_block(blk, x, self.grad_checkpointing and self.training)
        return self.head(self.norm(x[:, -n_masked:]))


class PretrainVideoTransformer(nn.Module):
    """forward(video (B, 3, T, H, W) normalized, mask bool (B, N), True = masked, the same count per clip)
    -> (B, N_masked, target_dim), the masked tokens in token order (t, h, w)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg)
        self.encoder_to_decoder = Linear(cfg.dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.register_buffer("pos_embed", sincos_table(cfg.num_tokens, cfg.decoder_dim), persistent=False)
        self.decoder = VideoDecoder(cfg)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.encoder_to_decoder(self.encoder(video, mask))            # (B, N_vis, D)
        B, _, D = x.shape
        pos = self.pos_embed.to(x.dtype).expand(B, -1, -1)
        pos_vis = pos[~mask].reshape(B, -1, D)
        pos_mask = pos[mask].reshape(B, -1, D)
        x = torch.cat([x + pos_vis, self.mask_token.to(x.dtype) + pos_mask], dim=1)
        return self.decoder(x, pos_mask.shape[1])

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}


def loss_fn(model: nn.Module, video: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """The pretraining loss: MSE between the student's predictions and the targets of the masked tokens.
    video (B, 3, T, H, W) normalized, target (B, N, D), mask bool (B, N); weight (B, N, D) 0/1 or None:
    the mean over the masked entries of weight 1 only (targets defined on some pixels, e.g. flow)."""
    pred = model(video, mask)                                              # (B, N_masked, D)
    if weight is None:
        return F.mse_loss(pred.float(), target[mask].reshape(pred.shape).float())
    w = weight[mask].reshape(pred.shape).float()
    error = (pred.float() - target[mask].reshape(pred.shape).float()).square()
    return (error * w).sum() / w.sum().clamp_min(1.0)                      # no counted entry: 0, no NaN


def build_student(preset: str, **overrides) -> PretrainVideoTransformer:
    """The named preset ("tiny", "small", "base", "large") with StudentConfig overrides,
    e.g. build_student("base", target_dim=768) for a ViT-B/16 CLIP target."""
    return PretrainVideoTransformer(student_config(preset, **overrides))


def encoder_state_dict(model: PretrainVideoTransformer) -> dict[str, torch.Tensor]:
    """The encoder's weights with the "encoder." prefix stripped (VideoMAE fine-tuning key names)."""
    return {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
