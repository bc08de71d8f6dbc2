"""The GPU study (issue 21): clips drawn from device-resident pools, and `compare --protocol gpu`.

The pools are checked against the renderer they stand in for (render_batch of the same clip indices),
the natural sampler against training.natural's rules, the pilot's rules against hand-made numbers,
and the whole study end to end with --dry-run on CPU.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_user_error, recipe, run_cli, run_python
from generators.torch_render import render_batch
from training import device_pool
from training.device_pool import NaturalBatches, PoolBatches, PoolSpec, crop_grids, draw_pools, window_starts

FRAMES, SIZE = 8, 64


def pool_of(name: str, clips: int = 12, seed: int = 3, overlay: bool = False):
    (pool,) = draw_pools([PoolSpec(recipe(name), seed, clips, FRAMES, SIZE, overlay)], workers=0)
    return pool


@pytest.mark.parametrize("name", ["black+objects", "noise+objects"])
def test_pool_rows_paint_the_clips_render_batch_paints(name):
    """Row i of a device-resident pool is clip i of (recipe, seed): the same pixels and object owners as
    render_batch of those indices, up to the float rounding of the pool's wider sprite canvas."""
    pool = pool_of(name).to("cpu")
    rows = np.array([5, 11, 5, 0])
    from generators.torch_render import rasterise
    got = rasterise(pool.take(rows), "cpu")
    want = render_batch(recipe(name), 3, rows, FRAMES, SIZE, "cpu")
    assert (got.video.int() - want.video.int()).abs().max() <= 2
    assert (got.owner == want.owner).float().mean() > 0.999
    assert torch.equal(got.video[0], got.video[2])                 # a repeated row is the same clip


def test_pool_batches_are_a_function_of_the_step():
    pool = pool_of("black+objects").to("cpu")
    batches = PoolBatches(pool, 6, tubelet=2, patch=8, seed=1)
    a, again, other = batches.batch(4), batches.batch(4), batches.batch(5)
    assert a["video"].shape == (6, FRAMES, SIZE, SIZE, 3) and a["video"].dtype == torch.uint8
    assert a["coverage"].shape == (6, (FRAMES // 2) * (SIZE // 8) ** 2)
    assert torch.equal(a["video"], again["video"]) and not torch.equal(a["video"], other["video"])
    assert a["coverage"].max() > 0                                 # the objects are there for trajectory masks
    first = next(iter(PoolBatches(pool, 6, 2, 8, seed=1, start=4)))
    assert first["step"] == 4 and torch.equal(first["video"], a["video"])


def test_windows_stay_inside_their_videos_and_lower_the_stride_to_fit():
    lengths = np.array([8, 20, 400])
    video, start, rate = window_starts(lengths, 8, 4, np.random.default_rng(0), 5000)
    last = start + 7 * rate
    assert (start >= 0).all() and (last < lengths[video]).all()
    assert set(rate[video == 0]) == {1} and set(rate[video == 1]) == {2} and set(rate[video == 2]) == {4}
    share = np.bincount(video, minlength=3) / len(video)
    assert share[2] > 0.9                                          # drawn in proportion to length


def test_crop_grids_at_full_scale_are_the_identity(monkeypatch):
    """With the only crop scale 1 the crop is the whole frame: grid_sample must return it unchanged."""
    monkeypatch.setattr(device_pool, "CROP_SCALES", (1.0,))
    frames = torch.randint(0, 256, (3, 6, 16, 16)).float()
    grid = crop_grids(3, 16, 16, np.random.default_rng(0), torch.device("cpu"))
    out = torch.nn.functional.grid_sample(frames, grid, mode="bilinear", align_corners=False)
    assert torch.allclose(out, frames, atol=1e-3)


def test_crop_grids_sample_inside_the_crop():
    """Each output pixel reads from inside its clip's crop box, whose sides are CROP_SCALES of the source."""
    grid = crop_grids(200, 32, 16, np.random.default_rng(1), torch.device("cpu"))
    px = (grid + 1) * 32 / 2                                       # back to source px (align_corners=False)
    assert px.min() >= 0 and px.max() <= 32
    sides = (px[:, 0, -1, 0] - px[:, 0, 0, 0]) * 16 / 15           # centre-to-centre span -> crop side
    allowed = [32 * s for s in device_pool.CROP_SCALES]
    assert all(min(abs(s - a) for a in allowed) < 1.0 for s in sides.tolist())


def test_natural_batches_overlay_objects_on_held_clips():
    videos = [np.full((n, 32, 32, 3), v, np.uint8) for n, v in ((30, 50), (12, 200))]
    (held,) = draw_pools([PoolSpec(recipe("overlay"), 0, 8, FRAMES, 32, overlay=True)], workers=0)
    batches = NaturalBatches(videos, held.to("cpu"), 5, FRAMES, 32, 4, 2, 8, 0, torch.device("cpu"))
    b = batches.batch(0)
    assert b["video"].shape == (5, FRAMES, 32, 32, 3) and b["coverage"].shape == (5, 4 * 16)
    assert (b["coverage"] == 0).any() and (b["coverage"] > 0).any()
    plain = NaturalBatches(videos, None, 5, FRAMES, 32, 4, 2, 8, 0, torch.device("cpu")).batch(0)
    assert plain["coverage"] is None
    assert set(plain["video"].unique().tolist()) <= {50, 200}      # flat videos stay flat through the crop


# ---- the pilot's rules ---------------------------------------------------------------------------

def test_pilot_rules_pick_as_declared():
    from eval.gpu_study import MAX_CLIPS, MIN_CLIPS, fitted_clips, pick_preset, scratch_above_chance

    measured = {"micro8": {"clips_per_s": 1e5, "ratio": 0.8}, "tiny": {"clips_per_s": 5e4, "ratio": 0.6}}
    assert pick_preset(measured, {"micro8": True, "tiny": True}) == "tiny"      # the lower loss ratio among fits
    assert pick_preset(measured, {"micro8": True, "tiny": False}) == "micro8"
    assert pick_preset(measured, {"micro8": False, "tiny": False}) == "micro8"  # none fits: the fastest
    assert fitted_clips(1e5, 480, 8, 1000) == (6_000_000, True)     # 1e5 clips/s x 480 s / 8 runs
    assert fitted_clips(1e6, 400, 8, 1000) == (MAX_CLIPS, True)
    assert fitted_clips(1e4, 400, 8, 1000) == (MIN_CLIPS, False)
    row = lambda run, seed, top1: {"run": run, "seed": seed, "task": "speed", "probe": "finetune", "top1": top1,
                                   "chance": 1 / 3}
    assert scratch_above_chance([row("scratch", 0, 0.60), row("scratch", 1, 0.62)]) == ["speed/finetune"]
    assert scratch_above_chance([row("scratch", 0, 0.30), row("scratch", 1, 0.62)]) == []
    assert scratch_above_chance([row("moving-black", 0, 0.9), row("moving-black", 1, 0.9)]) == []


# ---- the command ---------------------------------------------------------------------------------

def test_gpu_options_need_the_gpu_protocol(tmp_path):
    assert_user_error(run_cli("compare", "--out", tmp_path, "--pilot"), "--pilot", "--protocol gpu")
    assert_user_error(run_cli("compare", "--out", tmp_path, "--protocol", "gpu", "--run", f"a={tmp_path}"),
                      "--protocol gpu", "--run")
    assert_user_error(run_cli("compare", "--out", tmp_path, "--protocol", "gpu", "--device", "cpu",
                              "--data-dir", tmp_path / "missing"), "--data-dir", "no such folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path):
    assert_user_error(run_cli("compare", "--out", tmp_path, "--protocol", "gpu", "--device", "cuda"),
                      "--device cuda", "no CUDA device")


def test_the_device_path_needs_no_pyav(tmp_path):
    """The device has no PyAV: the CLI, the config check and a pool-fed pretraining run must not import it."""
    code = f"""
import sys
sys.modules["av"] = None
from smile_synth.app import cli
from eval.compare import CompareConfig
from eval import gpu_study, device_eval
from generators import get_recipe
from training.config import PretrainConfig
from training.device_pool import PoolBatches, PoolSpec, draw_pools
from training.trainer import pretrain_on
CompareConfig(protocol="gpu", device="cpu").validate()
(pool,) = draw_pools([PoolSpec(get_recipe("black+objects"), 0, 8, 8, 64)], 0)
cfg = PretrainConfig(source="synthetic", recipe="black+objects", preset="micro8", target="hog", steps=2, batch_size=2,
                     workers=0, progress=False, out={str(tmp_path / "run")!r}).validate()
pretrain_on(cfg, "cpu", lambda s, start: PoolBatches(pool.to("cpu"), 2, s.tubelet, s.patch, 0, start))
print("no av:", not any(m == "av" or m.startswith("av.") for m in sys.modules if sys.modules[m] is not None))
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no av: True" in r.stdout and (tmp_path / "run" / "encoder.pt").is_file()


@pytest.fixture(scope="module")
def device_data(tmp_path_factory) -> Path:
    from eval.device_data import write_device_data
    return Path(write_device_data(tmp_path_factory.mktemp("devdata"), size=SIZE))


def test_dry_run_writes_the_report_end_to_end(device_data, tmp_path, monkeypatch):
    """With no time left after seed 0, every later replicate is left out and named: the budget costs
    replicates, never the report (and the device evaluations, the slow part on CPU, run 5 times, not 10)."""
    from functools import partial

    from eval import gpu_study
    monkeypatch.setattr(gpu_study, "GpuProtocol", partial(gpu_study.GpuProtocol, budget_minutes=1e-6))
    out = tmp_path / "study"
    r = run_cli("compare", "--out", out, "--protocol", "gpu", "--dry-run", "--device", "cpu", "--data-dir", device_data,
                "--seeds", "2")
    assert r.exit_code == 0, r.output
    top = [p.name for p in out.iterdir() if p.is_file()]
    assert sorted(top) == ["loss.png", "report.md", "report.png", "results.json"] and len(top) <= 8
    results = json.loads((out / "results.json").read_text())
    runs = {(row["run"], row["seed"]) for row in results["rows"]}
    regimes = ("scratch", "static", "moving-black", "moving-noise", "natural+objects")
    assert runs == {(name, 0) for name in regimes}
    probes = {(row["task"], row["probe"]) for row in results["rows"]}
    assert {("speed", "finetune"), ("direction", "finetune"), ("arrow-of-time", "linear")} <= probes
    assert all(0 <= row["top1"] <= 1 and 0 < row["chance"] < 1 for row in results["rows"])
    checks = results["loss_check"]
    assert len(checks) == 4 and all({"loss", "constant", "left_constant"} <= set(c) for c in checks)
    report = (out / "report.md").read_text()
    assert "| regime | seed | loss | best constant |" in report
    assert "Runs whose loss did not leave its best-constant level" in report
    assert "Left out because they would not have fitted the budget: " + ", ".join(
        f"{name} seed 1" for name in regimes) in report
    for name in regimes[1:]:
        run = out / "runs" / f"{name}-seed0"
        assert (run / "encoder.pt").is_file() and (run / "log.jsonl").is_file()


class LadderEvaluations:
    """Stands in for eval.device_eval.DeviceEvaluations in the pilot test: scratch leaves chance on speed
    from 4 fine-tuning steps on (a little seed noise), nothing else does."""

    def __init__(self, root, preset, device, settings):
        self.preset, self.settings = preset, settings

    def evaluate(self, weights, seed, settings=None):
        above = weights is None and (settings or self.settings).finetune_steps >= 4
        return [{"task": "speed", "probe": "finetune", "seed": seed, "top1": 1 / 3 + (0.3 + 0.01 * seed) * above,
                 "chance": 1 / 3},
                {"task": "speed", "probe": "linear", "seed": seed, "top1": 0.4, "chance": 1 / 3}]


def test_pilot_applies_its_rules_and_writes_its_picks(device_data, tmp_path, monkeypatch):
    from eval import device_eval
    from eval.gpu_study import FINETUNE_STEPS, GpuProtocol, MIN_CLIPS, dry_run, run_pilot

    monkeypatch.setattr(device_eval, "DeviceEvaluations", LadderEvaluations)
    protocol = replace(dry_run(GpuProtocol()), ladder=(1.0, 2.0, 4.0), seeds=2)     # dry-run steps: 2, 4, 8
    out = run_pilot(tmp_path / "pilot", protocol, "cpu", str(device_data), workers=0, progress=False)
    pilot = json.loads((out / "pilot.json").read_text())
    assert pilot["picked"][FINETUNE_STEPS] == 4 and pilot["flags"]["finetune_budget_qualified"]
    assert [step["finetune_steps"] for step in pilot["ladder"]] == [2, 4]          # climbed no further than needed
    assert set(pilot["measured"]) == {"micro8", "micro"} and pilot["picked"]["preset"] in pilot["measured"]
    assert pilot["picked"]["clips_per_run"] == MIN_CLIPS                         # CPU throughput: nothing fits
    assert not pilot["flags"]["min_clips_fit"]
    text = (out / "pilot.md").read_text()
    assert "## Picked" in text and "FLAG: even" in text and (out / "loss.png").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pool_on_cuda_paints_what_the_cpu_paints():
    pool = pool_of("noise+objects")
    rows = np.array([1, 7, 7, 3])
    from generators.torch_render import rasterise
    on_gpu = rasterise(pool.to("cuda").take(rows), "cuda")
    on_cpu = rasterise(pool.to("cpu").take(rows), "cpu")
    assert (on_gpu.video.cpu().int() - on_cpu.video.int()).abs().max() <= 2
    assert (on_gpu.owner.cpu() == on_cpu.owner).float().mean() > 0.999
