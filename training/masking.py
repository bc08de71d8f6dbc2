"""Token masks: VideoMAE's tube masking and SMILE's tube + trajectory masking.

A mask is bool (B, N), True = masked, over the tokens in (t, h, w) order of a (T', H', W') grid.
Every clip gets exactly `masked_count(grid, ratio)` masked tokens, so the encoder's visible tokens
stack into one dense (B, N_visible, C) tensor.

Mask kinds are registered by name (`--mask`): a builder (MaskSpec, grid) -> masker under
@register_mask("name"); TrajectoryMasker(spec, grid) builds spec.kind's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smile_synth.errors import UserError


def masked_count(grid: tuple[int, int, int], ratio: float) -> int:
    """floor(ratio x tokens per frame slot) x slots: 0.8 at 16 x 224 -> 156 x 8 = 1248."""
    t, h, w = grid
    return int(ratio * h * w) * t


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | None = None) -> torch.Tensor:
    """float32 uniform [0, 1) drawn by `generator` on its own device, then put on `device` (default:
    the generator's): masks depend on the generator only, wherever they are computed."""
    where = generator.device if generator is not None else torch.device("cpu")
    x = torch.rand(shape, generator=generator, device=where)
    return x if device is None else x.to(device)


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float,
              generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """One random spatial mask per clip, shared by all its frame slots. -> bool (B, N) on `device`
    (default: the generator's)."""
    t, h, w = grid
    k = int(ratio * h * w)
    order = uniform((batch, h * w), generator, device).argsort(dim=1)
    spatial = torch.zeros(batch, h * w, dtype=torch.bool, device=order.device)
    spatial.scatter_(1, order[:, :k], True)
    return spatial.repeat(1, t)                                            # (B, t*h*w), t-major


def object_token_coverage(objects: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Fraction of each token's tubelet x patch x patch pixels that belong to an object.

    objects: bool/uint8 (B, T, H, W), the union of the clip's object masks. -> float32 (B, N)."""
    B, T, H, W = objects.shape
    x = objects.reshape(B, T // tubelet, tubelet, H // patch, patch, W // patch, patch)
    return x.float().mean(dim=(2, 4, 6)).reshape(B, -1)


def trajectory_mask(object_tokens: torch.Tensor, grid: tuple[int, int, int], ratio: float,
                    unmask_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SMILE's tube + trajectory masking, rebalanced to exactly masked_count(grid, ratio) per clip.

    object_tokens: bool (B, N), on any device (the result is computed there). Of each clip's object
    tokens a random round(unmask_ratio x n) stay visible and the rest are masked; the other tokens
    follow a tube mask. When that masks too many or too few, tokens are unmasked or masked at random,
    touching object tokens only when unavoidable. -> bool (B, N)."""
    B, N = object_tokens.shape
    k = masked_count(grid, ratio)
    obj = object_tokens.bool()
    device = obj.device
    tube = tube_mask(B, grid, ratio, generator, device)
    # pick the visible share of object tokens: rank object tokens in random order
    key = torch.where(obj, uniform((B, N), generator, device), torch.full((B, N), 2.0, device=device))
    rank = key.argsort(dim=1).argsort(dim=1)                               # (B, N) rank of each token
    n_visible = torch.floor(obj.sum(1, keepdim=True) * unmask_ratio + 0.5)
    keep_visible = obj & (rank < n_visible)
    # priority: masked object tokens > tube tokens > other tokens > visible-share object tokens
    tier = torch.where(obj, torch.where(keep_visible, 0.0, 3.0), torch.where(tube, 2.0, 1.0))
    priority = tier + uniform((B, N), generator, device)
    mask = torch.zeros(B, N, dtype=torch.bool, device=device)
    mask.scatter_(1, priority.topk(k, dim=1).indices, True)
    return mask


@dataclass(frozen=True)
class MaskSpec:
    """`kind` a registered mask kind (MASKS: "tube", "traj"); a token is an object token when coverage
    >= `object_threshold`."""
    kind: str = "tube"
    ratio: float = 0.8
    traj_unmask_ratio: float = 0.1
    object_threshold: float = 0.25


# ---- the registry: mask kinds by name -----------------------------------------------------------

# masker(coverage float (B, N) or None, batch, generator) -> bool (B, N)
MaskFn = Callable[[torch.Tensor | None, int, torch.Generator | None], torch.Tensor]
# builder(spec, grid (T', H', W')) -> masker
MASKS: dict[str, Callable[[MaskSpec, tuple[int, int, int]], MaskFn]] = {}


def register_mask(name: str):
    """Decorator: register a masker builder under `name` (a --mask choice)."""
    def register(builder):
        MASKS[name] = builder
        return builder
    return register


@register_mask("tube")
def tube_masker(spec: MaskSpec, grid: tuple[int, int, int]) -> MaskFn:
    """VideoMAE's tube masks; the clips' objects are ignored."""
    def masker(coverage, batch, generator=None):
        return tube_mask(batch, grid, spec.ratio, generator)
    return masker


@register_mask("traj")
def trajectory_masker(spec: MaskSpec, grid: tuple[int, int, int]) -> MaskFn:
    """SMILE's tube + trajectory masks; without coverage (clips with no objects) plain tube masks."""
    def masker(coverage, batch, generator=None):
        if coverage is None:
            return tube_mask(batch, grid, spec.ratio, generator)
        objects = coverage >= spec.object_threshold
        return trajectory_mask(objects, grid, spec.ratio, spec.traj_unmask_ratio, generator)
    return masker


def mask_choices() -> tuple[str, ...]:
    """The --mask choices: auto, then every registered kind."""
    return ("auto", *MASKS)


def resolve_mask_kind(mask: str, has_objects: bool) -> str:
    """--mask auto = traj when the clips carry objects, else tube; other choices stand."""
    if mask != "auto":
        return mask
    return "traj" if has_objects else "tube"


class TrajectoryMasker:
    """Masks for a batch of the registered kind spec.kind: tube masks, or tube + trajectory masks from
    per-token object coverage.

    __call__(coverage float (B, N) or None, batch, generator) -> bool (B, N); without coverage (clips
    with no objects) trajectory masking is plain tube masking."""

    def __init__(self, spec: MaskSpec, grid: tuple[int, int, int]):
        if spec.kind not in MASKS:
            raise ValueError(f"unknown mask kind {spec.kind!r}; kinds are {', '.join(MASKS)}")
        self.spec, self.grid = spec, grid
        self.num_masked = masked_count(grid, spec.ratio)
        t, h, w = grid
        if not 0 < self.num_masked < t * h * w:   # the student needs tokens both to see and to predict
            raise UserError(f"--mask-ratio {spec.ratio} masks {self.num_masked // t} of the {h * w} tokens of each frame "
                            f"slot ({h}x{w} patches): raise --size or change --mask-ratio so that some but not all are masked")
        self.masker = MASKS[spec.kind](spec, grid)

    def __call__(self, coverage: torch.Tensor | None, batch: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return self.masker(coverage, batch, generator)
