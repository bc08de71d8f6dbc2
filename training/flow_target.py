"""The `flow` pretraining target: each token's mean optical flow, from the clip's exact motion field.

The data workers hold each clip's flow (generators.flow.annotate: float32 (T-1, H, W, 2), (dx, dy) in
px/frame, frame t -> t+1, with flow_valid bool (T-1, H, W)) and reduce it to tokens here (token_flow);
the batch carries the result, (B, N, 2 * tubelet) values and 0/1 weights, and FlowTarget hands both
to the loss, which counts only weighted entries.

Per token and tubelet frame step k (frame t0 + k -> t0 + k + 1 of a token whose tubelet starts at
frame t0): the mean flow over the token's valid pixels of frame t0 + k, order (step, dx/dy). An entry
whose pixels are all invalid (evolving noise, the real frames under an overlay) has weight 0; so has the
last step of the last tubelet, which would go past the clip's last frame.

Units: percent of the clip's side per frame (the flow x 100 / size; 1 = 2.24 px/frame at 224 px), the
same at every clip size and O(1): the recipes' object speeds, 1-6 px/frame at 224 px, are 0.45-2.7;
on `mixed` clips the valid entries' root mean square is about 1.9. Not standardized per clip: a still
clip's zero flow and a camera pan shared by every token are what the student should predict.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from smile_synth.errors import UserError
from smile_synth.shards import DATASET, read_json

FLOW = "flow"            # the target's name, and the annotation it needs from the generator
PERCENT = 100.0          # target unit: percent of the clip side per frame


def token_flow(flow: np.ndarray, valid: np.ndarray, tubelet: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip's per-token mean flow, in px/frame at the clip's own size.

    flow float32 (T-1, H, W, 2), valid bool (T-1, H, W) -> (values float32 (N, 2 * tubelet), weight
    float32 (N, 2 * tubelet), 1 where the entry has at least one valid pixel), tokens in (t, h, w)
    order as training.targets.patchify; T % tubelet == 0 and H, W % patch == 0."""
    steps, H, W = valid.shape
    T, h, w = steps + 1, H // patch, W // patch
    means = np.zeros((T, h, w, 3), np.float32)             # per frame and token: mean dx, dy (0 where invalid), valid share
    for t in range(steps):                                 # frame T-1 has no forward flow: stays 0
        ok = valid[t].astype(np.float32)                   # contiguous float products: 2x faster than a strided out=
        means[t, ..., :2] = cv2.resize(flow[t] * ok[..., None], (w, h), interpolation=cv2.INTER_AREA)   # exact patch
        means[t, ..., 2] = cv2.resize(ok, (w, h), interpolation=cv2.INTER_AREA)                        # means
    means = means.reshape(T // tubelet, tubelet, h, w, 3).transpose(0, 2, 3, 1, 4).reshape(-1, tubelet, 3)
    share = means[..., 2:]                                 # (N, tubelet, 1) share of valid pixels
    values = means[..., :2] / np.maximum(share, 1e-12)
    weight = np.broadcast_to(share > 0, values.shape)
    return values.reshape(len(values), -1).astype(np.float32), weight.reshape(len(values), -1).astype(np.float32)


def to_target_units(values: np.ndarray | torch.Tensor, size: int):
    """px/frame at a `size`-px clip -> percent of the clip side per frame (the target's unit)."""
    return values * (PERCENT / size)


def batch_token_flow(samples: Sequence, tubelet: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's "flow" and "flow_weight": float32 (B, N, 2 * tubelet) each, in the target's unit, from
    Samples with .flow / .flow_valid (a sample without them gets weight 0: it does not count)."""
    tokens = [None if s.flow is None else token_flow(s.flow, s.flow_valid, tubelet, patch) for s in samples]
    shape = next(t[0].shape for t in tokens if t is not None)
    values, weights = np.zeros((len(samples), *shape), np.float32), np.zeros((len(samples), *shape), np.float32)
    for i, (s, t) in enumerate(zip(samples, tokens)):
        if t is not None:
            values[i], weights[i] = to_target_units(t[0], s.flow.shape[2]), t[1]
    return torch.from_numpy(values), torch.from_numpy(weights)


class FlowTarget:
    """Each masked token's mean flow (2 values per tubelet frame step), computed by the data workers
    and carried by the batch ("flow", "flow_weight"); the loss counts only entries of weight 1."""

    def __init__(self, tubelet: int):
        self.dim = 2 * tubelet

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        raise TypeError("the flow target is not computed from pixels: it comes with the batch (of_batch)")

    def of_batch(self, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (B, N, dim), weight (B, N, dim)) on `device`."""
        return batch["flow"].to(device, non_blocking=True), batch["flow_weight"].to(device, non_blocking=True)


NEEDS_MOTION = "--target flow needs clips with known motion"


def shards_have_flow(path: str) -> bool:
    """Whether the shard folder `path` was generated with --annotations flow (its dataset.json says so)."""
    try:
        return FLOW in read_json(Path(path) / DATASET).get("annotations", ())
    except (OSError, ValueError, AttributeError):
        return False


def check_flow_sources(cfg) -> None:
    """One-line UserError unless every clip of PretrainConfig `cfg` comes with exact flow: rendered from a
    recipe in the data workers, shards generated with --annotations flow, or natural clips with --overlay
    objects (flow on the objects only)."""
    if cfg.render_device is not None:
        raise UserError(f"{NEEDS_MOTION} from the data workers; clips painted with --render-device carry no "
                        "flow yet: leave --render-device out")
    synthetic_shards = cfg.data if cfg.source == "synthetic" else cfg.synthetic_data
    if cfg.source != "natural" and synthetic_shards is not None and Path(synthetic_shards).is_dir() \
            and not shards_have_flow(synthetic_shards):      # a missing folder: the shard reader says so
        option = "--data" if cfg.source == "synthetic" else "--synthetic-data"
        raise UserError(f"{NEEDS_MOTION}: the shards in {option} {synthetic_shards} carry no flow; generate them "
                        f"with `smile-synth generate --annotations flow`, or render on the fly with --recipe NAME")
    if cfg.source != "synthetic" and not cfg.overlay:
        raise UserError(f"{NEEDS_MOTION}: natural videos have none; add --overlay RECIPE (objects whose flow is "
                        "known) or use --source synthetic --recipe NAME")


def annotations_for(target: str) -> tuple[str, ...]:
    """The generator annotations the data workers must compute for --target `target`."""
    return (FLOW,) if target == FLOW else ()
