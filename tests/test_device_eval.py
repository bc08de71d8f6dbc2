"""The GPU study's device data (eval/device_data.py) and evaluations (eval/device_eval.py, device_clips.py), on CPU.

The data is the embedded scenes (the `scenes` extra), written once per module into a temporary folder.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import eval.device_eval as device_eval
from eval.device_clips import crop_clips, frame_store, random_boxes, window_choices
from eval.device_data import (
    MANIFEST,
    device_data_size,
    load_eval_scenes,
    load_natural_videos,
    read_device_manifest,
    train_short_side,
    write_device_data,
)
from eval.device_eval import DeviceEvalSettings, DeviceEvaluations, dry_run_settings
from eval.direction import DIRECTIONS
from smile_synth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
TINY = dataclasses.replace(dry_run_settings(), view_batch=16)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """ROOT/devdata, with the embedded scenes it was decoded from kept beside it in ROOT/embedded."""
    root = tmp_path_factory.mktemp("device")
    return write_device_data(root / "devdata", size=SIZE, embedded=root / "embedded")


# ---- the data ------------------------------------------------------------------------------------

def test_device_data_holds_the_scenes_as_the_cpu_study_decodes_them(data):
    m = read_device_manifest(data)
    assert m["settings"]["size"] == device_data_size(data) == SIZE
    natural, scenes = load_natural_videos(data), load_eval_scenes(data)
    assert len(natural) == len(m["natural"]) >= 1 and len(scenes) == len(m["scenes"]) >= 2
    for clip in natural:
        assert clip.dtype == np.uint8 and clip.shape[1:] == (SIZE, SIZE, 3)
    for s in scenes:
        assert s.test.shape[1:] == (SIZE, SIZE, 3) and len(s.train) == len(s.test)
        assert min(s.train.shape[1:3]) == train_short_side(SIZE) == 74
        assert s.group == f"eval/{s.name}"                   # one fold group per scene
    # natural pretraining and evaluation never share a scene part: different frames of a scene at most
    assert len({s.name for s in scenes}) == len(scenes)


def test_device_examples_are_the_cpu_studys(data):
    # the CPU study's path, independently: its probes' views decoded from the embedded files (eval.features),
    # its folds by scene over the file paths (eval.splits); against the device data and its examples
    from eval.features import ExampleSpec, item_views, video_examples
    from eval.splits import group_folds, source_group
    from smile_synth.video import VideoItem, decode_frames

    ev = DeviceEvaluations(data, "micro", "cpu", TINY)
    speed = ev.task_data(TINY)["speed"]
    scenes = load_eval_scenes(data)
    paths = [data.parent / "embedded" / "eval" / f"{s.name}.mp4" for s in scenes]
    for v, path in enumerate(paths):
        cpu = video_examples("speed", v, VideoItem(path), 8, 1, TINY.windows, 1)
        mine = np.flatnonzero(speed.probe.videos == v)
        assert [e.label for e in cpu] == speed.probe.labels[mine].tolist()
        assert np.array_equal(np.stack([e.clips[0] for e in cpu]), speed.probe.clips[mine, 0])
        views = item_views(VideoItem(path), cpu[:1], ExampleSpec("speed", 8, SIZE, 1, TINY.windows, 1, 1))[0, 0]
        index = speed.probe.subset(mine[:1]).on(speed.view_store)[0, 0]
        assert np.array_equal(speed.view_store.frames[index].numpy(), views)      # the very pixels the CPU probes see
        h, w = speed.train_store.hw[v].tolist()                                    # ... and its fine-tuning decodes
        wide = decode_frames(path, cpu[0].clips[0], short_side=train_short_side(SIZE))
        assert np.array_equal(speed.train_store.frames[index][:, :h, :w].numpy(), wide)
    for seed in range(3):
        cpu_fold = group_folds(np.array([source_group(p) for p in paths]), np.zeros(len(paths), np.int64), 2, seed)
        assert np.array_equal(group_folds(speed.groups, np.zeros(len(paths), np.int64), 2, seed), cpu_fold)


def test_device_data_is_skipped_when_written_and_refused_when_missing(data, tmp_path):
    before = (data / MANIFEST).stat().st_mtime_ns
    assert write_device_data(data, size=SIZE) == data
    assert (data / MANIFEST).stat().st_mtime_ns == before
    with pytest.raises(UserError, match="has no device data.*device_study.sh --prepare"):
        load_eval_scenes(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps(read_device_manifest(data)))
    for damaged in (b"not a zip", (data / "scenes.npz").read_bytes()[:100_000]):     # garbage; cut short
        (tmp_path / "scenes.npz").write_bytes(damaged)
        with pytest.raises(UserError, match="scenes.npz cannot be read"):
            load_eval_scenes(tmp_path)


def test_loading_needs_no_pyav(data):
    # the device has no PyAV: block it, then load the data and import the evaluations' own pieces. (The
    # evaluations also use training.targets/engine, whose imports are training's to keep free of PyAV.)
    code = f"""
import sys
class NoAV:
    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            raise ImportError("PyAV is blocked")
sys.meta_path.insert(0, NoAV())
from eval.device_data import load_eval_scenes, load_natural_videos
load_natural_videos({str(data)!r}), load_eval_scenes({str(data)!r})
import eval.device_clips, eval.encoders, eval.probes, eval.finetune.recipe, eval.finetune.model, eval.study
assert "eval.embedded" not in sys.modules and "av" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ---- the augmentation against an independent reference ------------------------------------------

def test_crop_clips_matches_cv2_resize_of_the_box_and_flips_it():
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (3, 20, 30, 3), np.uint8), rng.integers(0, 256, (2, 24, 16, 3), np.uint8)]
    store = frame_store(videos, torch.device("cpu"))
    index = torch.tensor([[0, 2], [3, 4]])                              # clip 0: video 0; clip 1: video 1
    boxes = torch.tensor([[2.0, 5.0, 12.0, 18.0], [0.0, 0.0, 24.0, 16.0]])    # top, left, h, w (inside each video)
    out = crop_clips(store.frames, index, boxes, torch.tensor([False, True]), 8)
    assert out.shape == (2, 3, 2, 8, 8)
    for c, (video, frames, (top, left, h, w), flip) in enumerate(zip(videos, ([0, 2], [0, 1]), boxes.int().tolist(),
                                                                     (False, True))):
        for t, f in enumerate(frames):
            ref = cv2.resize(video[f, top:top + h, left:left + w].astype(np.float32), (8, 8),
                             interpolation=cv2.INTER_LINEAR) / 255
            ref = ref[:, ::-1] if flip else ref
            got = out[c, :, t].permute(1, 2, 0).numpy()
            np.testing.assert_allclose(got, ref, atol=2e-3)          # the padding never leaks in


def test_normalize_uploads_its_statistics_once_and_standardizes():
    from training.targets import IMAGENET_MEAN, IMAGENET_STD, normalize
    video = torch.rand(2, 3, 4, 8, 8)
    expected = (video - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(normalize(video), expected)
    calls = []
    real = torch.tensor
    with pytest.MonkeyPatch.context() as mp:         # a second call builds no tensor from Python numbers
        mp.setattr(torch, "tensor", lambda *a, **k: calls.append(a) or real(*a, **k))
        torch.testing.assert_close(normalize(video), expected)
    assert calls == []


def test_random_boxes_follow_the_crop_rule():
    hw = torch.tensor([[74, 174], [74, 90], [64, 64]]).repeat(400, 1)
    boxes = random_boxes(hw, (0.5, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.double().unbind(1)
    H, W = hw[:, 0].double(), hw[:, 1].double()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    share = h * w / (H * W)
    assert share.min() > 0.45 and share.max() <= 1.0                    # the scale range, up to rounding
    # a frame far wider than the aspect range cannot take the whole frame: some boxes are the clamped centre
    wide = random_boxes(torch.tensor([[10, 200]]).repeat(50, 1), (0.9, 1.0), (3 / 4, 4 / 3),
                        torch.Generator().manual_seed(1))
    assert torch.equal(wide[0], torch.tensor([0.0, 93.0, 10.0, 13.0]))   # h = H, w = round(10 * 4/3), centred


def test_window_choices_are_every_window_a_random_draw_can_give():
    ex = window_choices(np.array([16, 10]), np.array([2, 3]), frames=8, stride=1)
    assert ex.clips.shape == (2, 9, 8)
    assert [c[0] for c in ex.clips[0]] == list(range(9))                # starts 0..8 of a 16-frame clip
    assert sorted({int(c[0]) for c in ex.clips[1]}) == [0, 1, 2]        # a 10-frame clip has 3, repeated


# ---- the evaluations --------------------------------------------------------------------------

def test_rows_are_the_cpu_studys_and_repeat_for_a_seed(data):
    ev = DeviceEvaluations(data, "micro", "cpu", TINY)
    rows = ev.evaluate(None, seed=0)
    assert [(r["task"], r["probe"]) for r in rows] == \
        [("speed", "finetune"), ("direction", "finetune")] + \
        [(t, p) for t in ("arrow-of-time", "speed", "direction") for p in ("linear", "knn")]
    assert all(set(r) == {"task", "probe", "seed", "top1", "chance"} and r["seed"] == 0 for r in rows)
    chance = {r["task"]: r["chance"] for r in rows}
    assert chance["direction"] == pytest.approx(1 / len(DIRECTIONS))
    assert chance["arrow-of-time"] == pytest.approx(0.5) and chance["speed"] == pytest.approx(1 / 3)
    assert all(0 <= r["top1"] <= 1 for r in rows)
    assert ev.evaluate(None, seed=0) == rows


def test_settings_are_checked_once_with_one_line():
    with pytest.raises(UserError, match="finetune: 'nope' is not one of"):
        DeviceEvalSettings(finetune=("nope",)).validate()
    with pytest.raises(UserError, match="steps 0 must be"):
        DeviceEvalSettings(finetune_steps=0).validate()
    with pytest.raises(UserError, match="direction_clips"):
        DeviceEvalSettings(direction_clips=(4, 0)).validate()


def test_data_of_another_size_is_refused(data):
    with pytest.raises(UserError, match="64 px.*size=112"):
        DeviceEvaluations(data, "tiny", "cpu", TINY)


def coloured_clip(rng, label, frames, size):
    """A stand-in direction clip whose label is its colour (plus noise): learnable in a few steps."""
    colour = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40]])[label]
    noise = rng.integers(-25, 26, (frames, size, size, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def test_fine_tuning_and_probes_learn_a_task_their_clips_carry(data, monkeypatch):
    # clips whose colour is their label: the loop must pair each clip with its own label (through the
    # batch order, repeats, windows and crops) to get far above chance; a misaligned label would not
    monkeypatch.setattr(device_eval, "direction_clip", coloured_clip)
    s = dataclasses.replace(TINY, finetune=("direction",), probe_evaluations=("direction",), finetune_steps=12,
                            finetune_batch=4, repeated_aug=2, lr=0.1, direction_clips=(6, 4))
    rows = DeviceEvaluations(data, "micro", "cpu", s).evaluate(None, seed=1)
    top1 = {r["probe"]: r["top1"] for r in rows}
    assert top1["finetune"] >= 0.9 and top1["linear"] >= 0.9 and top1["knn"] >= 0.9, rows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_device_evaluation_of_one_model_on_cuda(monkeypatch):
    """The default settings on the GPU (with the prepared .devdata): sane rows, and no host sync in the loop."""
    root = REPO / ".devdata"
    if not (root / MANIFEST).is_file():
        pytest.skip("no .devdata: run `bash benchmarks/device_study.sh --prepare` first")
    loop = device_eval.train_steps

    def checked(*args, **kw):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")          # any host<->device sync in a step raises
        try:
            return loop(*args, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    monkeypatch.setattr(device_eval, "train_steps", checked)
    ev = DeviceEvaluations(root, "micro8", "cuda")
    rows = ev.evaluate(None, seed=0)
    print(f"micro8 scratch on {torch.cuda.get_device_name()}: {ev.seconds}; "
          + ", ".join(f"{r['task']}/{r['probe']} {100 * r['top1']:.1f}%" for r in rows))
    assert len(rows) == 8 and all(0 <= r["top1"] <= 1 for r in rows)
