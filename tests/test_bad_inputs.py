"""Bad arguments, folders and images end with one informative line and no traceback, and leave no
shard behind that looks finished; unusual but valid images just work."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import (
    FRAMES,
    assert_user_error,
    read_samples,
    run_cli,
    run_module,
    shard_tars,
)
from PIL import Image

from generators import get_recipe, render_clip
from generators.resources import resources_for
from smile_synth.errors import UserError

GEN = ["generate", "--n", 3, "--frames", FRAMES, "--size", 32, "--shard-size", 2, "--workers", 1, "--quiet"]
PHOTOS_ONLY = ["--set", "background.kinds={photo: 1}"]


def assert_nothing_finished(out: Path) -> None:
    """No shard may look complete, and no temporary shard may be left."""
    if out.exists():
        assert shard_tars(out) == []
        assert not list(out.glob("*.tmp*"))
        assert not (out / "manifest.json").exists()


def generate_fails(tmp_path, *args, needles=(), env=None) -> str:
    out = tmp_path / "out"
    res = run_cli(*GEN, "--out", out, *args, env=env)
    line = assert_user_error(res, *needles)
    assert_nothing_finished(out)
    return line


BAD_ARGS = [
    (["--frames", 1], ["--frames 1", "at least 2"]),
    (["--size", 40], ["--size 40", "multiple of 16"]),
    (["--size", 0], ["--size 0"]),
    (["--set", "motion.speed=[-1,2]"], ["motion.speed", ">= 0"]),
    (["--set", "motion.rotation_speed=-3"], ["motion.rotation_speed"]),
    (["--recipe", "nope"], ["unknown recipe 'nope'", "black+objects"]),
    (["--recipe", "overlay"], ["overlay"]),
    (["--recipe", "missing.yaml"], ["missing.yaml", "does not exist"]),
    (["--set", "motion.sped=3"], ["motion.sped", "speed"]),
    (["--set", "nosuchsection.key=1"], ["nosuchsection"]),
    (["--set", "objects.count=5"], ["objects.count"]),
    (["--set", "objects.count"], ["KEY=VALUE"]),
    (["--set", "background.kinds={plaid: 1}"], ["plaid"]),
    (["--n", 0], ["--n 0"]),
    (["--shard-size", 0], ["--shard-size 0"]),
    (["--workers", -1], ["--workers -1"]),
    (["--rank", 3, "--world-size", 3], ["--rank 3"]),
]


@pytest.mark.parametrize("args,needles", BAD_ARGS, ids=[" ".join(map(str, a)) for a, _ in BAD_ARGS])
def test_bad_arguments(tmp_path, args, needles):
    generate_fails(tmp_path, *args, needles=needles)


def test_zero_workers_is_rejected(tmp_path):
    generate_fails(tmp_path, "--workers", 0, needles=["--workers 0"])


def test_bad_rank_environment_variable(tmp_path):
    generate_fails(tmp_path, needles=["RANK", "'x'"], env={"RANK": "x"})


def test_bad_recipe_file(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("base: black+objects\nobjects: {count: [1, 2]\n")  # unclosed brace
    generate_fails(tmp_path, "--recipe", bad, needles=["r.yaml"])
    bad.write_text("- just\n- a list\n")
    generate_fails(tmp_path, "--recipe", bad, needles=["mapping"])


def test_recipe_file_with_base_and_overrides_works(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("base: black+objects\nobjects: {count: [3, 3]}\n")
    out = tmp_path / "out"
    res = run_cli(*GEN, "--out", out, "--recipe", good)
    assert res.exit_code == 0, res.output
    metas = [json.loads(s["json"]) for s in read_samples(out).values()]
    assert len(metas) == 3 and all(m["num_objects"] == 3 for m in metas)


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore file permissions (root)")
        res = run_cli(*GEN, "--out", locked / "out")
        assert_user_error(res, "cannot write", "locked")
    finally:
        locked.chmod(0o700)


def test_output_path_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    res = run_cli(*GEN, "--out", f)
    assert_user_error(res, "afile", "is a file")
    assert f.read_text() == "not a folder"


def test_output_folder_under_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    res = run_cli(*GEN, "--out", f / "sub")
    assert_user_error(res, "afile")


def test_empty_photo_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_fails(tmp_path, *PHOTOS_ONLY, "--set", f"background.photo_dir={empty}",
                   needles=["photo folder", str(empty), "no images"])


def test_missing_photo_folder(tmp_path):
    generate_fails(tmp_path, *PHOTOS_ONLY, "--set", f"background.photo_dir={tmp_path / 'nowhere'}",
                   needles=["nowhere", "does not exist"])


def test_corrupt_image_in_photo_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "good.png"), np.full((40, 40, 3), 90, np.uint8))
    (photos / "x.png").write_bytes(b"\x89PNG garbage, not an image" * 10)
    generate_fails(tmp_path, *PHOTOS_ONLY, "--set", f"background.photo_dir={photos}", needles=["x.png", "corrupt"])


def test_photo_fill_checks_the_photo_folder_too(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_fails(tmp_path, "--set", "objects.fills={photo: 1}", "--set", f"background.photo_dir={empty}",
                   needles=["no images"])


def cutout_folder(tmp_path) -> Path:
    root = tmp_path / "cutouts"
    (root / "box").mkdir(parents=True)
    cv2.imwrite(str(root / "box" / "a.png"), np.full((20, 30, 3), (20, 200, 90), np.uint8))  # RGB, no alpha
    return root


def test_cutout_without_alpha_is_an_error_unless_opaque_is_asked_for(tmp_path):
    root = cutout_folder(tmp_path)
    cut = ["--set", "objects.sources={cutout: 1}", "--set", f"objects.cutout_dir={root}"]
    generate_fails(tmp_path, *cut, needles=["a.png", "cutout_without_alpha"])
    out = tmp_path / "opaque"
    res = run_cli(*GEN, "--out", out, *cut, "--set", "objects.cutout_without_alpha=opaque")
    assert res.exit_code == 0, res.output
    samples = read_samples(out)
    assert len(samples) == 3
    for s in samples.values():
        assert {(o["category"], o["source"]) for o in json.loads(s["json"])["objects"]} == {("box", "cutout")}


def test_cutout_source_needs_a_folder(tmp_path):
    generate_fails(tmp_path, "--set", "objects.sources={cutout: 1}", needles=["cutout_dir"])


def test_cutout_folder_without_category_subfolders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    cv2.imwrite(str(root / "a.png"), np.zeros((8, 8, 4), np.uint8) + 200)
    generate_fails(tmp_path, "--set", "objects.sources={cutout: 1}", "--set", f"objects.cutout_dir={root}",
                   needles=["category"])


def test_errors_have_no_traceback_from_the_real_entry_point(tmp_path):
    proc = run_module(*GEN, "--out", tmp_path / "out", "--set", "motion.speed=[-1,2]")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: motion.speed=") and ">= 0" in lines[0], proc.stderr
    assert_nothing_finished(tmp_path / "out")


def test_failure_midway_leaves_no_finished_looking_shard(tmp_path, monkeypatch):
    from smile_synth.app import generate as gen_module

    def disk_full(self, key, sample):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    monkeypatch.setattr(gen_module.ShardWriter, "write", disk_full)
    res = run_cli(*GEN, "--out", out)
    assert_user_error(res, "disk full")
    assert_nothing_finished(out)


def test_run_that_fails_for_failed_clips_can_be_resumed(tmp_path, monkeypatch):
    from smile_synth.app import generate as gen_module

    real = gen_module.render_clip
    flaky = {1, 4}  # e.g. a photo on a network share that was briefly unreadable

    def render(recipe, seed, index, frames, size, **annotations):
        if index in flaky:
            raise OSError("temporarily unavailable")
        return real(recipe, seed, index, frames, size, **annotations)

    out = tmp_path / "out"
    args = ["generate", "--n", 6, "--frames", FRAMES, "--size", 32, "--shard-size", 3, "--workers", 1, "--quiet"]
    monkeypatch.setattr(gen_module, "render_clip", render)
    res = run_cli(*args, "--out", out)
    assert_user_error(res, "2 of 6 clips failed")
    flaky.clear()  # the cause went away; the same command again
    res = run_cli(*args, "--out", out)
    assert res.exit_code == 0, res.output
    assert sorted(int(k) for k in read_samples(out)) == list(range(6))


def test_fixing_a_bad_photo_folder_and_rerunning_works(tmp_path):
    empty, good = tmp_path / "empty", tmp_path / "good"
    empty.mkdir()
    good.mkdir()
    cv2.imwrite(str(good / "p.png"), np.full((40, 40, 3), 120, np.uint8))
    out = tmp_path / "out"
    assert_user_error(run_cli(*GEN, "--out", out, *PHOTOS_ONLY, "--set", f"background.photo_dir={empty}"), "no images")
    res = run_cli(*GEN, "--out", out, *PHOTOS_ONLY, "--set", f"background.photo_dir={good}")
    assert res.exit_code == 0, res.output


# ---- unusual but valid photos -------------------------------------------------------------

def write_photo(folder: Path, kind: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if kind == "grayscale":
        cv2.imwrite(str(folder / "g.png"), rng.integers(0, 256, (40, 50), dtype=np.uint8))
    elif kind == "rgba":
        cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (40, 50, 4), dtype=np.uint8))
    elif kind == "gray+alpha":
        Image.fromarray(rng.integers(0, 256, (30, 30, 2), dtype=np.uint8), "LA").save(folder / "la.png")
    elif kind == "16-bit":
        cv2.imwrite(str(folder / "c16.png"), rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16))
    elif kind == "16-bit grayscale":
        cv2.imwrite(str(folder / "g16.png"), rng.integers(0, 65536, (40, 50), dtype=np.uint16))
    elif kind == "tiny":
        cv2.imwrite(str(folder / "t.png"), rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    elif kind == "jpeg":
        cv2.imwrite(str(folder / "j.jpg"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    elif kind == "gif":
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert("P").save(folder / "p.gif")
    else:
        raise ValueError(kind)


PHOTO_KINDS = ["grayscale", "rgba", "gray+alpha", "16-bit", "16-bit grayscale", "tiny", "jpeg", "gif"]


@pytest.mark.parametrize("kind", PHOTO_KINDS)
def test_unusual_photos_render(tmp_path, kind):
    write_photo(tmp_path / "photos", kind)
    r = get_recipe("image+objects", [f"background.photo_dir={tmp_path / 'photos'}", "objects.fills={photo: 1}"])
    lib = resources_for(r, 0, 32).photos()
    img = lib.get(0)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    for index in range(3):
        clip = render_clip(r, 0, index, FRAMES, 32)
        assert clip.video.shape == (FRAMES, 32, 32, 3) and clip.meta["background"] == "photo"


def test_16_bit_and_alpha_photos_keep_their_values(tmp_path):
    from smile_synth.images import read_rgb

    rgb16 = np.empty((8, 8, 3), np.uint16)
    rgb16[...] = (0x11AA, 0x22BB, 0x33CC)  # R, G, B
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    assert (read_rgb(tmp_path / "c16.png") == (0x11, 0x22, 0x33)).all()
    cv2.imwrite(str(tmp_path / "g16.png"), np.full((8, 8), 0xABCD, np.uint16))
    assert (read_rgb(tmp_path / "g16.png") == 0xAB).all()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[...] = (200, 100, 50, 255)
    rgba[:4, ..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_rgb(tmp_path / "a.png")
    assert (got[4:] == (200, 100, 50)).all() and (got[:4] == 0).all()  # composited over black


def test_unusual_photos_through_the_cli(tmp_path):
    photos = tmp_path / "photos"
    for kind in PHOTO_KINDS:
        write_photo(photos, kind)
    out = tmp_path / "out"
    res = run_cli("generate", "--n", 8, "--frames", FRAMES, "--size", 32, "--shard-size", 4, "--workers", 1, "--quiet",
                  "--out", out, *PHOTOS_ONLY, "--set", f"background.photo_dir={photos}", "--set", "objects.fills={photo: 1}")
    assert res.exit_code == 0, res.output
    assert "8 clips" in res.output and "complete" in res.output
    assert len(read_samples(out)) == 8


def test_get_recipe_errors_are_user_errors():
    with pytest.raises(UserError, match="objects.size"):
        get_recipe("black+objects", ["objects.size=[50, 10]"])
    with pytest.raises(UserError, match="motion.opacity"):
        get_recipe("black+objects", ["motion.opacity=[0.5, 1.5]"])
