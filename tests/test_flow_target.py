"""The `flow` pretraining target: per-token mean exact flow, carried by the batch, weighted in the loss."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli

from smile_synth.errors import UserError
from training import trainer
from training.config import PretrainConfig
from training.data import BatchStream, NaturalSource, RenderSource, Sample
from training.engine import trivial_loss
from training.flow_target import FlowTarget, batch_token_flow, token_flow
from training.models import loss_fn
from training.targets import TARGETS, build_target

FRAMES, SIZE = 4, 32          # token grid (2, 2, 2) with tubelet 2, patch 16


def hand_token_flow(flow, valid, tubelet, patch):
    """The documented reduction, written out with loops: per token (t, h, w) and step k, the mean of
    flow[frame] over the token's valid pixels of frame = t * tubelet + k (none past the last flow)."""
    steps, H, W = valid.shape
    T = steps + 1
    values, weight = [], []
    for t in range(T // tubelet):
        for h in range(H // patch):
            for w in range(W // patch):
                v, wt = [], []
                for k in range(tubelet):
                    frame = t * tubelet + k
                    if frame >= steps:
                        v += [0.0, 0.0]
                        wt += [0.0, 0.0]
                        continue
                    ys, xs = slice(h * patch, (h + 1) * patch), slice(w * patch, (w + 1) * patch)
                    ok = valid[frame, ys, xs]
                    mean = flow[frame, ys, xs][ok].mean(0) if ok.any() else np.zeros(2)
                    v += list(mean)
                    wt += [float(ok.any())] * 2
                values.append(v)
                weight.append(wt)
    return np.array(values, np.float32), np.array(weight, np.float32)


def constructed_flow(seed=0, T=FRAMES, S=SIZE):
    rng = np.random.default_rng(seed)
    flow = rng.normal(0, 3, (T - 1, S, S, 2)).astype(np.float32)
    valid = rng.random((T - 1, S, S)) < 0.6
    valid[0, :16, 16:] = False                     # token (0, 0, 1), step 0: no valid pixel
    return flow, valid


@pytest.mark.parametrize("tubelet", [1, 2, 4])
def test_token_flow_is_the_mean_over_valid_pixels(tubelet):
    flow, valid = constructed_flow()
    values, weight = token_flow(flow, valid, tubelet, 16)
    want_v, want_w = hand_token_flow(flow, valid, tubelet, 16)
    assert values.shape == weight.shape == (FRAMES // tubelet * 4, 2 * tubelet)
    np.testing.assert_allclose(values, want_v, atol=1e-5)
    np.testing.assert_array_equal(weight, want_w)


def test_token_flow_of_a_translation_and_the_clip_end():
    """A constant flow gives that flow on every token; the last step of the last tubelet has weight 0."""
    flow = np.broadcast_to(np.float32([1.5, -0.5]), (FRAMES - 1, SIZE, SIZE, 2)).copy()
    values, weight = token_flow(flow, np.ones(flow.shape[:3], bool), 2, 16)
    assert values.shape == (8, 4)
    last = np.arange(8) >= 4                                      # tokens of the second tubelet (frames 2, 3)
    np.testing.assert_array_equal(weight[:, :2], 1)
    np.testing.assert_array_equal(weight[:, 2:], np.where(last, 0, 1)[:, None].repeat(2, 1))
    np.testing.assert_allclose(values[weight > 0].reshape(-1, 2), [[1.5, -0.5]] * int((weight > 0).sum() // 2))
    assert (values[weight == 0] == 0).all()


def test_batch_flow_is_in_percent_of_the_clip_side():
    flow, valid = constructed_flow()
    samples = [Sample(None, None, flow=flow, flow_valid=valid), Sample(None, None)]
    values, weight = batch_token_flow(samples, 2, 16)
    v, w = token_flow(flow, valid, 2, 16)
    assert values.shape == weight.shape == (2, 8, 4) and values.dtype == torch.float32
    np.testing.assert_allclose(values[0].numpy(), v * 100 / SIZE, rtol=1e-6)
    np.testing.assert_array_equal(weight[0].numpy(), w)
    assert weight[1].sum() == 0                                   # a sample without flow does not count


# ---- the loss and its trivial levels ---------------------------------------------------------------------

class FixedPredictions(torch.nn.Module):
    def __init__(self, pred):
        super().__init__()
        self.pred = pred

    def forward(self, video, mask):
        return self.pred


def test_weighted_loss_counts_only_weighted_masked_entries():
    torch.manual_seed(0)
    B, N, D = 2, 6, 4
    target, weight = torch.randn(B, N, D), (torch.rand(B, N, D) < 0.5).float()
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[:, [1, 3, 4]] = True
    pred = torch.randn(B, 3, D)
    loss = loss_fn(FixedPredictions(pred), None, target, mask, weight)
    err, w = (pred - target[:, [1, 3, 4]]) ** 2, weight[:, [1, 3, 4]]
    assert torch.isclose(loss, (err * w).sum() / w.sum())
    assert torch.isclose(loss_fn(FixedPredictions(pred), None, target, mask, torch.ones_like(target)),
                         loss_fn(FixedPredictions(pred), None, target, mask))      # all weights 1: plain MSE
    nothing = loss_fn(FixedPredictions(pred), None, target, mask, torch.zeros_like(target))
    assert nothing == 0                                            # no counted entry: 0, not NaN


def test_weighted_trivial_levels_are_the_zero_and_best_constant_losses():
    torch.manual_seed(1)
    B, N, D = 3, 10, 4
    target, weight = torch.randn(B, N, D) + 2, (torch.rand(B, N, D) < 0.6).float()
    mask = torch.rand(B, N) < 0.7
    zero, constant = trivial_loss(target, mask, weight)
    w = weight[mask]                                               # (M, D)
    x = target[mask]
    best = (w * x).sum(0) / w.sum(0)                               # per-channel mean of counted entries
    assert torch.isclose(zero, (w * x ** 2).sum() / w.sum())
    assert torch.isclose(constant, (w * (x - best) ** 2).sum() / w.sum(), atol=1e-5)
    # and it is the minimum: any other constant scores more
    assert (w * (x - best - 0.1) ** 2).sum() / w.sum() > constant
    # all weights 1: the unweighted levels
    assert torch.allclose(trivial_loss(target, mask, torch.ones_like(target)), trivial_loss(target, mask), atol=1e-5)


# ---- sources, the batch, the run ---------------------------------------------------------------------------

def test_flow_is_registered_and_reads_the_batch():
    assert "flow" in TARGETS
    cfg = PretrainConfig(recipe="black+objects", steps=1, target="flow").validate()
    target = build_target(cfg, (2, 2, 2), 2, 16, torch.device("cpu"))
    assert isinstance(target, FlowTarget) and target.dim == 4
    batch = {"flow": torch.ones(1, 8, 4), "flow_weight": torch.zeros(1, 8, 4)}
    values, weight = target.of_batch(batch, torch.device("cpu"))
    assert torch.equal(values, batch["flow"]) and torch.equal(weight, batch["flow_weight"])


def test_rendered_batches_carry_the_clips_flow():
    from generators import render_clip

    source = RenderSource("black+objects", FRAMES, SIZE, seed=3, annotations=("flow",))
    batch = BatchStream(source, 2, 2, 16).batch(0)
    assert batch["flow"].shape == batch["flow_weight"].shape == (2, 8, 4)
    clip = render_clip("black+objects", 3, 1, FRAMES, SIZE, annotations=("flow",))
    want, _ = token_flow(clip.flow, clip.flow_valid, 2, 16)
    np.testing.assert_allclose(batch["flow"][1].numpy(), want * 100 / SIZE, rtol=1e-5, atol=1e-6)
    assert torch.equal(batch["video"][1], torch.from_numpy(clip.video))
    plain = BatchStream(RenderSource("black+objects", FRAMES, SIZE, seed=3), 2, 2, 16).batch(0)
    assert "flow" not in plain and torch.equal(plain["video"], batch["video"])   # same clips, no flow


def test_overlay_flow_counts_only_object_pixels(test_videos):
    from smile_synth.video import VideoItem

    source = NaturalSource([VideoItem(str(p), None) for p in test_videos], FRAMES, SIZE, rate=1, overlay="overlay",
                           annotations=("flow",))
    sample = source.get(0, 0)
    assert sample.flow is not None and sample.flow_valid.any()
    np.testing.assert_array_equal(sample.flow_valid, sample.objects[:-1] & sample.flow_valid)
    assert not sample.flow_valid[~sample.objects[:-1]].any()      # real pixels: motion unknown, never valid


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_pretrain_with_the_flow_target_runs_and_logs(tmp_path):
    out = tmp_path / "run"
    cfg = PretrainConfig(recipe="black+objects", preset="tiny", frames=FRAMES, size=SIZE, target="flow", steps=4,
                         batch_size=4, workers=0, out=str(out), progress=False, log_every=1).validate()
    info = trainer.pretrain(cfg)
    assert info["target"] == "flow" and info["steps"] == 4
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for r in log:
        assert np.isfinite(r["loss"]) and r["zero_loss"] >= r["constant_loss"] >= 0
    assert torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["student"]["target_dim"] == 4


@pytest.mark.parametrize(("settings", "needle"), [
    ({"source": "natural"}, "natural videos have none; add --overlay RECIPE"),
    ({"source": "mixed", "recipe": "black+objects"}, "natural videos have none"),
    ({"recipe": "black+objects", "render_device": "cpu"}, "leave --render-device out"),
])
def test_clips_without_known_motion_stop_in_one_line(settings, needle, tmp_path):
    cfg = PretrainConfig(target="flow", steps=1, out=str(tmp_path / "run"), progress=False, **settings).validate()
    with pytest.raises(UserError, match="--target flow needs clips with known motion") as e:
        trainer.pretrain(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_natural_without_objects_is_one_line(tmp_path):
    result = run_cli("pretrain", "--source", "natural", "--target", "flow", "--steps", "1", "--out", str(tmp_path / "r"))
    assert_user_error(result, "--target flow needs clips with known motion", "--overlay RECIPE")


# ---- shards generated with --annotations flow ----------------------------------------------------------

def test_fit_clip_windows_and_rescales_the_flow():
    from training.data import fit_clip

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    flow, valid = constructed_flow(T=6)
    sample = fit_clip(video, None, 4, 64, np.random.default_rng(1), flow, valid)
    t0 = int(np.random.default_rng(1).integers(0, 3))                # the window fit_clip draws
    assert sample.flow.shape == (3, 64, 64, 2) and sample.flow_valid.shape == (3, 64, 64)
    np.testing.assert_allclose(sample.flow[:, ::2, ::2], 2 * flow[t0:t0 + 3])    # nearest pixel, vectors x 2
    np.testing.assert_array_equal(sample.flow_valid[:, 1::2, 1::2], valid[t0:t0 + 3])


def test_pretrain_on_flow_shards_and_plain_shards_stop_in_one_line(tmp_path, training_shards):
    from smile_synth.app.generate import GenerateConfig, generate
    from conftest import recipe

    plain = PretrainConfig(target="flow", data=str(training_shards), steps=1, out=str(tmp_path / "r0"),
                           progress=False).validate()
    with pytest.raises(UserError, match="carry no flow; generate them with `smile-synth generate --annotations flow`"):
        trainer.pretrain(plain)
    shards = tmp_path / "flow-shards"
    generate(GenerateConfig(n=4, out=str(shards), recipe=recipe("black+objects"), frames=FRAMES, size=SIZE, workers=1,
                            annotations=("flow",)), progress=False)
    out = tmp_path / "run"
    cfg = PretrainConfig(data=str(shards), preset="tiny", frames=FRAMES, size=SIZE, target="flow", steps=2,
                         batch_size=2, workers=0, out=str(out), progress=False, log_every=1).validate()
    assert trainer.pretrain(cfg)["steps"] == 2
    assert all(np.isfinite(r["loss"]) for r in read_log(out))


def test_train_step_feeds_the_batch_flow_and_weights_to_the_loss(monkeypatch):
    from training import engine
    from training.masking import MaskSpec, TrajectoryMasker
    from training.models import build_student

    cfg = PretrainConfig(recipe="black+objects", target="flow", frames=FRAMES, size=SIZE, steps=1,
                         multiple_sampling=True).validate()
    model = build_student("tiny", size=SIZE, frames=FRAMES, target_dim=4)
    target = build_target(cfg, model.cfg.grid, 2, 16, torch.device("cpu"))
    batch = BatchStream(RenderSource("black+objects", FRAMES, SIZE, annotations=("flow",)), 3, 2, 16).batch(0)
    seen = {}

    def capture(model, video, target, mask, weight=None):
        seen.update(target=target, mask=mask, weight=weight)
        return video.sum() * 0

    monkeypatch.setattr(engine, "loss_fn", capture)
    _, trivial = engine.train_step(model, target, TrajectoryMasker(MaskSpec("tube", 0.5), model.cfg.grid), batch, cfg,
                                   torch.device("cpu"), None, torch.Generator().manual_seed(1))
    assert torch.equal(seen["target"], torch.cat([batch["flow"]] * 2))          # two samplings of the same clips
    assert torch.equal(seen["weight"], torch.cat([batch["flow_weight"]] * 2))
    assert torch.allclose(trivial, trivial_loss(seen["target"], seen["mask"], seen["weight"]))
