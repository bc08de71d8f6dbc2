"""generate --annotations: the stored flow and tracks read back as render_clip computes them (flow to float16,
losslessly for that type); plain datasets keep their spec; a rerun never mixes the two; inspect reports them."""
from __future__ import annotations

import json

import numpy as np
from conftest import FRAMES, SIZE, assert_user_error, recipe, rewrite_member, run_cli

from generators import render_clip
from smile_synth.app.generate import GenerateConfig
from smile_synth.shard_annotations import flow_bytes, flow_from_bytes
from smile_synth.shards import iter_clips

ARGS = ("--n", 3, "--size", SIZE, "--frames", FRAMES, "--shard-size", 2, "--workers", 1, "--quiet",
        "--recipe", "mixed", "--set", "background.bank_size=2")


def test_stored_annotations_are_the_rendered_ones(tmp_path):
    out = tmp_path / "a"
    res = run_cli("generate", "--out", out, "--annotations", "tracks,flow", *ARGS)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["annotations"] == ["flow", "tracks"]
    r = recipe("mixed")
    for clip in iter_clips(out):
        ref = render_clip(r, 0, clip.meta["index"], FRAMES, SIZE, annotations=("flow", "tracks"))
        for name in ("flow", "flow_back"):
            got, want = getattr(clip, name), getattr(ref, name)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
        for name in ("flow_valid", "flow_back_valid", "occluded", "tracks", "track_visible"):
            np.testing.assert_array_equal(getattr(clip, name), getattr(ref, name), err_msg=name)
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code == 0, res.output
    assert "annotations: flow in 3 of 3 clips, tracks in 3 of 3 clips" in res.output


def test_plain_spec_is_unchanged_and_runs_do_not_mix(tmp_path):
    plain = GenerateConfig(n=3, out="x", recipe=recipe("mixed"))
    assert "annotations" not in plain.spec()
    out = tmp_path / "p"
    assert run_cli("generate", "--out", out, *ARGS).exit_code == 0
    assert json.loads((out / "dataset.json").read_text()) == GenerateConfig(
        n=3, out="x", recipe=recipe("mixed"), frames=FRAMES, size=SIZE, shard_size=2).spec()
    assert "annotations: none" in run_cli("inspect", out).output
    line = assert_user_error(run_cli("generate", "--out", out, "--annotations", "flow", *ARGS), "annotations")
    assert "no annotations" in line and "flow" in line
    assert_user_error(run_cli("generate", "--out", tmp_path / "q", "--annotations", "flow,depth", *ARGS),
                      "'depth'", "flow, tracks")


def test_inspect_verify_finds_damaged_or_missing_annotations(tmp_path):
    out = tmp_path / "a"
    assert run_cli("generate", "--out", out, "--annotations", "flow", *ARGS).exit_code == 0
    rewrite_member(out / "shard-000000.tar", "000000000.flow.zlib", lambda b: b[:-2] + b"zz")
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code == 1 and "CORRUPT shard-000000.tar 000000000: flow.zlib" in res.output


def test_flow_bytes_keep_every_float16_bit_pattern():
    bits = np.random.default_rng(0).integers(0, 2 ** 16, size=(2, 3, 5, 7, 2), dtype=np.uint16)
    flow = bits.view(np.float16).astype(np.float32)          # NaN, inf, -0 and subnormals included
    back = flow_from_bytes(flow_bytes(flow), flow.shape)
    np.testing.assert_array_equal(back.astype(np.float16).view(np.uint16), bits)
