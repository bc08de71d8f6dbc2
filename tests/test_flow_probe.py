"""The `flow` evaluation task: held-out glyph clips with exact flow, a ridge probe of each token's mean flow."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import assert_user_error, run_cli

from eval.flow_probe import (
    FlowSetSpec,
    flow_clip,
    flow_metrics,
    flow_set,
    probe_features,
    set_targets,
    token_targets,
)
from training.models import student_config

FRAMES, SIZE = 6, 64


def test_the_set_is_a_pure_function_of_the_seed_and_streams_are_disjoint():
    a_video, a_flow = flow_set(3, FRAMES, SIZE, seed=4, stream=0)
    b_video, b_flow = flow_set(3, FRAMES, SIZE, seed=4, stream=0)
    assert np.array_equal(a_video, b_video) and np.array_equal(a_flow, b_flow)
    test_video, _ = flow_set(3, FRAMES, SIZE, seed=4, stream=1)
    other_seed, _ = flow_set(3, FRAMES, SIZE, seed=5, stream=0)
    for i in range(3):
        assert not np.array_equal(a_video[i], test_video[i]) and not np.array_equal(a_video[i], other_seed[i])
    assert a_video.shape == (3, FRAMES, SIZE, SIZE, 3) and a_video.dtype == np.uint8
    assert a_flow.shape == (3, FRAMES - 1, SIZE, SIZE, 2) and a_flow.dtype == np.float32


def test_the_flow_is_the_glyphs_motion():
    """Backward-warping frame t+1 by the flow gives frame t back on the moving glyph pixels (an independent check
    of direction and units), the background has zero flow, and speeds stay within the documented bound."""
    checked = 0
    for i in range(6):
        video, flow = flow_clip(np.random.default_rng([1, i]), FRAMES, SIZE)
        speed = np.linalg.norm(flow, axis=-1)
        assert speed.max() <= 3.0 + 1e-4                           # <= 3 px/frame at 64 px
        for t in range(FRAMES - 1):
            moving = speed[t] > 0.5
            if moving.sum() < 20:
                continue
            ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
            back = cv2.remap(video[t + 1], xs + flow[t, ..., 0], ys + flow[t, ..., 1], cv2.INTER_LINEAR)
            interior = cv2.erode(moving.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if interior.sum() < 10:
                continue
            err = np.abs(back[interior].astype(float) - video[t][interior]).mean()
            still = np.abs(video[t + 1][interior].astype(float) - video[t][interior]).mean()
            assert err < 0.5 * still + 2, (i, t, err, still)
            checked += 1
    assert checked >= 3


def test_token_targets_average_pixels_and_steps():
    flow = np.zeros((3, 32, 32, 2), np.float32)
    flow[0, :16, :16] = (2.0, 0.0)                                  # token (0, 0, 0), step 0
    flow[1, :8, :16] = (0.0, 4.0)                                   # token (0, 0, 0), step 1, half its pixels
    mean, has = token_targets(flow, 2, 16)
    assert mean.shape == (8, 2) and has.all()
    np.testing.assert_allclose(mean[0], [1.0, 1.0])                 # ((2, 0) + (0, 2)) / 2
    np.testing.assert_allclose(mean[1:], 0)
    _, has1 = token_targets(flow, 1, 16)                            # tubelet 1: the last frame has no step
    assert has1.tolist() == [True] * 12 + [False] * 4


def toy_task(n_train=24, n_test=12, noise_dims=30, seed=0):
    """Targets of real flow sets, and features: (true flow + a little noise) beside noise, or noise alone."""
    rng = np.random.default_rng(seed)
    _, train_flow = flow_set(n_train, FRAMES, SIZE, 0, 0)
    _, test_flow = flow_set(n_test, FRAMES, SIZE, 0, 1)
    train_y, test_y = set_targets(train_flow, 2, 16), set_targets(test_flow, 2, 16)

    def features(y, informative):
        noise = rng.normal(size=(*y.shape[:2], noise_dims))
        if not informative:
            return noise
        return np.concatenate([np.nan_to_num(y) + rng.normal(0, 1e-3, y.shape), noise], -1)
    return train_y, test_y, features


def test_features_that_hold_the_flow_score_near_zero_epe():
    train_y, test_y, features = toy_task()
    m = probe_features(features(train_y, True), train_y, features(test_y, True), test_y, SIZE)
    assert m["epe"] < 0.02 * m["mean_epe"] and m["epe"] < 0.02 * m["zero_epe"]
    assert m["epe_moving"] < 0.02 * m["mean_epe_moving"]
    assert m["n_test_tokens"] == 12 * (FRAMES // 2) * 16


def test_random_features_score_near_the_mean_flow_baseline():
    train_y, test_y, features = toy_task()
    m = probe_features(features(train_y, False), train_y, features(test_y, False), test_y, SIZE)
    assert abs(m["epe"] - m["mean_epe"]) < 0.1 * m["mean_epe"], m


def test_flow_metrics_of_a_random_init_encoder_are_deterministic():
    from eval.evaluate import encoder_source

    _, s, _, load = encoder_source(None, "micro", 0)
    spec = FlowSetSpec(train_clips=6, test_clips=3)
    a, b = flow_metrics(load, s, 0, spec), flow_metrics(load, s, 0, spec)
    assert a == b
    assert a["task"] == "flow" and a["metric"] == "epe" and a["chance"] == a["mean_epe"]
    assert a["n_test_tokens"] == 3 * student_config("micro").num_tokens


def test_eval_task_flow_cli(tmp_path):
    result = run_cli("eval", "--task", "flow", "--random-init", "--preset", "micro", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["metric"] == "epe" and m["encoder"]["random_init"] and "EPE" in result.output
    assert "lower is better" in result.output


def test_eval_without_data_for_a_video_task_is_one_line(tmp_path):
    result = run_cli("eval", "--task", "speed", "--random-init", "--preset", "micro", "--out", str(tmp_path))
    assert_user_error(result, "--task speed needs --data")
    result = run_cli("eval", "--task", "flow", "--data", str(tmp_path), "--random-init", "--preset", "micro",
                     "--out", str(tmp_path))
    assert_user_error(result, "--task flow renders its own held-out clips; leave out --data")


def test_compare_reports_epe_beside_top1(tmp_path):
    from eval.compare import CompareConfig, compare

    out = compare(CompareConfig(scratch=True, preset="micro", tasks=("flow",), seeds=2, out=str(tmp_path / "cmp"),
                                progress=False))
    report = (out / "report.md").read_text()
    assert "flow/ridge" in report and "lower is better" in report and (out / "report.png").is_file()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["metric"] for r in rows] == ["epe", "epe"] and rows[0]["seed"] != rows[1]["seed"]
    scratch_row = next(line for line in report.splitlines() if line.startswith("| scratch"))
    assert f"{(rows[0]['epe'] + rows[1]['epe']) / 2:.3f} ±" in scratch_row      # px/frame, not a percentage


def test_compare_flow_alone_needs_an_encoder(tmp_path):
    from eval.compare import CompareConfig
    from smile_synth.errors import UserError

    with pytest.raises(UserError, match="--task flow compares encoders"):
        CompareConfig(tasks=("flow",), out=str(tmp_path)).validate()


def test_report_shows_top1_and_epe_columns_side_by_side(tmp_path):
    from eval.report import aggregate, bar_chart, markdown, write_csv

    rows = []
    for run, shift in (("a", 0.1), ("b", 0.0)):
        for seed in range(2):
            rows.append(dict(run=run, seed=seed, task="speed", probe="linear", top1=0.5 + shift + 0.1 * seed, chance=1 / 3))
            rows.append(dict(run=run, seed=seed, task="flow", probe="ridge", metric="epe", epe=0.07 + shift / 10,
                             chance=0.08 + 0.002 * seed, top1=None))
    cells = aggregate(rows)
    assert cells["a", "speed/linear"]["mean"] == pytest.approx(0.65)
    assert cells["a", "flow/ridge"]["mean"] == pytest.approx(0.08) and cells["a", "flow/ridge"]["metric"] == "epe"
    assert cells["b", "flow/ridge"]["chance"] == pytest.approx(0.081)          # the seeds' baselines, averaged
    text = markdown(rows, {}, "t", [])
    assert "| a | " in text and "65.0 ± 7.1 (n=2)" in text and "0.080 ± 0.000 (n=2)" in text
    assert "| chance | | 33.3 | 0.081 |" in text and "lower is better" in text
    bar_chart(rows, tmp_path / "r.png", "t")
    write_csv(rows, {}, tmp_path / "r.csv")
    assert (tmp_path / "r.png").stat().st_size > 0 and "flow/ridge mean" in (tmp_path / "r.csv").read_text()
