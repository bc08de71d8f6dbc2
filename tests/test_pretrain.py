"""End to end: `training.trainer.pretrain` on tiny geometries, resume, failure modes, the CLI and DDP."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_user_error, recipe, run_cli

from smile_synth.errors import UserError
from training import engine, trainer
from training.checkpoint import load_weights
from training.config import PretrainConfig
from training.data import BatchStream, RenderSource
from training.masking import MaskSpec, TrajectoryMasker
from training.models import build_student
from training.targets import build_target

FRAMES, SIZE = 4, 32          # token grid (2, 2, 2)


def config(out, **kw) -> PretrainConfig:
    base = dict(recipe="black+objects", preset="tiny", frames=FRAMES, size=SIZE, target="pixel", steps=3,
                batch_size=2, workers=0, out=str(out), progress=False, log_every=1)
    base.update(kw)
    return PretrainConfig(**base).validate()


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def ckpt(out, name="checkpoint.pt") -> dict:
    return torch.load(Path(out) / name, map_location="cpu", weights_only=False)


class Patched:
    """A wrapper of engine.train_step: counts calls, can fail or poison the loss at call n, records args."""

    def __init__(self, raise_at: int | None = None, nan_at: int | None = None):
        self.original = engine.train_step
        self.calls, self.raise_at, self.nan_at = 0, raise_at, nan_at
        self.first_model_state = None
        self.batches = []

    def __call__(self, model, target, masker, batch, cfg, device, amp, gen):
        self.calls += 1
        if self.calls == 1:
            self.first_model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.batches.append(batch)
        if self.calls == self.raise_at:
            raise RuntimeError("simulated crash")
        loss, trivial = self.original(model, target, masker, batch, cfg, device, amp, gen)
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, trivial


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A finished 3-step run (read-only; copy it before writing)."""
    out = tmp_path_factory.mktemp("stage1") / "run"
    info = trainer.pretrain(config(out, steps=3))
    return out, info


# ---- a run's outputs ---------------------------------------------------------------------------------

def test_run_writes_checkpoint_encoder_and_log(stage1):
    out, info = stage1
    assert info["steps"] == 3 and info["clips_seen"] == 6 and info["target"] == "pixel"
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert r["lr"] > 0 and r["clips_per_s"] > 0
    # the lr scales with the global batch: tiny's base lr 1.5e-3 x 2 / 256, no warmup at 3 steps x 5 %
    assert log[0]["lr"] == pytest.approx(1.5e-3 * 2 / 256)
    c = ckpt(out)
    assert c["step"] == 3
    assert c["config"]["preset"] == "tiny" and c["student"]["size"] == SIZE and c["student"]["frames"] == FRAMES
    assert {"model", "optimizer", "scaler"} <= set(c)
    enc = ckpt(out, "encoder.pt")["model"]
    assert enc and not any(k.startswith("encoder.") for k in enc)
    assert all(torch.equal(v, c["model"][f"encoder.{k}"]) for k, v in enc.items())
    assert set(enc) == {k.removeprefix("encoder.") for k in c["model"] if k.startswith("encoder.")}
    model = build_student("tiny", size=SIZE, frames=FRAMES)
    load_weights(model, out / "encoder.pt")
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in enc.items())
    assert json.loads((out / "run.json").read_text())["summary"]["steps"] == 3


def test_training_changes_the_weights(stage1):
    out, _ = stage1
    torch.manual_seed(0)                                   # the trainer seeds with cfg.seed before building
    fresh = build_student("tiny", size=SIZE, frames=FRAMES, target_dim=3 * 2 * 16 * 16).state_dict()
    trained = ckpt(out)["model"]
    changed = [k for k in fresh if not torch.allclose(fresh[k], trained[k])]
    assert len(changed) > len(fresh) // 2


# ---- resume ------------------------------------------------------------------------------------------

def test_resume_equals_a_straight_run(tmp_path, monkeypatch):
    straight, crashed = tmp_path / "A", tmp_path / "B"
    # drop_path: the stochastic depth noise must be reproducible too
    trainer.pretrain(config(straight, steps=6, save_every=3, drop_path=0.2))
    patched = Patched(raise_at=4)
    monkeypatch.setattr(engine, "train_step", patched)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.pretrain(config(crashed, steps=6, save_every=3, drop_path=0.2))
    monkeypatch.undo()
    assert ckpt(crashed)["step"] == 3
    assert not (crashed / "encoder.pt").exists()
    # resume, with DataLoader workers this time: the batches must still be the same
    trainer.pretrain(config(crashed, steps=6, save_every=3, drop_path=0.2, workers=2, resume="auto"))
    a, b = ckpt(straight), ckpt(crashed)
    assert b["step"] == 6
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5), k
    la, lb = read_log(straight), read_log(crashed)
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(la, lb, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5) and ra["lr"] == pytest.approx(rb["lr"])


def test_resume_none_refuses_an_existing_run(stage1, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stage1[0], out)
    with pytest.raises(UserError, match="already holds a run"):
        trainer.pretrain(config(out, steps=5, resume="none"))
    assert ckpt(out)["step"] == 3


@pytest.mark.parametrize("change, needle", [({"preset": "small"}, "preset"), ({"size": 64}, "size"),
                                            ({"batch_size": 3}, "batch_size")])
def test_resume_with_other_settings_is_refused(stage1, tmp_path, change, needle):
    out = tmp_path / "run"
    shutil.copytree(stage1[0], out)
    with pytest.raises(UserError, match=needle):
        trainer.pretrain(config(out, **{"steps": 5, **change}))
    assert ckpt(out)["step"] == 3


def test_resume_from_a_missing_checkpoint_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        trainer.pretrain(config(tmp_path / "run", resume=str(tmp_path / "nowhere.pt")))


# ---- failures ---------------------------------------------------------------------------------------

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(engine, "train_step", Patched(nan_at=5))
    with pytest.raises(UserError, match="nan"):
        trainer.pretrain(config(out, steps=8, save_every=2))
    c = ckpt(out)
    assert c["step"] == 4
    assert all(torch.isfinite(v).all() for v in c["model"].values())
    assert not (out / "encoder.pt").exists()


def test_too_many_bad_videos_is_a_user_error(tmp_path, test_videos, bad_videos):
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(str(p) for p in [*test_videos, bad_videos[0]]) + "\n")
    with pytest.raises(UserError, match="--max-bad-share"):
        trainer.pretrain(config(tmp_path / "run", source="natural", recipe=None, data=str(listing), steps=8,
                                batch_size=8, sampling_rate=2))


def test_only_bad_videos_is_a_user_error(tmp_path, bad_videos):
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(str(p) for p in bad_videos) + "\n")
    with pytest.raises(UserError, match="bad"):
        trainer.pretrain(config(tmp_path / "run", source="natural", recipe=None, data=str(listing), steps=2))


def test_unobtainable_teacher_fails_before_any_work(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        trainer.pretrain(config(tmp_path / "run", target="clip", teacher="ViT-S-16",
                                teacher_pretrained=str(tmp_path / "no_teacher.pt")))
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_epochs_of_rendered_clips_are_epoch_clips_long(tmp_path, training_shards):
    info = trainer.pretrain(config(tmp_path / "a", steps=None, epochs=1.0, epoch_clips=6, batch_size=2))
    assert info["steps"] == 3                                    # 1 epoch x 6 clips / 2
    info = trainer.pretrain(config(tmp_path / "b", recipe=None, data=str(training_shards), steps=None,
                                   epochs=0.5, batch_size=2))
    assert info["steps"] == 3                                    # ceil(0.5 x 12 clips / 2)


# ---- stages and targets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", ["checkpoint.pt", "encoder.pt"])
def test_init_from_stage1(stage1, tmp_path, monkeypatch, weights):
    out1, _ = stage1
    first = ckpt(out1)["model"]
    patched = Patched()
    monkeypatch.setattr(engine, "train_step", patched)
    info = trainer.pretrain(config(tmp_path / "stage2", steps=2, mask="tube", init=str(out1 / weights), seed=5))
    assert info["mask"] == "tube"
    start = patched.first_model_state
    for k, v in first.items():
        if k.startswith("encoder."):
            assert torch.equal(start[k], v), k
    decoder_loaded = all(torch.equal(start[k], v) for k, v in first.items() if k.startswith("decoder."))
    assert decoder_loaded == (weights == "checkpoint.pt")


def test_clip_target_with_a_local_random_teacher(tmp_path, clip_teacher_file):
    out = tmp_path / "run"
    info = trainer.pretrain(config(out, steps=2, target="clip", teacher="ViT-S-16",
                                   teacher_pretrained=str(clip_teacher_file)))
    assert info["target"] == "clip" and info["teacher"] == "ViT-S-16"
    c = ckpt(out)
    assert c["student"]["target_dim"] == 384
    assert c["model"]["decoder.head.weight"].shape == (384, 96)
    assert [r["step"] for r in read_log(out)] == [1, 2]


def test_natural_run_with_overlay_and_trajectory_masks(tmp_path, test_videos, monkeypatch):
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(str(p) for p in test_videos) + "\n")
    patched = Patched()
    monkeypatch.setattr(engine, "train_step", patched)
    info = trainer.pretrain(config(tmp_path / "run", source="natural", recipe=None, data=str(listing),
                                   overlay="overlay", mask="traj", steps=2, sampling_rate=2))
    assert info["source"] == "natural" and info["overlay"] == "overlay" and info["mask"] == "traj"
    assert all(b["coverage"] is not None and b["coverage"].shape == (2, 8) for b in patched.batches)
    assert ckpt(tmp_path / "run")["step"] == 2


def test_multiple_sampling_uses_two_different_masks(monkeypatch):
    cfg = config("unused", multiple_sampling=True, mask="tube", size=64)
    torch.manual_seed(0)
    model = build_student("tiny", size=64, frames=FRAMES)                 # token grid (2, 4, 4)
    target = build_target(cfg, model.cfg.grid, 2, 16, torch.device("cpu"))
    masker = TrajectoryMasker(MaskSpec("tube", 0.5), model.cfg.grid)
    batch = BatchStream(RenderSource(recipe("black+objects"), FRAMES, 64), 3, 2, 16).batch(0)
    seen = {}

    def capture(model, video, target, mask, weight=None):
        seen.update(video=video, target=target, mask=mask)
        return video.sum() * 0

    monkeypatch.setattr(engine, "loss_fn", capture)
    engine.train_step(model, target, masker, batch, cfg, torch.device("cpu"), None, torch.Generator().manual_seed(1))
    video, target, mask = seen["video"], seen["target"], seen["mask"]
    assert video.shape[0] == target.shape[0] == mask.shape[0] == 6
    assert torch.equal(video[:3], video[3:]) and torch.equal(target[:3], target[3:])
    assert (mask[:3] != mask[3:]).any(dim=1).all()
    assert mask.sum(1).tolist() == [16] * 6


# ---- learning ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
    from smile_synth.app.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("two_clips") / "noise"
    generate(GenerateConfig(n=2, out=str(out), recipe=recipe("noise+objects"), seed=3, frames=FRAMES, size=SIZE,
                            workers=1), progress=False)
    return out


def test_loss_goes_down(tmp_path, two_clips):
    out = tmp_path / "run"
    trainer.pretrain(config(out, recipe=None, data=str(two_clips), steps=60, batch_size=4, lr=0.3,
                            mask="tube", mask_ratio=0.5))
    losses = [r["loss"] for r in read_log(out)]
    assert len(losses) == 60 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)


# ---- command line ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--recipe", "black+objects", "--steps", "2", "--mask-ratio", "1.5"], "--mask-ratio"),
    (["--source", "synthetic", "--data", "somewhere", "--recipe", "black+objects", "--steps", "2"], "--data"),
    (["--recipe", "black+objects", "--steps", "0"], "--steps"),
    (["--recipe", "black+objects", "--steps", "2", "--epochs", "1"], "--steps"),
    (["--recipe", "black+objects", "--steps", "2", "--preset", "huge"], "huge"),
    (["--recipe", "black+objects", "--steps", "2", "--set", "no_such_setting=1"], "no_such_setting"),
])
def test_cli_rejects_bad_values(tmp_path, args, needle):
    result = run_cli("pretrain", *args, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, result.output
    assert_user_error(result, needle)
    assert not (tmp_path / "run").exists()


def test_cli_run(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pretrain", "--recipe", "black+objects", "--target", "pixel", "--frames", FRAMES, "--size", SIZE,
                     "--steps", 2, "--batch-size", 2, "--workers", 0, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "encoder.pt" in result.output
    assert ckpt(out)["step"] == 2 and (out / "encoder.pt").is_file()


def test_cli_config_file_and_overrides(tmp_path):
    out = tmp_path / "run"
    settings = tmp_path / "pretrain.yaml"
    settings.write_text(f"recipe: black+objects\ntarget: pixel\nframes: {FRAMES}\nsize: {SIZE}\nsteps: 5\n"
                        f"batch_size: 2\nworkers: 0\nout: {out}\nseed: 3\n")
    result = run_cli("pretrain", "--config", settings, "--steps", 1, "--set", "mask_ratio=0.5", "--quiet")
    assert result.exit_code == 0, result.output
    c = ckpt(out)
    assert c["step"] == 1                                      # the option wins over the file
    assert c["config"]["mask_ratio"] == 0.5 and c["config"]["seed"] == 3 and c["config"]["batch_size"] == 2


def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "smile_synth",
           "pretrain", "--recipe", "black+objects", "--target", "pixel", "--frames", str(FRAMES), "--size", str(SIZE),
           "--steps", "3", "--batch-size", "2", "--workers", "0", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "encoder.pt").is_file()
    c = ckpt(out)
    assert c["step"] == 3 and c["summary"]["clips_seen"] == 3 * 2 * 2
    assert [r["step"] for r in read_log(out)] == [3]            # log_every 10: only the last step, rank 0 only


def test_default_schedule_is_smiles_epochs():
    """`pretrain --source synthetic` needs no --steps/--epochs: DEFAULT_EPOCHS of epoch_clips each."""
    from training.config import DEFAULT_EPOCHS

    cfg = PretrainConfig(source="synthetic", target="pixel").validate()
    assert cfg.steps is None and cfg.schedule_epochs == DEFAULT_EPOCHS
    with pytest.raises(UserError, match="not both"):
        PretrainConfig(steps=3, epochs=1.0).validate()
