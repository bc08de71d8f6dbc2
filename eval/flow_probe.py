"""The `flow` evaluation task: does a frozen encoder's token know how its patch moves?

Held-out synthetic clips with exact flow, in an appearance no pretraining recipe shows (eval/direction.py's
Hershey glyphs over two-colour gradients under a faint grating): 1-2 glyphs move over a still
background, each on a constant-velocity or smoothly turning path in any direction at 0-3 px/frame at
64 px (scaled with the size). The flow is exact: each glyph's step on its pixels (alpha > 1/2, the upper
glyph where both are), zero elsewhere.

Each token's target is its mean flow over its pixels and frame steps (2 values, px/frame at the clip
size; training.flow_target.token_flow, then the mean over the token's steps with flow). A ridge regression
from the encoder's per-token outputs (standardized on the training tokens; its strength picked by
cross-validation over training clips, never the test set) predicts it on test clips from a disjoint
random stream. Reported: the end-point error EPE = mean over test tokens of |predicted - true| (lower is
better), beside the zero-flow and the mean-flow (training mean) baselines, and the same on moving
tokens only (true |flow| > MOVING).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smile_synth.config import Bounds, check_bounds
from training.flow_target import token_flow

from .direction import glyph_sprite, gradient_background, place_sprite
from .features import encode_tokens

TASK = "flow"                        # its name as a --task of `eval` and `compare`
PROBE = "ridge"                      # the one probe it runs (a report column: flow/ridge)
METRIC = "epe"
MAX_SPEED = 3.0                      # px/frame at 64 px
MAX_TURN = 0.25                      # rad/frame: the most a smooth path turns
MOVING = 0.1                         # px/frame at 64 px: a token moves when its true flow is longer
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)   # ridge strength per training token (standardized features)
CV_FOLDS = 3


@dataclass(frozen=True)
class FlowSetSpec:
    """How many clips of what geometry; the sets are a pure function of these and the seed."""
    train_clips: int = 48
    test_clips: int = 24
    batch: int = 8                   # clips per encoder call

    def validate(self) -> FlowSetSpec:
        check_bounds(self, {"train_clips": Bounds(CV_FOLDS), "test_clips": Bounds(1), "batch": Bounds(1)})
        return self


# ---- the clips ------------------------------------------------------------------------------------

def glyph_path(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """float64 (frames, 2) positions (x, y px) of a glyph's centre: constant velocity or a smoothly
    turning one (half the paths each), speed uniform in [0, MAX_SPEED] px/frame at 64 px, any direction,
    the path's middle near the frame centre."""
    speed = rng.uniform(0, MAX_SPEED) * size / 64
    turn = rng.uniform(-MAX_TURN, MAX_TURN) if rng.random() < 0.5 else 0.0
    heading = rng.uniform(0, 2 * np.pi) + turn * np.arange(frames - 1)
    steps = speed * np.stack([np.cos(heading), np.sin(heading)], 1)               # (frames - 1, 2)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    middle = size / 2 + rng.uniform(-0.15, 0.15, 2) * size
    return path - (path.max(0) + path.min(0)) / 2 + middle


def flow_clip(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip and its exact forward flow: (uint8 (frames, size, size, 3), float32 (frames-1, size, size, 2)
    px/frame, (dx, dy))."""
    background = gradient_background(rng, size).astype(np.float32)
    video = np.repeat(background[None], frames, 0)                                 # (T, S, S, 3) float
    flow = np.zeros((frames - 1, size, size, 2), np.float32)
    for _ in range(int(rng.integers(1, 3))):                                       # later glyphs in front
        colour, alpha = glyph_sprite(rng, rng.uniform(0.25, 0.4) * size)
        path = glyph_path(rng, frames, size)
        half = np.array(alpha.shape[::-1]) / 2
        for t in range(frames):
            c, a = place_sprite(colour, alpha, path[t] - half, size)
            video[t] = video[t] * (1 - a) + c * a
            if t < frames - 1:
                flow[t][a[..., 0] > 0.5] = path[t + 1] - path[t]
    return np.clip(video + 0.5, 0, 255).astype(np.uint8), flow


def token_targets(flow: np.ndarray, tubelet: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (T-1, H, W, 2) flow, defined everywhere -> (float32 (N, 2) each token's mean flow over its
    pixels and frame steps, bool (N,) whether it has any step: with tubelet 1 the last frame's have none)."""
    values, weight = token_flow(flow, np.ones(flow.shape[:3], bool), tubelet, patch)     # (N, 2 * tubelet)
    values, weight = values.reshape(len(values), -1, 2), weight.reshape(len(values), -1, 2)
    count = weight.sum(1)
    return (values * weight).sum(1) / np.maximum(count, 1), count[:, 0] > 0


def flow_set(n: int, frames: int, size: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips i < n of random stream (seed, stream): (video uint8 (n, T, S, S, 3), flow float32 (n, T-1, S, S, 2))."""
    clips = [flow_clip(np.random.default_rng([seed, stream, i]), frames, size) for i in range(n)]
    return np.stack([v for v, _ in clips]), np.stack([f for _, f in clips])


# ---- features and the probe -----------------------------------------------------------------------

@torch.no_grad()
def token_features(encoder: torch.nn.Module, videos: np.ndarray, batch: int) -> np.ndarray:
    """uint8 (n, T, S, S, 3) -> float32 (n, N, C): the encoder's per-token outputs, no mask."""
    encoder.eval()
    out = [encode_tokens(encoder, videos[i:i + batch]).float().numpy() for i in range(0, len(videos), batch)]
    return np.concatenate(out)


def ridge_solve(gram: np.ndarray, cross: np.ndarray, strength: float) -> np.ndarray:
    """(C, C) X^T X and (C, D) X^T Y -> (C, D) weights of the ridge regression with `strength`."""
    return np.linalg.solve(gram + strength * np.eye(len(gram)), cross)


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, train_clip: np.ndarray, test_x: np.ndarray,
                seed: int = 0) -> tuple[np.ndarray, float]:
    """Ridge regression on standardized features: train_x (M, C), train_y (M, D), train_clip int (M,) the
    clip of each row (folds never split a clip), test_x (K, C) -> (predictions (K, D), the strength per
    training row chosen from RIDGE_GRID by CV_FOLDS-fold cross-validation on squared error)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = ((train_x - mean) / std).astype(np.float64)
    y_mean = train_y.mean(0)
    y = train_y - y_mean
    clips = np.unique(train_clip)
    fold_of_clip = np.random.default_rng(seed).permutation(len(clips)) % CV_FOLDS
    fold = fold_of_clip[np.searchsorted(clips, train_clip)]
    grams = [(x[fold == f].T @ x[fold == f], x[fold == f].T @ y[fold == f]) for f in range(CV_FOLDS)]
    gram, cross = sum(g for g, _ in grams), sum(c for _, c in grams)
    errors = []
    for a in RIDGE_GRID:
        error = 0.0
        for f, (g, c) in enumerate(grams):
            n = int((fold != f).sum())
            w = ridge_solve(gram - g, cross - c, a * n)
            error += float(((x[fold == f] @ w - y[fold == f]) ** 2).sum())
        errors.append(error)
    best = RIDGE_GRID[int(np.argmin(errors))]
    w = ridge_solve(gram, cross, best * len(x))
    return ((test_x - mean) / std) @ w + y_mean, best


def end_point_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean |pred - true| over rows: (K, 2) each -> px/frame (NaN with no rows)."""
    return float(np.linalg.norm(pred - true, axis=1).mean()) if len(true) else float("nan")


def epe_metrics(pred: np.ndarray, true: np.ndarray, train_mean: np.ndarray, size: int) -> dict:
    """The probe's EPE and the baselines' (zero flow; the training tokens' mean flow), on all test tokens
    and on moving ones only. pred, true (K, 2) px/frame; train_mean (2,)."""
    moving = np.linalg.norm(true, axis=1) > MOVING * size / 64
    out = {}
    for name, rows in (("", slice(None)), ("_moving", moving)):
        out[f"epe{name}"] = end_point_error(pred[rows], true[rows])
        out[f"zero_epe{name}"] = end_point_error(np.zeros_like(true[rows]), true[rows])
        out[f"mean_epe{name}"] = end_point_error(np.broadcast_to(train_mean, true[rows].shape), true[rows])
    out["moving_share"] = float(moving.mean())
    return out


def probe_features(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   size: int, seed: int = 0) -> dict:
    """The task's metrics from per-token features: train_x (n, N, C), train_y (n, N, 2) with NaN rows for
    tokens without flow, test_x (m, N, C), test_y (m, N, 2) the same."""
    clip = np.repeat(np.arange(len(train_x)), train_x.shape[1])
    tx, ty = train_x.reshape(-1, train_x.shape[-1]), train_y.reshape(-1, 2)
    sx, sy = test_x.reshape(-1, test_x.shape[-1]), test_y.reshape(-1, 2)
    keep, score = ~np.isnan(ty[:, 0]), ~np.isnan(sy[:, 0])
    pred, strength = ridge_probe(tx[keep], ty[keep], clip[keep], sx[score], seed)
    return {**epe_metrics(pred, sy[score], ty[keep].mean(0), size), "ridge_strength": strength,
            "n_train_tokens": int(keep.sum()), "n_test_tokens": int(score.sum())}


def set_targets(flows: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    """float32 (n, T-1, S, S, 2) -> (n, N, 2) token targets, NaN for tokens without flow."""
    out = []
    for f in flows:
        mean, has = token_targets(f, tubelet, patch)
        out.append(np.where(has[:, None], mean, np.nan))
    return np.stack(out).astype(np.float32)


def flow_metrics(load_encoder, s, seed: int = 0, spec: FlowSetSpec = FlowSetSpec()) -> dict:
    """The flow task for an encoder of StudentConfig `s` (geometry, tubelet, patch) built by `load_encoder()`:
    train and test sets from `seed` (streams 0 and 1), features, ridge probe -> a metrics row
    (task, probe, metric "epe", its value and baselines; lower is better)."""
    spec = spec.validate()
    encoder = load_encoder()
    sets = {}
    for name, n, stream in (("train", spec.train_clips, 0), ("test", spec.test_clips, 1)):
        videos, flows = flow_set(n, s.frames, s.size, seed, stream)
        sets[name] = (token_features(encoder, videos, spec.batch), set_targets(flows, s.tubelet, s.patch))
    m = probe_features(*sets["train"], *sets["test"], s.size, seed)
    return {"task": TASK, "probe": PROBE, "metric": METRIC, "seed": seed, **m,
            "chance": m["mean_epe"], "unit": f"px/frame at {s.size} px",
            "n_train_clips": spec.train_clips, "n_test_clips": spec.test_clips}


def summary_line(m: dict) -> str:
    return (f"{TASK} / {PROBE}: EPE {m['epe']:.3f} {m['unit']} (lower is better; zero flow {m['zero_epe']:.3f}, "
            f"mean flow {m['mean_epe']:.3f}); moving tokens {m['epe_moving']:.3f} (zero {m['zero_epe_moving']:.3f}, "
            f"mean {m['mean_epe_moving']:.3f}) on {m['n_test_tokens']} test tokens of {m['n_test_clips']} clips, "
            f"seed {m['seed']}")
