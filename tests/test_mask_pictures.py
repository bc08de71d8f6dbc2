"""The mask picture: grey exactly where tokens are masked, and the `masks` command end to end."""
import numpy as np
import pytest
from click.testing import CliRunner

from smile_synth.app.cli import cli
from smile_synth.app.masks import MASKED_GREY, mask_sheet, masked_frames, token_image


def test_token_image_expands_each_token_to_its_patch():
    grid = (2, 2, 3)
    img = token_image(np.arange(12), grid, 4)
    assert img.shape == (2, 8, 12)
    assert img[1, 4, 8] == 1 * 6 + 1 * 3 + 2          # token (t=1, h=1, w=2)
    assert (img[0, :4, :4] == 0).all()


def test_masked_frames_grey_exactly_on_masked_tokens():
    rng = np.random.default_rng(0)
    frames = rng.integers(100, 200, (2, 32, 32, 3), dtype=np.uint8)  # never the masked grey
    grid = (2, 2, 2)
    mask = np.array([1, 0, 0, 1, 0, 1, 1, 0], bool)
    out = masked_frames(frames, mask, grid, 16)
    for n, m in enumerate(mask):
        t, h, w = np.unravel_index(n, grid)
        block = out[t, h * 16:(h + 1) * 16, w * 16:(w + 1) * 16]
        if m:
            assert (block == MASKED_GREY).all()
        else:
            np.testing.assert_array_equal(block, frames[t, h * 16:(h + 1) * 16, w * 16:(w + 1) * 16])


def test_mask_sheet_layout():
    B, T, S = 2, 4, 32
    videos = np.zeros((B, T, S, S, 3), np.uint8)
    grid = (2, 2, 2)
    masks = {"tube": np.ones((B, 8), bool), "traj": np.zeros((B, 8), bool)}
    sheet = mask_sheet(videos, np.zeros((B, 8), bool), masks, grid, tubelet=2, patch=16, gap=2)
    rows, cols = B * 3, T // 2
    assert sheet.shape == (rows * (S + 2) - 2, cols * (S + 2) - 2, 3)
    tube_row = sheet[(S + 2):(S + 2) + S, :S]            # second row: all masked
    assert (tube_row == MASKED_GREY).all()


def test_masks_command_writes_a_picture(tmp_path):
    out = tmp_path / "m.png"
    res = CliRunner().invoke(cli, ["masks", "--recipe", "black+objects", "--n", "2", "--frames", "4",
                                   "--size", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from PIL import Image
    w, h = Image.open(out).size
    assert (w, h) == (2 * 66 - 2, 6 * 66 - 2)


def test_masks_command_paints_on_the_render_device(tmp_path):
    """With a render device the batch holds plans: the sheet shows the clips painted there, with the
    masks the numpy path gives (CPU masks are the same random draws; pixels differ at edges only)."""
    from PIL import Image
    sheets = []
    for extra in ([], ["--set", "render_device=cpu"]):
        out = tmp_path / f"m{len(extra)}.png"
        res = CliRunner().invoke(cli, ["masks", "--recipe", "black+objects", "--n", "2", "--frames", "4",
                                       "--size", "64", "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        sheets.append(np.asarray(Image.open(out)).astype(int))
    assert sheets[0].shape == sheets[1].shape
    assert np.abs(sheets[0] - sheets[1]).mean() < 0.5
    grey = [(s == MASKED_GREY).all(-1) for s in sheets]
    assert (grey[0] == grey[1]).mean() > 0.995                  # the same tokens masked


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], "--n 0"),
    (["--out", "/nonexistent-folder/m.png"], "does not exist"),
    (["--mix-ratio", "3", "--source", "mixed"], "mix-ratio"),
])
def test_masks_command_bad_input_is_one_line(tmp_path, args, words):
    base = ["masks", "--recipe", "black+objects", "--frames", "4", "--size", "64"]
    if "--out" not in args:
        args = args + ["--out", str(tmp_path / "m.png")]
    res = CliRunner().invoke(cli, base + args)
    assert res.exit_code == 2
    assert words in res.output and len(res.output.strip().splitlines()) == 1
