"""eval.diagnostics: the hand-crafted motion baseline and the feature statistics behind
benchmarks/eval_diagnostics.py."""
import cv2
import numpy as np
import torch

from eval.diagnostics import MotionStatistics, centered, effective_rank
from eval.features import FeatureSet
from eval.probes import probe_scores, topk_accuracy


def translating(texture: np.ndarray, speed: int, frames: int = 8, size: int = 32) -> torch.Tensor:
    """(3, T, size, size): a window sliding `speed` pixels per frame over `texture` (H, W)."""
    clip = np.stack([texture[:size, t * speed:t * speed + size] for t in range(frames)])
    return torch.from_numpy(clip).float()[None].expand(3, -1, -1, -1)


def smooth_texture(rng, contrast: float = 1.0) -> np.ndarray:
    """(32, 80) blurred noise: frame differences grow with the shift (white noise's would not)."""
    return cv2.GaussianBlur(rng.random((32, 80)), (0, 0), 3) * contrast


def test_motion_statistics_shape_and_speed_ordering():
    rng = np.random.default_rng(0)
    texture = smooth_texture(rng)
    video = torch.stack([translating(texture, s) for s in (0, 1, 4)])          # (3, 3, 8, 32, 32)
    out = MotionStatistics()(video)
    assert out.shape == (3, 1, 3 * 8 + 7 // 2)
    lag1 = out[:, 0, 0]
    assert lag1[0] == torch.tensor(1e-4).log()                               # still: no change at all
    assert lag1[0] < lag1[1] < lag1[2]                                        # faster: larger differences


def test_motion_statistics_let_a_linear_probe_tell_speeds_on_unseen_textures():
    rng = np.random.default_rng(1)
    speeds = (1, 2, 4)

    def examples(n):
        x, y = [], []
        for _ in range(n):
            texture = smooth_texture(rng, rng.uniform(0.3, 1.0))           # contrast varies per texture
            for label, s in enumerate(speeds):
                x.append(translating(texture, s))
                y.append(label)
        return MotionStatistics()(torch.stack(x))[:, 0].numpy(), np.array(y)

    train_x, train_y = examples(12)
    test_x, test_y = examples(6)
    scores = probe_scores("linear", train_x, train_y, test_x, 3)
    assert topk_accuracy(scores, test_y, 1) > 0.9


def test_centered_removes_each_videos_mean_and_keeps_differences():
    rng = np.random.default_rng(2)
    items = np.repeat(np.arange(3), 4)
    x = rng.normal(size=(12, 5)).astype(np.float32) + 10 * items[:, None]   # a big offset per video
    fs = FeatureSet(x, np.zeros(12, np.int64), items, ["a", "b", "c"])
    out = centered(fs).features
    for i in range(3):
        np.testing.assert_allclose(out[items == i].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(np.diff(out[items == i], axis=0), np.diff(x[items == i], axis=0), atol=1e-5)
    assert fs.features is x and x[4, 0] > 5                                  # the input is left alone


def test_effective_rank_counts_directions_of_variation():
    rng = np.random.default_rng(3)
    line = rng.normal(size=(200, 1)) * rng.normal(size=(1, 8))
    assert effective_rank(line) < 1.01
    assert effective_rank(rng.normal(size=(5000, 4))) > 3.9
