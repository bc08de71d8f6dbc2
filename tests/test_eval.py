"""eval: probes, tasks, splits by source video, `evaluate`, `compare` and their CLI commands.

Kept small: every encoder here has the 8-frame, 64 px geometry (one real 2-step pretraining run, shared
by the whole module), motion tasks use 2 windows and 1 crop, and all feature caches live in tmp folders.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import assert_user_error, run_cli, write_test_video

import eval.evaluate as E
import eval.features as F
import eval.probes as P
from eval.compare import CompareConfig, compare
from eval.evaluate import EvalConfig, evaluate, probe_metrics
from eval.features import (
    ExampleSpec,
    FeatureSet,
    cached_extract,
    item_views,
    spatial_crops,
)
from eval.probes import knn_scores, probe_scores, topk_accuracy
from eval.splits import check_disjoint, group_folds, source_group
from eval.tasks import (
    SPEEDS,
    arrow_of_time_examples,
    min_length,
    span,
    speed_examples,
    task_examples,
)
from smile_synth.errors import UserError
from smile_synth.video import VideoItem, decode_frames

FAST = {"windows": 2, "crops": 1, "progress": False}   # motion tasks: 2 windows x (forward, reversed), 1 crop


# ----------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 2-step pixel-target pretraining run of the tiny preset at 8 frames x 64 px (read-only)."""
    from training.config import PretrainConfig
    from training.trainer import pretrain

    out = tmp_path_factory.mktemp("eval_run") / "run"
    pretrain(PretrainConfig(source="synthetic", recipe="black+objects", preset="tiny", frames=8, size=64,
                            target="pixel", steps=2, batch_size=2, workers=0, out=str(out), progress=False))
    assert (out / "encoder.pt").is_file() and (out / "run.json").is_file()
    return out


@pytest.fixture(scope="module")
def motion_folder(test_videos) -> Path:
    """A folder of 3 unlabelled 24-frame videos (the session's test_videos)."""
    root = test_videos[0].parent
    assert sorted(p.name for p in root.glob("*.mp4")) == [p.name for p in test_videos]
    return root


def write_flat_video(path: Path, level: int, seed: int, frames: int = 16, size: int = 64) -> Path:
    """A video of grey level `level` with a little per-video texture and per-frame noise."""
    rng = np.random.default_rng(seed)
    texture = rng.normal(0, 6, (size, size, 3))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = size, size, "yuv420p"
        for _ in range(frames):
            img = np.clip(level + texture + rng.normal(0, 3, texture.shape), 0, 255).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """ROOT/dark/*.mp4 and ROOT/bright/*.mp4: 4 videos per class, 16 frames of 64 px."""
    root = tmp_path_factory.mktemp("classes")
    for name, level in (("bright", 215), ("dark", 35)):
        (root / name).mkdir()
        for i in range(4):
            write_flat_video(root / name / f"{name}{i}.mp4", level, seed=100 * level + i)
    return root


# ------------------------------------------------------------------------------------------ probes

def blobs(n_classes: int, per_class: int, dim: int = 8, seed: int = 0, spread: float = 0.3):
    """Well separated Gaussian blobs: class c centred at 10 * e_c."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    centres = 10.0 * np.eye(max(dim, n_classes))[:n_classes, :dim]
    x = centres[y] + rng.normal(0, spread, (len(y), dim))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("probe", ["linear", "knn"])
def test_probes_separate_well_separated_blobs(probe):
    x, y = blobs(3, 30)
    rng = np.random.default_rng(1)
    test = rng.random(len(y)) < 0.3
    groups = np.array([f"g{i}" for i in range(len(y))])
    scores = probe_scores(probe, x[~test], y[~test], x[test], 3, groups[~test], seed=0)
    assert scores.shape == (test.sum(), 3)
    assert topk_accuracy(scores, y[test], 1) == 1.0
    # and a probe that sees shuffled labels cannot do this (the check above can fail)
    shuffled = rng.permutation(y[~test])
    assert topk_accuracy(probe_scores(probe, x[~test], shuffled, x[test], 3, groups[~test]), y[test], 1) < 0.8


def test_knn_scores_only_vote_for_classes_of_neighbours():
    x, y = blobs(4, 10)
    scores = knn_scores(x[y != 3], y[y != 3], x[y == 0], 4, k=5)
    assert np.all(scores[:, 0] > 0) and np.all(scores[:, 1:] == 0)


def test_topk_accuracy_basics_and_ties():
    scores = np.array([[0.1, 0.5, 0.9],
                       [0.7, 0.2, 0.1]])
    assert topk_accuracy(scores, np.array([2, 0]), 1) == 1.0
    assert topk_accuracy(scores, np.array([1, 0]), 1) == 0.5
    assert topk_accuracy(scores, np.array([1, 1]), 2) == 1.0
    assert topk_accuracy(scores, np.array([0, 2]), 2) == 0.0
    assert topk_accuracy(scores, np.array([0, 2]), 3) == 1.0
    # a tie with another class counts against the label
    tied = np.array([[1.0, 1.0, 0.0]])
    assert topk_accuracy(tied, np.array([0]), 1) == 0.0
    assert topk_accuracy(tied, np.array([1]), 1) == 0.0
    assert topk_accuracy(tied, np.array([0]), 2) == 1.0
    assert topk_accuracy(np.zeros((1, 4)), np.array([2]), 3) == 0.0   # all tied: 3 others "beat" it
    assert np.isnan(topk_accuracy(np.zeros((0, 3)), np.zeros(0, np.int64), 1))


def blob_features(n_classes: int, per_class: int, seed: int = 0) -> FeatureSet:
    x, y = blobs(n_classes, per_class, dim=max(8, n_classes), seed=seed)
    return FeatureSet(x, y, np.arange(len(y)), [f"/v/clip{i}.mp4" for i in range(len(y))])


@pytest.mark.parametrize("n_classes, top5_defined", [(2, False), (5, False), (6, True)])
def test_top5_only_with_more_than_five_classes(n_classes, top5_defined):
    m = probe_metrics(blob_features(n_classes, 6), None, "labels", "knn", seed=0, folds=3)
    assert m["top1"] == 1.0
    if top5_defined:
        assert m["top5"] == 1.0
    else:
        assert m["top5"] is None
    assert m["n_test_clips"] == 6 * n_classes and m["chance"] == pytest.approx(1 / n_classes)
    # a separate test set gives the same keys
    m2 = probe_metrics(blob_features(n_classes, 6), blob_features(n_classes, 3, seed=1), "labels", "linear", 0, 3)
    assert m2["top1"] == 1.0 and (m2["top5"] is not None) == top5_defined and m2["n_test_clips"] == 3 * n_classes


# ------------------------------------------------------------------------------------------- tasks

def square_x(frames: np.ndarray) -> np.ndarray:
    """Column centroid of write_test_video's square (red ~255, green/blue low) in each frame."""
    r, g = frames[..., 0].astype(int), frames[..., 1].astype(int)
    mask = (r > 200) & (r - g > 80)
    assert np.all(mask.sum((1, 2)) > 50), mask.sum((1, 2))   # the square is found in every frame
    cols = np.arange(frames.shape[2])
    return (mask.sum(1) * cols).sum(1) / mask.sum((1, 2))


def test_arrow_of_time_labels_follow_the_motion(tmp_path):
    # the square moves right by 3 px per frame (x = 4 + 3t, no wrap within 24 frames of a 96 px video)
    path = write_test_video(tmp_path / "right.mp4", frames=24, width=96, height=64, seed=0)
    examples = arrow_of_time_examples(0, 24, frames=8, stride=2, windows=3)
    assert [e.label for e in examples] == [0, 1] * 3
    for e in examples:
        (clip,) = e.clips
        assert len(clip) == 8 and clip.min() >= 0 and clip.max() < 24
        assert set(np.abs(np.diff(clip))) == {2}
        x = square_x(decode_frames(path, clip, short_side=None))
        steps = np.diff(x)
        if e.label == 0:
            assert np.all(steps > 3), x      # ~6 px per sampled frame, rightwards
        else:
            assert np.all(steps < -3), x
    # the feature extractor sees the frames in the example's order: item_views == crops of the decoded clip
    spec = ExampleSpec("arrow-of-time", 8, 64, 2, windows=3, crops=3)
    views = item_views(VideoItem(path), examples, spec)
    assert views.shape == (6, 3, 8, 64, 64, 3)
    for e, v in zip(examples, views):
        expected = spatial_crops(decode_frames(path, e.clips[0], short_side=64), 64, 3)
        np.testing.assert_array_equal(v, expected)
    # forward and reversed examples of one window are the same frames in opposite order
    np.testing.assert_array_equal(views[0], views[1][:, ::-1])


def test_speed_examples_have_strides_1_2_4_and_one_centre():
    length, frames = 60, 8
    examples = speed_examples(0, length, frames, windows=4)
    assert len(examples) == 4 * len(SPEEDS)
    for i in range(0, len(examples), 3):
        group = examples[i:i + 3]
        assert [e.label for e in group] == [0, 1, 2]
        centres = []
        for e, stride in zip(group, SPEEDS):
            (clip,) = e.clips
            assert len(clip) == frames and clip.min() >= 0 and clip.max() < length
            assert set(np.diff(clip)) == {stride}
            centres.append(clip.mean())
        # the widest clip's centre is a frame; an 8-frame stride-1 clip's centre is half-way between two
        assert max(centres) - min(centres) <= 0.5, centres
    assert task_examples("speed", 0, span(frames, 4) - 1, None, frames, 1, 4, 2) == []   # too short


def test_speed_strides_scale_with_the_stride():
    # `--stride` sets the 1x speed: stride 2 samples at 2, 4 and 8 frames
    examples = task_examples("speed", 0, 200, None, frames=8, stride=2, windows=3, n_clips=2)
    assert len(examples) == 9
    assert [set(np.diff(e.clips[0])) for e in examples[:3]] == [{2}, {4}, {8}]
    assert all(e.clips[0].max() < 200 for e in examples)
    assert min_length("speed", 8, 2) == span(8, 8)
    assert task_examples("speed", 0, span(8, 8) - 1, None, 8, 2, 3, 2) == []
    assert task_examples("speed", 0, span(8, 8), None, 8, 2, 3, 2) != []


def test_example_spec_rejects_counts_below_one():
    for name in ("windows", "clips", "crops", "stride"):
        with pytest.raises(UserError, match=f"--{name} 0 must be >= 1"):
            ExampleSpec(**{"task": "arrow-of-time", "frames": 8, "size": 64, "stride": 2, name: 0})


def test_labels_examples_spread_clips_and_keep_the_label():
    (e,) = task_examples("labels", 3, 100, 7, frames=8, stride=4, windows=8, n_clips=2)
    assert e.item == 3 and e.label == 7 and len(e.clips) == 2
    assert e.clips[0][0] == 0 and e.clips[1][-1] == 99 and set(np.diff(e.clips[0])) == {4}
    (short,) = task_examples("labels", 0, 16, 1, frames=8, stride=4, windows=8, n_clips=2)   # stride drops to 2
    assert all(set(np.diff(c)) == {2} and c.max() < 16 for c in short.clips)


# ------------------------------------------------------------------------------------------ splits

def test_source_group_merges_cuts_and_variants_of_one_recording():
    assert source_group("UCF101/v_Archery_g08_c01.avi") == source_group("UCF101/v_Archery_g08_c02.avi")
    assert source_group("UCF101/v_Archery_g08_c01.avi") == str(Path("UCF101/v_Archery_g08"))
    assert source_group("carphone_distorted.mp4") == source_group("carphone_pristine.mp4") == "carphone"
    assert source_group("UCF101/v_Archery_g08_c01.avi") != source_group("UCF101/v_Archery_g09_c01.avi")
    assert source_group("a/bikes.mp4") != source_group("b/bikes.mp4")
    assert source_group("bikes.mp4") != source_group("city.mp4")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_group_folds_never_split_a_group(seed):
    rng = np.random.default_rng(seed)
    n = 200
    groups = np.array([f"g{i}" for i in rng.integers(0, 23, n)])
    labels = rng.integers(0, 3, n)
    k = int(rng.integers(2, 7))
    fold = group_folds(groups, labels, k, seed)
    assert fold.shape == (n,) and fold.min() == 0 and fold.max() == min(k, len(set(groups))) - 1
    for g in set(groups):
        assert len(set(fold[groups == g])) == 1, g
    for f in range(fold.max() + 1):
        check_disjoint(groups, fold != f, fold == f)
    np.testing.assert_array_equal(fold, group_folds(groups, labels, k, seed))   # reproducible


def test_check_disjoint_catches_a_shared_group():
    groups = np.array(["a", "a", "b", "c"])
    with pytest.raises(AssertionError, match="a"):
        check_disjoint(groups, np.array([True, False, True, False]), np.array([False, True, False, True]))


def test_probe_metrics_folds_keep_each_recording_on_one_side(monkeypatch):
    # 6 recordings x 2 cuts (UCF101 _c01/_c02) x 3 examples; 2 classes by recording
    rng = np.random.default_rng(0)
    paths = [f"/ucf/v_Cls_g{g:02d}_c0{c}.avi" for g in range(6) for c in (1, 2)]
    items = np.repeat(np.arange(len(paths)), 3)
    labels = (items // 2) % 2                                     # recording g has class g % 2
    x = np.concatenate([np.arange(len(items))[:, None], labels[:, None] * 5 + rng.normal(0, 0.1, (len(items), 3))], 1)
    fs = FeatureSet(x.astype(np.float32), labels, items, paths)
    recording = np.array([re.sub(r"_c0\d\.avi$", "", paths[i]) for i in items])   # independent of source_group

    splits, checked = [], []
    real_scores, real_check = P.probe_scores, P.check_disjoint

    def spy_scores(probe, train_x, train_y, test_x, *a, **kw):
        splits.append((train_x[:, 0].round().astype(int), test_x[:, 0].round().astype(int)))
        return real_scores(probe, train_x, train_y, test_x, *a, **kw)

    def spy_check(groups, train, test):
        checked.append((train.copy(), test.copy()))
        return real_check(groups, train, test)

    monkeypatch.setattr(P, "probe_scores", spy_scores)           # probe_metrics lives in eval/probes.py
    monkeypatch.setattr(P, "check_disjoint", spy_check)
    m = probe_metrics(fs, None, "labels", "linear", seed=3, folds=4)
    assert m["split"] == "4-fold by source video" and len(splits) == len(checked) == 4
    tested = np.concatenate([te for _, te in splits])
    assert sorted(tested) == list(range(len(items)))              # every example is tested exactly once
    for (tr, te), (tr_mask, te_mask) in zip(splits, checked):
        assert not set(recording[tr]) & set(recording[te])
        assert set(tr) | set(te) == set(range(len(items)))
        np.testing.assert_array_equal(np.flatnonzero(te_mask), np.sort(te))
    assert m["top1"] == 1.0


@pytest.mark.parametrize("folds", [0, 1])
def test_probe_metrics_needs_two_folds(folds):
    with pytest.raises(UserError, match=f"--folds {folds} must be >= 2"):
        probe_metrics(blob_features(2, 6), None, "labels", "knn", seed=0, folds=folds)


# ------------------------------------------------------------------------------- features and cache

def test_feature_cache_is_keyed_and_reused(tmp_path, motion_folder):
    import torch

    from training.models import VideoEncoder, student_config

    calls = []

    def load():
        calls.append(1)
        torch.manual_seed(0)
        return VideoEncoder(student_config("tiny", frames=8, size=64)).eval()

    items = [VideoItem(p) for p in sorted(motion_folder.glob("*.mp4"))]
    spec = ExampleSpec("arrow-of-time", 8, 64, 2, windows=2, crops=1)
    fs1, hit1 = cached_extract(["test-encoder"], load, items, spec, tmp_path, progress=False)
    fs2, hit2 = cached_extract(["test-encoder"], load, items, spec, tmp_path, progress=False)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert fs1.features.shape == (3 * 2 * 2, 192) and fs1.features.dtype == np.float32
    np.testing.assert_array_equal(fs1.features, fs2.features)
    np.testing.assert_array_equal(fs1.labels, [0, 1] * 6)
    np.testing.assert_array_equal(fs1.items, np.repeat([0, 1, 2], 4))
    # another spec or another encoder id is another cache entry
    _, hit3 = cached_extract(["test-encoder"], load, items, ExampleSpec("arrow-of-time", 8, 64, 2, 3, crops=1),
                             tmp_path, progress=False)
    _, hit4 = cached_extract(["other-encoder"], load, items, spec, tmp_path, progress=False)
    assert (hit3, hit4) == (False, False) and len(calls) == 3


# ---------------------------------------------------------------------------------------- evaluate

def test_evaluate_writes_metrics_skips_bad_videos_and_reuses_the_cache(tmp_path, tiny_run, test_videos, bad_videos,
                                                                      monkeypatch):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in [*test_videos, *bad_videos]) + "\n")
    cfg = EvalConfig(data=str(listing), checkpoint=str(tiny_run), task="arrow-of-time", probe="linear",
                     out=str(tmp_path / "out"), seed=1, cache_dir=str(tmp_path / "cache"), **FAST)

    hits = []
    real_cached = E.cached_extract

    def spy(*a, **kw):
        fs, hit = real_cached(*a, **kw)
        hits.append(hit)
        return fs, hit

    monkeypatch.setattr(E, "cached_extract", spy)
    m = evaluate(cfg)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("task", "probe", "top1", "top5", "n_train_clips", "n_test_clips", "seed", "skipped_videos"):
        assert key in written, key
    assert written["task"] == "arrow-of-time" and written["probe"] == "linear" and written["seed"] == 1
    assert written["top5"] is None and 0.0 <= written["top1"] <= 1.0
    assert written["skipped_videos"] == 3 and set(written["skipped"]) == {str(p) for p in bad_videos}
    assert written["n_test_clips"] == 3 * 2 * 2 and written["n_videos"] == 3
    assert 0 < written["n_train_clips"] < written["n_test_clips"]
    assert written["classes"] == ["forward", "reversed"] and written["chance"] == 0.5
    assert written["encoder"]["frames"] == 8 and written["encoder"]["size"] == 64
    assert written["encoder"]["pretraining"]["steps"] == 2
    assert E.summary_line(m).startswith("arrow-of-time / linear: top-1 ") and "3 videos skipped" in E.summary_line(m)
    assert hits == [False]

    # second run: the features come from the cache, nothing is extracted
    monkeypatch.setattr(F, "extract", lambda *a, **kw: pytest.fail("features extracted again"))
    m2 = evaluate(cfg)
    assert hits == [False, True]
    assert m2["top1"] == m["top1"] and m2["skipped_videos"] == 3


def test_evaluate_with_a_separate_test_list(tmp_path, tiny_run, test_videos):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text(f"{test_videos[0]}\n{test_videos[1]}\n")
    test.write_text(f"{test_videos[2]}\n")
    m = evaluate(EvalConfig(data=str(train), test_data=str(test), checkpoint=str(tiny_run / "encoder.pt"),
                            task="arrow-of-time", probe="knn", cache_dir=str(tmp_path), **FAST))
    assert m["split"] == "given train/test lists"
    assert (m["n_train_clips"], m["n_test_clips"], m["n_videos"]) == (8, 4, 3)


def test_labels_task_end_to_end_on_class_folders(tmp_path, tiny_run, class_folder):
    out = tmp_path / "out"
    r = run_cli("eval", "--checkpoint", tiny_run, "--data", class_folder, "--task", "labels", "--probe", "linear",
                "--out", out, "--folds", "4", "--cache-dir", tmp_path / "cache", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "labels" and m["n_videos"] == 8 and m["n_test_clips"] == 8
    assert m["split"] == "4-fold by source video" and m["top5"] is None and m["skipped_videos"] == 0
    assert m["top1"] >= 0.9, m
    assert "labels / linear: top-1" in r.output and str(out / "metrics.json") in r.output


# ------------------------------------------------------------------------------------- user errors

def test_labels_task_needs_two_classes(tmp_path, tiny_run, test_videos):
    listing = tmp_path / "one_class.txt"
    listing.write_text("".join(f"{p} 0\n" for p in test_videos))
    r = run_cli("eval", "--checkpoint", tiny_run, "--data", listing, "--task", "labels", "--out", tmp_path / "o",
                "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, "1 class", "at least 2")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_labels_task_needs_labels(tmp_path, tiny_run, motion_folder):
    r = run_cli("eval", "--checkpoint", tiny_run, "--data", motion_folder, "--task", "labels", "--out", tmp_path,
                "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, "no label")


def test_checkpoint_of_another_preset(tmp_path, tiny_run, motion_folder):
    r = run_cli("eval", "--checkpoint", tiny_run / "encoder.pt", "--preset", "small", "--data", motion_folder,
                "--task", "arrow-of-time", "--out", tmp_path, "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, "--preset small")


def test_empty_folder(tmp_path, tiny_run):
    (tmp_path / "empty").mkdir()
    r = run_cli("eval", "--checkpoint", tiny_run, "--data", tmp_path / "empty", "--task", "arrow-of-time",
                "--out", tmp_path / "o", "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, str(tmp_path / "empty"))


def test_random_init_needs_a_preset(tmp_path, motion_folder):
    r = run_cli("eval", "--random-init", "--data", motion_folder, "--task", "arrow-of-time", "--out", tmp_path,
                "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, "--random-init", "--preset")
    with pytest.raises(UserError, match="not both or neither"):
        evaluate(EvalConfig(data=str(motion_folder), checkpoint="x.pt", random_init=True, preset="tiny"))


def test_no_usable_video_is_a_user_error(tmp_path, tiny_run, bad_videos):
    listing = tmp_path / "bad.txt"
    listing.write_text("".join(f"{p}\n" for p in bad_videos))
    with pytest.raises(UserError, match="none of its 3 videos could be used"):
        evaluate(EvalConfig(data=str(listing), checkpoint=str(tiny_run), task="arrow-of-time",
                            cache_dir=str(tmp_path), **FAST))


def test_one_source_video_cannot_be_split(tmp_path, tiny_run, test_videos):
    listing = tmp_path / "one.txt"
    listing.write_text(f"{test_videos[0]}\n")
    with pytest.raises(UserError, match="one source video"):
        evaluate(EvalConfig(data=str(listing), checkpoint=str(tiny_run), task="arrow-of-time",
                            cache_dir=str(tmp_path), **FAST))


# ----------------------------------------------------------------------------------------- compare

@pytest.fixture(scope="module")
def compare_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare_cache")


def read_report(out: Path) -> list[dict]:
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_compare_two_runs_and_scratch(tmp_path, tiny_run, motion_folder, compare_cache):
    out = tmp_path / "cmp"
    folder = compare(CompareConfig(runs=(("a", str(tiny_run)), ("b", str(tiny_run / "encoder.pt"))), scratch=True,
                                   data=str(motion_folder), tasks=("arrow-of-time",), probes=("linear", "knn"),
                                   seeds=2, out=str(out), cache_dir=str(compare_cache), windows=2, crops=1,
                                   progress=False))
    assert Path(folder) == out
    rows = read_report(out)
    assert [r["run"] for r in rows] == ["a", "b", "scratch"]
    for r in rows:
        for probe in ("linear", "knn"):
            mean, std = float(r[f"arrow-of-time/{probe} mean"]), float(r[f"arrow-of-time/{probe} std"])
            assert 0.0 <= mean <= 1.0 and std >= 0.0 and int(r[f"arrow-of-time/{probe} n"]) == 2
    assert {r["run"]: r["steps"] for r in rows} == {"a": "2", "b": "2", "scratch": "0"}
    # a and b are the same encoder: same numbers
    assert {k: v for k, v in rows[0].items() if "/" in k} == {k: v for k, v in rows[1].items() if "/" in k}

    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == ["run", "a", "b", "scratch", "chance"]
    assert "arrow-of-time/linear" in table[0] and "arrow-of-time/knn" in table[0]
    assert "nothing (random init)" in md and "(n=2)" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 3 * 2 * 2   # runs x seeds x probes
    assert {(r["run"], r["seed"]) for r in results["rows"]} == {(n, s) for n in ("a", "b", "scratch") for s in (0, 1)}


def test_compare_cli(tmp_path, tiny_run, motion_folder, compare_cache):
    out = tmp_path / "cli"
    r = run_cli("compare", "--run", f"a={tiny_run}", "--scratch", "--data", motion_folder, "--task", "arrow-of-time",
                "--probe", "knn", "--seeds", "2", "--windows", "2", "--crops", "1", "--out", out,
                "--cache-dir", compare_cache, "--quiet")
    assert r.exit_code == 0, r.output
    rows = read_report(out)
    assert [row["run"] for row in rows] == ["a", "scratch"]
    assert [c for c in rows[0] if "/" in c] == ["arrow-of-time/knn mean", "arrow-of-time/knn std",
                                                "arrow-of-time/knn n"]
    assert (out / "report.md").is_file() and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "report.md" in r.output


def test_compare_rejects_zero_windows(tmp_path, tiny_run, motion_folder):
    r = run_cli("compare", "--run", f"a={tiny_run}", "--data", motion_folder, "--task", "arrow-of-time",
                "--windows", "0", "--out", tmp_path, "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 2
    assert_user_error(r, "--windows 0 must be >= 1")


def test_report_tables_with_a_missing_cell_and_an_unknown_checkpoint(tmp_path):
    from eval.report import bar_chart, markdown, saw, write_csv

    rows = [{"run": "ours", "seed": s, "task": "speed", "probe": p, "top1": 0.5 + 0.1 * s, "chance": 1 / 3}
            for s in (0, 1) for p in ("linear", "knn")]
    rows += [{"run": "videomae", "seed": 0, "task": "speed", "probe": "knn", "top1": 0.9, "chance": 1 / 3}]
    info = {"ours": {"source": "synthetic", "recipe": "mixed", "steps": 10, "clips_seen": 80},
            "videomae": {"replicates": 1, "paths": ["vm.pth"]}}       # an external checkpoint: no summary
    write_csv(rows, info, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as f:
        ours, vm = csv.DictReader(f)
    assert (ours["speed/linear mean"], ours["speed/linear std"], ours["speed/linear n"]) == ("0.5500", "0.0707", "2")
    assert (vm["speed/linear mean"], vm["speed/linear n"], vm["speed/knn mean"]) == ("", "", "0.9000")
    assert vm["source"] == "unknown" and vm["steps"] == ""
    assert "random init" not in saw(info["videomae"]) and saw({"steps": 0}) == "nothing (random init)"
    md = markdown(rows, {"videomae": info["videomae"], "ours": info["ours"]}, "t", [])
    assert "| chance | | 33.3 | 33.3 |" in md
    rows_vm_first = rows[-1:] + rows[:-1]   # the first run lacks a column: the chance line still has it
    assert "| chance | | 33.3 | 33.3 |" in markdown(rows_vm_first, info, "t", [])
    bar_chart(rows_vm_first, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_a_test_folder_lacking_a_class_keeps_the_training_class_indices(tmp_path, test_videos):
    """eval --data FOLDER --test-data FOLDER: classes are matched by folder name, so a test folder with only
    class "b" is labelled 1, not renumbered 0 (smile_synth.video.by_class_name)."""
    import shutil

    from eval.evaluate import EvalConfig, encoder_source, split_features

    train, test = tmp_path / "train", tmp_path / "test"
    for i, name in enumerate(("a", "b", "b")):
        (train / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(test_videos[i], train / name / f"v{i}.mp4")
    (test / "b").mkdir(parents=True)
    shutil.copy(test_videos[2], test / "b" / "t.mp4")
    cfg = EvalConfig(data=str(train), test_data=str(test), random_init=True, preset="tiny", clips=1, crops=1,
                     cache_dir="", progress=False).validate()
    eid, s, _, load = encoder_source(None, "tiny", 0)
    fit, held_out = split_features(cfg, eid, s, load)
    assert sorted(set(fit.labels.tolist())) == [0, 1] and held_out.labels.tolist() == [1]
