"""The pretraining learning-rate schedule, against its documented shape (training/optim.py, README
"Optimisation"): lr = base lr x global batch / 256, a linear warmup that reaches the peak at the last
warmup step, then a cosine from the peak down to `final` at the end of the run."""
from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli

from training.optim import lr_at, warmup_steps


def cosine(peak: float, final: float, progress: float) -> float:
    """The cosine leg, written out: peak at progress 0, final at progress 1, their mean half-way."""
    return final + (peak - final) * (1 + math.cos(math.pi * progress)) / 2


def test_warmup_ramps_linearly_from_the_first_step_to_the_peak():
    peak, total, warmup = 2.0, 20, 4
    ramp = [lr_at(s, total, warmup, peak) for s in range(warmup)]
    assert ramp == pytest.approx([0.5, 1.0, 1.5, 2.0])          # peak * (step + 1) / warmup
    assert 0 < ramp[0] < peak                                  # the first step is not at the peak
    steps = [b - a for a, b in zip(ramp, ramp[1:])]
    assert steps == pytest.approx([peak / warmup] * (warmup - 1))


def test_cosine_leg_starts_at_the_peak_and_ends_at_final():
    peak, final, total, warmup = 3.0, 0.5, 14, 4
    decay = total - warmup
    for s in range(warmup, total + 1):
        assert lr_at(s, total, warmup, peak, final) == pytest.approx(cosine(peak, final, (s - warmup) / decay)), s
    assert lr_at(warmup, total, warmup, peak, final) == pytest.approx(peak)
    assert lr_at(warmup + decay // 2, total, warmup, peak, final) == pytest.approx((peak + final) / 2)
    assert lr_at(total, total, warmup, peak, final) == pytest.approx(final)
    assert lr_at(total + 5, total, warmup, peak, final) == pytest.approx(final)   # never below final
    legs = [lr_at(s, total, warmup, peak, final) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(legs, legs[1:]))          # strictly decreasing
    assert lr_at(total - 1, total, warmup, peak) > 0           # the last step still trains


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0, 10, 0, 1.5) == pytest.approx(1.5)


@pytest.mark.parametrize("warmup,total,steps", [(0.05, 100, 5), (0.25, 8, 2), (2, 5, 2), (2.0, 5, 2), (9, 5, 5),
                                                (0, 5, 0)])
def test_warmup_is_a_share_below_one_and_a_step_count_from_one(warmup, total, steps):
    assert warmup_steps(warmup, total) == steps


def test_a_short_run_logs_the_scheduled_lr_of_every_step(tmp_path):
    """--warmup 2 over 5 steps, batch 2, base lr 0.128: peak 0.128 x 2 / 256 = 0.001, logged after each step."""
    out = tmp_path / "run"
    res = run_cli("pretrain", "--source", "synthetic", "--recipe", "black+objects", "--preset", "tiny",
                  "--target", "pixel", "--frames", 4, "--size", 32, "--steps", 5, "--batch-size", 2, "--workers", 0,
                  "--lr", 0.128, "--warmup", 2, "--log-every", 1, "--quiet", "--out", out)
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    peak = 0.128 * 2 / 256
    # step s (1-based, as logged) ran with the lr of 0-based step s - 1
    want = [peak / 2, peak, cosine(peak, 0, 0), cosine(peak, 0, 1 / 3), cosine(peak, 0, 2 / 3)]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in log] == pytest.approx(want, rel=1e-6)
