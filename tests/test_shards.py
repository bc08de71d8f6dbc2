"""`generate` writes WebDataset shards that read back as the clips render_clip defines; it resumes
after crashes, refuses to mix settings, splits work across ranks; `inspect --verify` finds damage."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FRAMES,
    SIZE,
    STORAGE_META,
    assert_user_error,
    read_samples,
    recipe,
    rewrite_member,
    run_cli,
    shard_tars,
)

from generators import render_clip
from smile_synth.app import generate as gen_module
from smile_synth.errors import UserError
from smile_synth.app.generate import GenerateConfig, generate
from smile_synth.shards import decode_sample, iter_clips, sample_key
from smile_synth.video_io import psnr


def assert_matches_render(clip, r, seed, frames, size, min_psnr=30.0):
    i = clip.meta["index"]
    ref = render_clip(r, seed, i, frames, size)
    assert clip.video.shape == ref.video.shape and clip.video.dtype == np.uint8
    assert psnr(clip.video, ref.video) >= min_psnr, f"clip {i}"
    np.testing.assert_array_equal(clip.masks, ref.masks)
    np.testing.assert_array_equal(clip.boxes, ref.boxes)
    assert {k: v for k, v in clip.meta.items() if k not in STORAGE_META} == ref.meta
    assert clip.meta["num_objects"] == ref.num_objects
    assert clip.meta["frames"] == frames and clip.meta["size"] == [size, size]


def indices_in(out) -> list[int]:
    return sorted(int(k) for k in read_samples(out))  # read_samples fails on duplicates


def mtimes(out) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in Path(out).glob("shard-*.tar")}


def tar_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("shard-*.tar"))}


def copy_dataset(small_dataset, tmp_path) -> tuple[Path, GenerateConfig]:
    src, cfg, _ = small_dataset
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst, dataclasses.replace(cfg, out=str(dst))


# ---- round trip ---------------------------------------------------------------------------

def test_python_api_round_trip(small_dataset):
    out, cfg, manifest = small_dataset
    assert manifest["complete"] and manifest["clips"] == 7 and manifest["num_shards"] == 3
    assert manifest["failed"] == []
    assert shard_tars(out) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert json.loads((out / "dataset.json").read_text()) == cfg.spec()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]
    clips = list(iter_clips(out))
    assert [c.meta["index"] for c in clips] == list(range(7))
    for clip in clips:
        assert_matches_render(clip, cfg.recipe, cfg.seed, FRAMES, SIZE)


def test_one_shard_file_reads_back_alone(small_dataset):
    out, cfg, _ = small_dataset
    assert [c.meta["index"] for c in iter_clips(out / "shard-000001.tar")] == [3, 4, 5]


def test_long_shard_round_trip(tmp_path):
    # more clips in one shard than generate encodes with one reused video encoder
    n = getattr(gen_module, "SEGMENT", 32) + 3
    cfg = GenerateConfig(n=n, out=str(tmp_path / "out"), recipe=recipe("black+objects"), seed=6, frames=2, size=32,
                         workers=1, shard_size=n)
    assert generate(cfg, progress=False)["clips"] == n
    clips = list(iter_clips(cfg.out))
    assert [c.meta["index"] for c in clips] == list(range(n))
    for clip in clips:
        assert_matches_render(clip, cfg.recipe, 6, 2, 32)


@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_cli_round_trip(tmp_path, codec):
    out = tmp_path / "out"
    res = run_cli("generate", "--n", 5, "--out", out, "--frames", FRAMES, "--size", 32, "--shard-size", 2,
                  "--seed", 3, "--workers", 1, "--codec", codec, "--quiet")
    assert res.exit_code == 0, res.output
    assert "5 clips" in res.output and "complete" in res.output
    assert shard_tars(out) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    ext = "video.h264" if codec == "h264" else "video.jpgs"
    samples = read_samples(out)
    assert sorted(samples) == [sample_key(i) for i in range(5)]
    assert all(set(s) == {ext, "masks.zlib", "boxes.npy", "json"} for s in samples.values())
    clips = list(iter_clips(out))
    assert [c.meta["index"] for c in clips] == list(range(5))
    for clip in clips:
        assert_matches_render(clip, _default_recipe(), 3, FRAMES, 32)


def _default_recipe():
    from generators import get_recipe
    from generators.recipes import DEFAULT_RECIPE

    return get_recipe(DEFAULT_RECIPE)  # the CLI's default --recipe


def test_webdataset_reads_the_shards(small_dataset):
    import webdataset as wds

    out, _, _ = small_dataset
    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [sample_key(i) for i in range(7)]
    ours = list(iter_clips(out))
    for sample, clip in zip(samples, ours):
        fields = {k: v for k, v in sample.items() if not k.startswith("__")}
        assert set(fields) == {"video.h264", "masks.zlib", "boxes.npy", "json"}
        decoded = decode_sample(fields)
        np.testing.assert_array_equal(decoded.video, clip.video)
        np.testing.assert_array_equal(decoded.masks, clip.masks)
        meta = json.loads(sample["json"])
        assert set(meta.pop("checksums")) == {"video.h264", "masks.zlib", "boxes.npy"}
        assert meta == clip.meta


# ---- resume -------------------------------------------------------------------------------

def test_resume_redoes_a_missing_shard_and_removes_crash_leftovers(small_dataset, tmp_path):
    out, cfg = copy_dataset(small_dataset, tmp_path)
    before = read_samples(out)
    original = tar_bytes(out)
    (out / "shard-000001.tar").unlink()
    stale = out / "shard-000001.tar.tmp123"
    stale.write_bytes(b"half a tar")
    kept = mtimes(out)
    manifest = generate(cfg, progress=False)
    assert manifest["complete"] and manifest["clips"] == 7
    assert not stale.exists()
    assert shard_tars(out) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert {k: v for k, v in mtimes(out).items() if k in kept} == kept  # finished shards untouched
    after = read_samples(out)
    assert indices_in(out) == list(range(7))
    assert after == before  # the redone shard holds the same samples
    assert tar_bytes(out) == original  # byte for byte: stored data depend only on the arguments


def test_resume_after_keyboard_interrupt(tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = GenerateConfig(n=7, out=str(out), recipe=recipe("black+objects"), seed=2, frames=FRAMES, size=32,
                         workers=1, shard_size=3)
    real = gen_module.render_clip

    def interrupted(r, seed, index, frames, size, **annotations):
        if index == 4:  # in the middle of shard 1
            raise KeyboardInterrupt
        return real(r, seed, index, frames, size, **annotations)

    monkeypatch.setattr(gen_module, "render_clip", interrupted)
    with pytest.raises(UserError, match="interrupted"):
        generate(cfg, progress=False)
    assert shard_tars(out) == ["shard-000000.tar"]  # the half-written shard was not kept
    assert not list(out.glob("*.tmp*"))
    (out / "shard-000002.tar.tmp999").write_bytes(b"left by a killed run")
    kept = mtimes(out)

    monkeypatch.setattr(gen_module, "render_clip", real)
    manifest = generate(cfg, progress=False)
    assert manifest["complete"] and manifest["clips"] == 7
    assert shard_tars(out) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list(out.glob("*.tmp*"))
    assert mtimes(out)["shard-000000.tar"] == kept["shard-000000.tar"]
    assert indices_in(out) == list(range(7))
    for clip in iter_clips(out):
        assert_matches_render(clip, cfg.recipe, 2, FRAMES, 32)
    # the resumed dataset is byte for byte the one an uninterrupted run writes
    clean = dataclasses.replace(cfg, out=str(tmp_path / "clean"))
    generate(clean, progress=False)
    assert tar_bytes(out) == tar_bytes(clean.out)


def test_rerun_of_a_complete_dataset_changes_nothing(small_dataset, tmp_path):
    out, cfg = copy_dataset(small_dataset, tmp_path)
    kept = mtimes(out)
    assert generate(cfg, progress=False)["complete"]
    assert mtimes(out) == kept


def test_other_settings_into_the_same_folder_are_refused(small_dataset, tmp_path):
    out, cfg = copy_dataset(small_dataset, tmp_path)
    kept = mtimes(out)
    with pytest.raises(UserError, match="seed"):
        generate(dataclasses.replace(cfg, seed=cfg.seed + 1), progress=False)
    with pytest.raises(UserError, match="frames"):
        generate(dataclasses.replace(cfg, frames=cfg.frames + 2), progress=False)
    res = run_cli("generate", "--n", 7, "--out", out, "--recipe", "mixed", "--set", "background.bank_size=2",
                  "--seed", cfg.seed + 1, "--frames", FRAMES, "--size", SIZE, "--shard-size", 3, "--workers", 1,
                  "--quiet")
    assert_user_error(res, "seed", str(out))
    assert mtimes(out) == kept


# ---- ranks --------------------------------------------------------------------------------

def test_ranks_split_the_shards(tmp_path):
    out = tmp_path / "out"
    base = GenerateConfig(n=10, out=str(out), recipe=recipe("black+objects"), seed=4, frames=FRAMES, size=32,
                          workers=1, shard_size=2, world_size=3)
    per_rank: dict[int, set[str]] = {}
    for rank in range(3):
        before = set(read_samples(out)) if out.exists() else set()
        tars_before = set(shard_tars(out)) if out.exists() else set()
        manifest = generate(dataclasses.replace(base, rank=rank), progress=False)
        new_tars = set(shard_tars(out)) - tars_before
        assert new_tars == {f"shard-{s:06d}.tar" for s in range(5) if s % 3 == rank}
        per_rank[rank] = set(read_samples(out)) - before
        assert manifest["complete"] == (rank == 2)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not per_rank[a] & per_rank[b]
    assert sorted(int(k) for keys in per_rank.values() for k in keys) == list(range(10))
    assert indices_in(out) == list(range(10))
    single = dataclasses.replace(base, out=str(tmp_path / "single"), world_size=1)
    generate(single, progress=False)
    assert tar_bytes(out) == tar_bytes(single.out)  # a rank split writes the very same shards


def test_cli_reads_rank_and_world_size_from_the_environment(tmp_path):
    args = ["generate", "--n", 10, "--frames", FRAMES, "--size", 32, "--shard-size", 2, "--workers", 1, "--quiet"]
    res = run_cli(*args, "--out", tmp_path / "env", env={"RANK": "1", "WORLD_SIZE": "3"})
    assert res.exit_code == 0, res.output
    assert shard_tars(tmp_path / "env") == ["shard-000001.tar", "shard-000004.tar"]
    assert "2/5 shards" in res.output
    assert indices_in(tmp_path / "env") == [2, 3, 8, 9]
    # flags win over the environment
    res = run_cli(*args, "--out", tmp_path / "flag", "--rank", 2, "--world-size", 3, env={"RANK": "1", "WORLD_SIZE": "3"})
    assert res.exit_code == 0, res.output
    assert shard_tars(tmp_path / "flag") == ["shard-000002.tar"]


# ---- inspect --verify ---------------------------------------------------------------------

def test_inspect_verify_passes_on_good_data(small_dataset):
    out, _, _ = small_dataset
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code == 0, res.output
    assert "7 clips in 3 shards" in res.output
    assert "verify: OK" in res.output
    assert "CORRUPT" not in res.output


def test_inspect_without_verify_summarises(small_dataset):
    out, _, _ = small_dataset
    res = run_cli("inspect", out)
    assert res.exit_code == 0, res.output
    assert "7 clips in 3 shards" in res.output and "recipe=mixed" in res.output


@pytest.mark.parametrize("member,change", [
    ("000000004.video.h264", lambda b: b[: len(b) // 2]),  # truncated video
    ("000000004.masks.zlib", lambda b: b[:-6]),  # truncated masks
    ("000000004.json", lambda b: b[:-3]),  # broken meta
], ids=["video", "masks", "json"])
def test_inspect_verify_names_a_corrupt_sample(small_dataset, tmp_path, member, change):
    out, _ = copy_dataset(small_dataset, tmp_path)
    rewrite_member(out / "shard-000001.tar", member, change)
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    corrupt = [line for line in res.output.splitlines() if line.startswith("CORRUPT")]
    assert len(corrupt) == 1, res.output
    assert "shard-000001.tar" in corrupt[0] and "000000004" in corrupt[0]
    assert "FAILED" in res.output


def test_inspect_verify_reports_a_missing_sample(small_dataset, tmp_path):
    out, _ = copy_dataset(small_dataset, tmp_path)
    tar_path = out / "shard-000001.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if not m.name.startswith("000000004.")]
    with tarfile.open(tar_path, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code != 0, res.output
    assert "missing" in res.output and "4" in res.output.split("missing")[1]


def test_inspect_verify_detects_flipped_video_bytes(small_dataset, tmp_path):
    out, _ = copy_dataset(small_dataset, tmp_path)

    def flip(b: bytes) -> bytes:
        b = bytearray(b)
        for j in range(len(b) // 2, len(b) // 2 + 8):
            b[j] ^= 0xFF
        return bytes(b)

    rewrite_member(out / "shard-000001.tar", "000000004.video.h264", flip)
    with pytest.raises(ValueError, match="checksum"):  # it would decode, but to another clip
        list(iter_clips(out / "shard-000001.tar"))
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code != 0, res.output
