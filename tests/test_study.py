"""The smoke-scale study's parts: trivial loss levels, recipe settings in pretraining, the synthetic
direction task, the micro preset, the protocol's budgets, and a report computed from its numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smile_synth.errors import UserError


# ---- trivial loss levels -------------------------------------------------------------------------

def test_trivial_loss_is_zeros_and_best_constant_over_masked_tokens():
    from training.engine import trivial_loss
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(3, 10, 4, generator=g) * 2 + 5
    mask = torch.rand(3, 10, generator=g) > 0.5
    zero, constant = trivial_loss(targets, mask).tolist()
    masked = targets[mask]
    assert zero == pytest.approx(torch.nn.functional.mse_loss(torch.zeros_like(masked), masked).item(), rel=1e-5)
    best = masked.mean(0, keepdim=True).expand_as(masked)
    assert constant == pytest.approx(torch.nn.functional.mse_loss(best, masked).item(), rel=1e-5)
    assert constant < zero                  # the mean is 5: zeros are far off
    # no other constant does better than the per-channel mean
    other = best + 0.1
    assert torch.nn.functional.mse_loss(other, masked).item() > constant


def test_pretraining_logs_both_trivial_levels(tmp_path):
    from smile_synth.plots import read_log
    from training.config import PretrainConfig
    from training.trainer import pretrain
    out = tmp_path / "run"
    pretrain(PretrainConfig(recipe="black+objects", preset="micro", target="hog", steps=2, batch_size=2, workers=0,
                            log_every=1, progress=False, out=str(out)).validate())
    log = read_log(out / "log.jsonl")
    assert len(log) == 2
    for r in log:
        assert 0 < r["constant_loss"] <= r["zero_loss"] + 1e-9 and r["loss"] > 0


# ---- recipe settings in pretraining (the static control) -----------------------------------------

def test_pretrain_set_routes_recipe_settings_to_the_recipe(tmp_path):
    from click.testing import CliRunner

    from smile_synth.app.cli import cli
    out = tmp_path / "static"
    r = CliRunner().invoke(cli, ["pretrain", "--recipe", "black+objects", "--preset", "micro", "--target", "hog",
                                 "--steps", "1", "--batch-size", "2", "--workers", "0", "--quiet",
                                 "--set", "motion.static=true", "--out", str(out)])
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["recipe_set"] == ["motion.static=true"]
    assert run["summary"]["recipe_set"] == ["motion.static=true"]


def test_the_static_source_renders_still_clips():
    from training.config import PretrainConfig
    from training.data import build_source
    from training.models import student_config
    s = student_config("micro")
    still = PretrainConfig(recipe="black+objects", recipe_set=("motion.static=true",)).validate()
    moving = PretrainConfig(recipe="black+objects").validate()
    a = build_source(still, s)
    b = build_source(moving, s)
    video_a, video_b = np.asarray(a.get(3, 0).video), np.asarray(b.get(3, 0).video)
    assert (video_a == video_a[:1]).all()           # every frame the first
    assert np.array_equal(video_a[0], video_b[0])   # the moving clip's first frame
    assert not (video_b == video_b[:1]).all()


@pytest.mark.parametrize("settings, message", [
    ({"recipe": "black+objects", "recipe_set": ("motion.static=maybe",)}, "motion.static must be true or false"),
    ({"recipe": "black+objects", "recipe_set": ("motion.nope=1",)}, "nope"),
    ({"source": "natural", "recipe_set": ("motion.static=true",)}, "needs clips rendered from a recipe"),
])
def test_bad_recipe_settings_fail_in_one_line(settings, message):
    from training.config import PretrainConfig
    with pytest.raises(UserError, match=message) as e:
        PretrainConfig(**settings).validate()
    assert "\n" not in str(e.value)


def test_default_summary_has_no_recipe_set():
    """Runs without recipe settings keep the summary older runs wrote."""
    from training.config import PretrainConfig
    from training.trainer import summary
    assert "recipe_set" not in summary(PretrainConfig(recipe="black+objects").validate(), 1, 1)


# ---- micro preset, fine-tuning crop -----------------------------------------------------------------

def test_micro_preset_is_cpu_sized():
    from training.models import VideoEncoder, count_parameters, student_config
    s = student_config("micro")
    assert (s.size, s.frames, s.num_tokens) == (64, 8, 64)
    assert 1.5e6 < count_parameters(VideoEncoder(s)) < 4e6


def test_min_crop_scale_is_validated_and_bounds_the_crop():
    from eval.finetune.config import FinetuneConfig
    from eval.finetune.data import ClipAugment
    with pytest.raises(UserError, match="--min-crop-scale 0"):
        FinetuneConfig(data="x", random_init=True, preset="micro", min_crop_scale=0).validate()
    frames = np.zeros((2, 80, 80, 3), np.uint8)
    frames[:, :40, :40] = 255                       # one bright quadrant
    aug = ClipAugment(16, None, flip=False, reprob=0.0, min_crop_scale=1.0)
    for seed in range(5):                            # a full-area crop always keeps the whole frame
        assert torch.equal(aug(frames, seed), aug(frames, seed + 100))


# ---- the synthetic direction task --------------------------------------------------------------

def test_direction_clips_move_the_labelled_way():
    from eval.direction import DIRECTIONS, direction_clip
    for label, (dx, dy) in enumerate(DIRECTIONS.values()):
        clip = direction_clip(np.random.default_rng(label), label, 12, 64).astype(np.float32)
        change = np.abs(clip[1:] - clip[:-1]).sum(-1)           # where the object moved
        assert change.sum() > 0
        # the centroid of the object's changing pixels moves along (dx, dy)
        ys, xs = np.mgrid[0:64, 0:64]
        cx = [(change[t] * xs).sum() / change[t].sum() for t in (0, len(change) - 1)]
        cy = [(change[t] * ys).sum() / change[t].sum() for t in (0, len(change) - 1)]
        move = np.array([cx[1] - cx[0], cy[1] - cy[0]])
        along, across = np.dot(move, (dx, dy)), move[0] * dy - move[1] * dx
        assert along > 5 and abs(across) < along


def test_direction_set_is_deterministic_balanced_and_reused(tmp_path):
    from eval.direction import DIRECTIONS, write_direction_set
    from smile_synth.video import decode_frames
    train, test = write_direction_set(tmp_path / "a", train_per_class=2, test_per_class=1, frames=8)
    again, _ = write_direction_set(tmp_path / "b", train_per_class=2, test_per_class=1, frames=8)
    assert sorted(p.name for p in train.iterdir()) == sorted(DIRECTIONS)
    assert all(len(list((train / d).glob("*.mp4"))) == 2 and len(list((test / d).glob("*.mp4"))) == 1 for d in DIRECTIONS)
    for d in DIRECTIONS:
        assert (train / d / "0000.mp4").read_bytes() == (again / d / "0000.mp4").read_bytes()
    assert decode_frames(train / "up" / "0001.mp4", np.arange(8)).shape == (8, 64, 64, 3)
    stamp = (train / "up" / "0000.mp4").stat().st_mtime_ns
    write_direction_set(tmp_path / "a", train_per_class=2, test_per_class=1, frames=8)      # done: not rewritten
    assert (train / "up" / "0000.mp4").stat().st_mtime_ns == stamp


# ---- the protocol and the report -----------------------------------------------------------------

def test_budgets_are_kept_checkpoints_and_the_run():
    from eval.study import Protocol, budget_weights
    p = Protocol(pretrain_steps=160, budgets=4)
    assert budget_weights(p, None) == [(0.0, None)]
    kept = budget_weights(p, Path("r"))
    assert kept == [(0.25, "r/checkpoint-0000040.pt"), (1.0, "r")]


def test_regimes_cover_the_issue_and_start_with_scratch(tmp_path):
    from eval.study import SCRATCH, regimes
    plan = regimes(tmp_path)
    assert plan[0].name == SCRATCH and plan[0].settings is None
    names = [r.name for r in plan]
    assert names == ["scratch", "static", "moving-black", "moving-noise", "natural", "natural+objects"]
    static = plan[1].settings
    assert static["recipe_set"] == ("motion.static=true",) and static["recipe"] == plan[2].settings["recipe"]
    from training.config import PretrainConfig
    for r in plan[1:]:
        PretrainConfig(**r.settings, target="hog", preset="micro").validate()


def _rows(means: dict[str, float], std: float, task="direction", probe="finetune", chance=0.25):
    rng = np.random.default_rng(0)
    rows = []
    for run, m in means.items():
        noise = rng.standard_normal(3)
        noise = (noise - noise.mean()) / noise.std(ddof=1) * std
        for seed in range(3):
            rows.append({"run": run, "seed": seed, "task": task, "probe": probe, "top1": m + noise[seed],
                         "chance": chance, "budget": 0.0 if run == "scratch" else 1.0,
                         "clips_seen": 0 if run == "scratch" else 100})
    return rows


def test_findings_follow_the_numbers():
    from eval.study_report import findings
    names = ["scratch", "static", "moving-black"]
    losses = {"static": {"loss": 0.5, "zero": 1.0, "constant": 0.6}, "moving-black": {"loss": 0.7, "zero": 1.0, "constant": 0.7}}
    clear = findings(_rows({"scratch": 0.30, "static": 0.31, "moving-black": 0.60}, 0.02), losses, names, {}, "linear")
    assert any("moving-black on direction/finetune" in s and "Under fine-tuning" in s for s in clear), clear
    assert any("2 of 2 regimes ended clearly below" in s and "1 ended clearly below the best constant (static)" in s
               for s in clear), clear
    close = findings(_rows({"scratch": 0.30, "static": 0.31, "moving-black": 0.34}, 0.03), losses, names, {}, "linear")
    assert any("beats both scratch and the static control by more than 2 seed-std on: no column" in s for s in close)
    assert any("not clearly above chance" in s for s in close)


def test_study_report_writes_tables_and_pictures(tmp_path):
    from eval.study import Protocol, Regime
    from eval.study_report import write_study_report
    plan = (Regime("scratch", None, "nothing"), Regime("moving-black", {"source": "synthetic"}, "objects moving"))
    run = tmp_path / "runs" / "mb"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s, "zero_loss": 1.0, "constant_loss": 0.5,
                                                       "lr": 1e-3}) + "\n" for s in range(1, 11)))
    rows = _rows({"scratch": 0.3, "moving-black": 0.5}, 0.01) + _rows({"scratch": 0.3, "moving-black": 0.4}, 0.01, probe="linear")
    rows += [{**r, "budget": 0.5, "clips_seen": 50} for r in rows if r["run"] == "moving-black" and r["probe"] == "linear"]
    runs = {("scratch", s): None for s in range(3)} | {("moving-black", s): run for s in range(3)}
    write_study_report(tmp_path, rows, plan, runs, Protocol(probes=("linear",)), 3, {"minutes": 1.0, "pretrain_minutes": 0.5})
    md = (tmp_path / "report.md").read_text()
    assert "| moving-black |" in md and "## What this shows" in md and "50.0 ± 1.0 (n=3)" in md
    for png in ("report.png", "loss.png", "dose.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["losses"]["moving-black"]["constant"] == pytest.approx(0.5)
    assert [p[0] for p in results["dose_response"]["direction"]["moving-black"]] == [0, 50, 100]


def test_compare_with_no_runs_runs_the_study_with_its_protocol(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import eval.study as study
    from smile_synth.app.cli import cli
    seen = {}

    def fake_study(out, seeds, protocol, progress):
        seen.update(seeds=seeds, protocol=protocol)
        (Path(out) / "report.md").write_text("# report\n")
        return Path(out)
    monkeypatch.setattr(study, "run_study", fake_study)
    r = CliRunner().invoke(cli, ["compare", "--out", str(tmp_path), "--seeds", "2", "--steps", "7",
                                 "--finetune-set", "steps=5"])
    assert r.exit_code == 0, r.output
    assert seen["seeds"] == 2 and seen["protocol"].pretrain_steps == 7
    assert seen["protocol"].finetune_settings["steps"] == 5
    assert seen["protocol"].finetune_settings["lr"] == study.Protocol().finetune_settings["lr"]


# ---- the motion target ------------------------------------------------------------------------------

def test_motion_target_is_standardized_frame_differences_per_tubelet():
    from training.targets import TARGETS, motion_targets, pixel_targets
    assert "motion" in TARGETS
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 4, 32, 32, generator=g)
    t = motion_targets(video, 2, 16)
    assert t.shape == (2, 2 * 2 * 2, 3 * 16 * 16)
    # tubelet 0's difference is frame 1 - frame 0; its tokens equal pixel targets of that difference
    diff = (video[:, :, 1:2] - video[:, :, 0:1])
    assert torch.allclose(t[:, :4], pixel_targets(diff, 1, 16), atol=1e-6)
    still = video[:, :, :1].expand(-1, -1, 4, -1, -1)
    assert motion_targets(still, 2, 16).abs().max() == 0          # no motion, nothing to predict


def test_motion_target_needs_tubelets_of_two_frames():
    from training.config import PretrainConfig
    from training.targets import build_target
    cfg = PretrainConfig(recipe="black+objects", target="motion").validate()
    assert build_target(cfg, (4, 2, 2), 2, 16, torch.device("cpu")).dim == 768
    with pytest.raises(UserError, match="--target motion needs tubelets of 2 or more"):
        build_target(cfg, (8, 2, 2), 1, 16, torch.device("cpu"))
