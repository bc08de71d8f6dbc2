"""`smile-synth preview` writes a contact sheet and a GIF; `smile-synth recipes` lists the recipes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL_RECIPES, FRAMES, SIZE, assert_user_error, run_cli
from PIL import Image

GAP = 2  # pixels between tiles


def sheet_size(n_clips: int, frames: int, size: int) -> tuple[int, int]:
    """(width, height): one row per clip, min(8, frames) tiles per row."""
    return min(8, frames) * (size + GAP), n_clips * (size + GAP)


def gif_size(n_clips: int, size: int) -> tuple[int, int]:
    cols = min(4, n_clips)
    rows = -(-n_clips // cols)
    return cols * (size + GAP), rows * (size + GAP)


def test_recipes_lists_every_recipe():
    res = run_cli("recipes")
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.output.splitlines() if line.strip()]
    assert names == ALL_RECIPES
    assert all(" v1 " in line for line in res.output.splitlines() if line.strip())


@pytest.mark.parametrize("n,frames,size", [(3, 5, 32), (2, 10, 48)])
def test_preview_of_a_recipe_writes_png_and_gif(tmp_path, n, frames, size):
    png, gif = tmp_path / "sheet.png", tmp_path / "anim.gif"
    res = run_cli("preview", "--recipe", "mixed", "--set", "background.bank_size=2", "--out", png, "--gif", gif,
                  "--n", n, "--frames", frames, "--size", size)
    assert res.exit_code == 0, res.output
    assert f"wrote {png} ({n} clips)" in res.output
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == sheet_size(n, frames, size)
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.size == gif_size(n, size)
        assert im.n_frames == frames


def test_preview_of_shards(tmp_path, small_dataset):
    out, cfg, _ = small_dataset
    png, gif = tmp_path / "sheet.png", tmp_path / "anim.gif"
    res = run_cli("preview", "--shards", out, "--out", png, "--gif", gif, "--n", 5)
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size == sheet_size(5, FRAMES, SIZE)
    with Image.open(gif) as im:
        assert im.size == gif_size(5, SIZE)
        assert im.n_frames == FRAMES
    # asking for more clips than there are shows them all
    res = run_cli("preview", "--shards", out / "shard-000002.tar", "--out", png, "--n", 5)
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size == sheet_size(1, FRAMES, SIZE)


def test_overlay_masks_changes_the_picture(tmp_path):
    plain, tinted = tmp_path / "plain.png", tmp_path / "tinted.png"
    args = ["preview", "--recipe", "black+objects", "--n", 2, "--frames", FRAMES, "--size", 32]
    assert run_cli(*args, "--out", plain).exit_code == 0
    res = run_cli(*args, "--out", tinted, "--overlay-masks")
    assert res.exit_code == 0, res.output
    a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(tinted))
    assert a.shape == b.shape
    changed = (a != b).any(axis=2)
    assert changed.mean() > 0.01


def test_overlay_masks_tints_exactly_the_masks():
    from generators import render_clip
    from smile_synth.app.preview import overlay_masks

    clip = render_clip("black+objects", 0, 0, FRAMES, SIZE)
    tinted = overlay_masks(clip)
    assert tinted.shape == clip.video.shape and tinted.dtype == np.uint8
    masked = clip.masks.any(axis=0)
    assert (tinted[masked] != clip.video[masked]).any(axis=1).mean() > 0.9
    # outside the masks only the box outlines are drawn
    boxes = np.zeros_like(masked)
    for k in range(clip.num_objects):
        for t in range(FRAMES):
            b = clip.boxes[k, t]
            if np.isfinite(b).all():
                x1, y1, x2, y2 = b.astype(int)
                boxes[t, y1:y2, x1:x2] = True
    unchanged = ~masked & ~boxes
    np.testing.assert_array_equal(tinted[unchanged], clip.video[unchanged])
    np.testing.assert_array_equal(clip.video, render_clip("black+objects", 0, 0, FRAMES, SIZE).video)  # not modified


@pytest.mark.parametrize("args,needle", [
    ([], "exactly one of"),
    (["--recipe", "black+objects", "--shards", "."], "exactly one of"),
    (["--recipe", "black+objects", "--n", 0], "--n 0"),
    (["--recipe", "nope"], "nope"),
], ids=["neither", "both", "n=0", "unknown recipe"])
def test_preview_bad_arguments(tmp_path, args, needle):
    res = run_cli("preview", *args, "--out", tmp_path / "x.png", "--frames", FRAMES, "--size", 32)
    assert_user_error(res, needle)
    assert not (tmp_path / "x.png").exists()


def test_preview_into_a_missing_folder(tmp_path):
    res = run_cli("preview", "--recipe", "black+objects", "--out", tmp_path / "nowhere" / "x.png", "--frames", FRAMES,
                  "--size", 32)
    assert_user_error(res, "nowhere", "does not exist")


def test_preview_of_an_empty_folder(tmp_path):
    res = run_cli("preview", "--shards", tmp_path, "--out", tmp_path / "x.png")
    assert_user_error(res, "no clips")
