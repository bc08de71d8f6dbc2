"""The torch rasteriser (generators.torch_render) against the numpy one, and `pretrain --render-device`.

Agreement: the same plans painted by both backends give nearly the same pixels (PSNR), masks (IoU) and
boxes; determinism: a clip does not depend on its batch; training: device-painted runs are
resumable and their trajectory masks are those the numpy backend's masks give. CUDA versions are
marked `gpu` and skipped without CUDA.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CHEAP, assert_user_error, recipe, run_cli

from generators import overlay_clip, render_clip
from generators.torch_render import overlay_batch, plan_batch, rasterise, render_batch
from smile_synth.errors import UserError
from training import engine, trainer
from training.config import PretrainConfig
from training.masking import MaskSpec, TrajectoryMasker, object_token_coverage

FRAMES, SIZE, CLIPS = 4, 64, 8
STATIC = "motion.static=true"
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")])
DEVICES = ["cpu", CUDA]
RECIPES = [(name, static) for name in ("black+objects", "noise+objects", "mixed") for static in (False, True)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def assert_agree(out, clips) -> None:
    """The device batch `out` against numpy Clips: PSNR, per-object mask IoU and boxes (1 px)."""
    masks, boxes = out.masks().cpu().numpy(), out.boxes.cpu().numpy()
    scores = [psnr(out.video[b].cpu().numpy(), c.video) for b, c in enumerate(clips)]
    assert np.mean(scores) >= 30 and min(scores) >= 25, scores
    for b, c in enumerate(clips):
        assert int(out.counts[b]) == c.num_objects
        for k in range(c.num_objects):
            union = (masks[b, k] | c.masks[k]).sum()
            if union:
                assert (masks[b, k] & c.masks[k]).sum() / union >= 0.9, (b, k)
            np.testing.assert_array_equal(np.isnan(boxes[b, k, :, 0]), np.isnan(c.boxes[k, :, 0]))
            seen = ~np.isnan(c.boxes[k, :, 0])
            assert np.all(np.abs(boxes[b, k][seen] - c.boxes[k][seen]) <= 1), (b, k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "static"), RECIPES)
def test_backends_agree(name, static, device):
    r = recipe(name, *CHEAP, *([STATIC] if static else []))
    out = render_batch(r, 3, range(CLIPS), FRAMES, SIZE, device)
    assert out.video.shape == (CLIPS, FRAMES, SIZE, SIZE, 3) and out.video.dtype == torch.uint8
    assert out.video.device.type == device
    clips = [render_clip(r, 3, i, FRAMES, SIZE) for i in range(CLIPS)]
    assert_agree(out, clips)
    if static:   # every frame is frame 0
        assert torch.equal(out.video, out.video[:, :1].expand_as(out.video))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("static", [False, True])
def test_overlay_agrees_and_leaves_the_frames(static, device):
    r = recipe("overlay", *([STATIC] if static else []))
    frames = np.random.default_rng(0).integers(0, 256, (CLIPS, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    given = torch.from_numpy(frames).to(device)
    out = overlay_batch(given, r, 3, list(range(CLIPS)))
    assert torch.equal(given.cpu(), torch.from_numpy(frames))
    assert_agree(out, [overlay_clip(frames[i], r, 3, i) for i in range(CLIPS)])


@pytest.mark.parametrize("device", DEVICES)
def test_a_clip_does_not_depend_on_its_batch(device):
    r = recipe("mixed", *CHEAP)
    a = render_batch(r, 1, [3, 7], FRAMES, SIZE, device)
    again = render_batch(r, 1, [3, 7], FRAMES, SIZE, device)
    alone = render_batch(r, 1, [7], FRAMES, SIZE, device)
    for x, y in [(a.video, again.video), (a.owner, again.owner)]:
        assert torch.equal(x, y)
    assert torch.equal(a.video[1], alone.video[0]) and torch.equal(a.owner[1], alone.owner[0])
    k = int(alone.counts[0])
    assert torch.equal(a.boxes[1, :k].nan_to_num(-1), alone.boxes[0, :k].nan_to_num(-1))


def test_painting_in_passes_changes_nothing():
    plan = plan_batch(recipe("mixed", *CHEAP), 2, range(5), FRAMES, SIZE)
    whole, passes = rasterise(plan), rasterise(plan, pixels_per_pass=2 * FRAMES * SIZE * SIZE)   # 3 passes
    assert torch.equal(whole.video, passes.video) and torch.equal(whole.owner, passes.owner)
    assert torch.equal(whole.boxes.nan_to_num(-1), passes.boxes.nan_to_num(-1))


# ---- training ---------------------------------------------------------------------------------------

def config(out, **kw) -> PretrainConfig:
    base = dict(recipe="black+objects", preset="tiny", frames=FRAMES, size=32, target="pixel", steps=3,
                batch_size=2, workers=0, out=str(out), progress=False, log_every=1, render_device="cpu")
    base.update(kw)
    return PretrainConfig(**base).validate()


def test_three_step_run_on_the_render_device(tmp_path):
    r = run_cli("pretrain", "--recipe", "black+objects", "--preset", "tiny", "--frames", str(FRAMES), "--size", "32",
                "--target", "pixel", "--steps", "3", "--batch-size", "2", "--workers", "0", "--log-every", "1",
                "--render-device", "cpu", "--out", str(tmp_path / "run"), "--quiet")
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and all(0 <= e["data_wait"] <= 1 for e in log)
    assert (tmp_path / "run" / "encoder.pt").is_file()


def test_resume_on_the_render_device_equals_a_straight_run(tmp_path, monkeypatch):
    straight, crashed = tmp_path / "A", tmp_path / "B"
    trainer.pretrain(config(straight, steps=4, save_every=2))
    calls = {"n": 0}
    original = engine.train_step

    def crash_at_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(*args)
    monkeypatch.setattr(engine, "train_step", crash_at_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.pretrain(config(crashed, steps=4, save_every=2))
    monkeypatch.undo()
    trainer.pretrain(config(crashed, steps=4, save_every=2, workers=1, resume="auto"))
    a = torch.load(straight / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(crashed / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert b["step"] == 4
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5), k


def test_trajectory_masks_equal_the_numpy_backends(tmp_path, monkeypatch):
    """The batches a --render-device run trains on carry the coverage of the numpy clips' masks, so
    their trajectory masks are the same."""
    seen = []
    original = engine.train_step

    def record(model, target, masker, batch, cfg, device, amp, gen):
        seen.append((batch["step"], batch["video"].clone(), batch["coverage"].clone()))
        return original(model, target, masker, batch, cfg, device, amp, gen)
    monkeypatch.setattr(engine, "train_step", record)
    cfg = config(tmp_path / "run", recipe="mixed", recipe_set=tuple(CHEAP), mask="traj", steps=2, batch_size=4)
    trainer.pretrain(cfg)
    masker = TrajectoryMasker(MaskSpec("traj", cfg.mask_ratio, cfg.traj_unmask_ratio, cfg.object_threshold), (2, 2, 2))
    r = recipe("mixed", *CHEAP)
    for step, video, coverage in seen:
        clips = [render_clip(r, cfg.seed, step * 4 + j, FRAMES, 32) for j in range(4)]
        union = torch.from_numpy(np.stack([c.masks.any(axis=0) for c in clips]))
        numpy_coverage = object_token_coverage(union, 2, 16)
        assert psnr(video.numpy(), np.stack([c.video for c in clips])) >= 30
        assert torch.equal(coverage >= cfg.object_threshold, numpy_coverage >= cfg.object_threshold)
        gen = lambda: torch.Generator().manual_seed(engine.step_seed(cfg.seed, step, 0))  # noqa: E731
        assert torch.equal(masker(coverage, 4, gen()), masker(numpy_coverage, 4, gen()))


def test_natural_clips_get_their_overlay_painted_on_the_device(tmp_path, test_videos):
    """--overlay on natural clips with --render-device: the numpy overlay's pixels and object tokens."""
    from training.data import BatchStream, NaturalSource
    from training.device_batches import realise
    from training.natural import natural_videos

    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(str(p) for p in test_videos) + "\n")
    batches = []
    for on_device in (True, False):
        source = NaturalSource(natural_videos(str(listing)), FRAMES, 32, 2, recipe("overlay"), seed=0, on_device=on_device)
        batches.append(BatchStream(source, 3, 2, 16).batch(1))
    painted, host = realise(batches[0], torch.device("cpu"), 2, 16), batches[1]
    assert psnr(painted["video"].numpy(), host["video"].numpy()) >= 30
    assert torch.equal(painted["coverage"] >= 0.25, host["coverage"] >= 0.25)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_three_step_run_painted_on_cuda(tmp_path):
    info = trainer.pretrain(config(tmp_path / "run", render_device="cuda"))
    assert info["steps"] == 3


def test_bad_render_devices_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a torch device"):
        config(tmp_path, render_device="warp-drive")
    with pytest.raises(UserError, match="from a recipe"):
        config(tmp_path, recipe=None, data=str(tmp_path), render_device="cpu")
    if not torch.cuda.is_available():
        r = run_cli("pretrain", "--render-device", "cuda", "--out", str(tmp_path / "x"))
        assert_user_error(r, "--render-device cuda", "no CUDA device")
