"""Shards are byte-identical for the same command, release after release.

The digests below were taken from `smile-synth generate` before the layout change (issue 10) and
must not move with refactors. A change that is meant to change clips (a recipe version bump, a new
codec setting) updates them in the same commit and says why. They depend on the bundled x264/libjpeg
of the installed PyAV and OpenCV wheels: after upgrading those, re-derive them with the commands in
`PINNED` and check the clips still look right (`smile-synth preview --shards DIR`).
"""
from __future__ import annotations

import hashlib

import pytest
from conftest import run_cli

COMMON = ("--n", "6", "--size", "64", "--frames", "4", "--shard-size", "3", "--workers", "1", "--quiet")
PINNED = {
    ("black+objects", "h264"): ("00c75decdbeadd7eea19eea88330daa69cca5e82dac5a12322956e2fd7b9171b",
                                "bdd2b8e324d8790176fa616a5326e8a05e9ddea6fbec4905383d4db04568b41d"),
    ("black+objects", "jpeg"): ("57a127e83c1c8398e6ae30a532b6b9de83494e1f708873cd5eb88d0540f13122",
                                "ad722c760b6832d81735f07720668481775f9c0e2c76af971f61a847c692f796"),
    ("mixed", "h264"): ("aa613234fcde2209340c03a4d38c59b7e01722031397bf4481121f6c26322940",
                        "69d9afe5c5c80c9db0f581cb3646a7e913bc405b49fd8c99afb0073c62749152"),
}


@pytest.mark.parametrize(("recipe", "codec"), list(PINNED))
def test_generate_output_is_pinned(tmp_path, recipe, codec):
    out = tmp_path / "shards"
    extra = ("--set", "background.bank_size=2") if recipe == "mixed" else ()
    r = run_cli("generate", "--out", out, "--recipe", recipe, "--codec", codec, *extra, *COMMON)
    assert r.exit_code == 0, r.output
    got = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("shard-*.tar")))
    assert got == PINNED[recipe, codec]
