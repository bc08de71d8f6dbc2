"""`smile-synth preview --flow`: flow panels in the contact sheet and the GIF, coloured where objects move and
white (zero flow) for the static control."""
from __future__ import annotations

import numpy as np
from conftest import FRAMES, assert_user_error, run_cli
from PIL import Image

from generators import render_clip
from smile_synth.app.preview import GREY, animated_grid, contact_sheet

GAP, SIZE = 2, 32


def flow_tiles(sheet: np.ndarray, n: int, frames: int) -> list[np.ndarray]:
    """The flow tiles of every clip's flow row (rows 1, 3, ...) for all frames but the last, label area cut."""
    step = SIZE + GAP
    return [sheet[r * step + 18: r * step + SIZE, c * step: c * step + SIZE]
            for r in range(1, 2 * n, 2) for c in range(min(8, frames) - 1)]


def test_preview_flow_sheet_and_gif(tmp_path):
    png, gif = tmp_path / "sheet.png", tmp_path / "anim.gif"
    res = run_cli("preview", "--recipe", "black+objects", "--flow", "--out", png, "--gif", gif, "--n", 2,
                  "--frames", FRAMES, "--size", SIZE)
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        sheet = np.asarray(im.convert("RGB"))
    assert sheet.shape == (2 * 2 * (SIZE + GAP), (FRAMES + 1) * (SIZE + GAP), 3)   # + the legend tile
    tiles = flow_tiles(sheet, 2, FRAMES)
    coloured = [((t != 255).any(axis=2)).mean() for t in tiles]
    assert max(coloured) > 0.02                     # moving objects show up in colour
    assert min(((t == 255).all(axis=2)).mean() for t in tiles) > 0.3   # the still black background is white
    with Image.open(gif) as im:
        assert im.size == (2 * (2 * SIZE + GAP + GAP), SIZE + GAP) and im.n_frames == FRAMES


def test_static_control_has_white_flow_panels(tmp_path):
    png = tmp_path / "static.png"
    res = run_cli("preview", "--recipe", "black+objects", "--set", "motion.static=true", "--flow", "--out", png,
                  "--n", 2, "--frames", FRAMES, "--size", SIZE)
    assert res.exit_code == 0, res.output
    sheet = np.asarray(Image.open(png).convert("RGB"))
    assert all((t == 255).all() for t in flow_tiles(sheet, 2, FRAMES))


def test_flow_panels_follow_the_clips_flow():
    clip = render_clip("black+objects", 0, 1, FRAMES, SIZE, annotations=("flow",))
    sheet = contact_sheet([clip], flow=True)
    still = (np.hypot(clip.flow[..., 0], clip.flow[..., 1]) == 0)                  # (T-1, H, W)
    for t in range(FRAMES - 1):
        tile = sheet[SIZE + GAP: 2 * SIZE + GAP, t * (SIZE + GAP): t * (SIZE + GAP) + SIZE]
        white = (tile == 255).all(axis=2)
        np.testing.assert_array_equal(white[18:], still[t, 18:])                     # below the label
    last = sheet[SIZE + GAP: 2 * SIZE + GAP, (FRAMES - 1) * (SIZE + GAP): (FRAMES - 1) * (SIZE + GAP) + SIZE]
    assert (last[18:] == GREY).all()                                                # no flow after the last frame
    frames = animated_grid([clip], flow=True)
    assert frames[0].shape == (SIZE + GAP, 2 * SIZE + GAP + GAP, 3)


def test_preview_flow_of_plain_shards_is_one_line(small_dataset, tmp_path):
    out, *_ = small_dataset
    assert_user_error(run_cli("preview", "--shards", out, "--flow", "--out", tmp_path / "x.png"),
                      "--annotations flow")
