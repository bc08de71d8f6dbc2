"""MaskFeat's HOG target (training.hog): agreement with skimage.feature.hog, token layout, tubelets, the
`hog` target registration and a short `pretrain --target hog`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from skimage import data
from skimage.feature import hog
from skimage.transform import resize

from smile_synth.errors import UserError
from training.config import PretrainConfig
from training.hog import hog_cells, hog_targets
from training.targets import TARGETS, build_target, patchify


def images() -> dict[str, np.ndarray]:
    """(H, W, 3) float64 in [0, 1]: real photos shrunk or cropped, an odd-sized crop and noise."""
    rng = np.random.default_rng(0)
    return {
        "astronaut": resize(data.astronaut(), (64, 64), anti_aliasing=True),
        "chelsea": resize(data.chelsea(), (96, 128), anti_aliasing=True),
        "coffee": data.coffee()[100:228, 200:296] / 255.0,              # uint8 levels: many exact ties
        "coffee_odd": data.coffee()[50:117, 300:377] / 255.0,           # 67 x 77: partial cells are dropped
        "random": rng.random((64, 72, 3)),
    }


def skimage_cells(image: np.ndarray) -> np.ndarray:
    """skimage's HOG of each channel on its own: (H, W, 3) -> (3, H // 8, W // 8, 9)."""
    return np.stack([hog(image[..., c], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(1, 1),
                         block_norm="L2", feature_vector=False)[:, :, 0, 0] for c in range(3)])


def as_batch(image: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(dtype)


# ---- agreement with skimage ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(images()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hog_cells_match_skimage(name, dtype):
    # Same gradient (I[+1] - I[-1], zero on the outermost pixel ring), same hard bins [20 i, 20 (i + 1)),
    # same per-cell mean and h / sqrt(|h|^2 + 1e-10), so every cell, border ones included, agrees up to
    # rounding: skimage sums each cell in a C float (float32), which alone leaves ~1e-7 on these unit-norm
    # histograms (measured max 1.6e-7 in float64, 5.4e-7 in float32). 2e-6 is far below one pixel's vote
    # moving to another bin (>= ~1e-3 here), so a binning, gradient or border difference fails.
    image = images()[name]
    want = skimage_cells(image)
    got = hog_cells(as_batch(image, dtype))[0].double().numpy()
    assert got.shape == want.shape == (3, image.shape[0] // 8, image.shape[1] // 8, 9)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9999


def test_cell_histograms_are_unit_norm_or_zero():
    image = images()["astronaut"].copy()
    image[:16, :16] = 0.5                   # cell (0, 0) and its neighbours' pixels flat: no gradient inside it
    cells = hog_cells(as_batch(image))                                     # (1, 3, 8, 8, 9)
    norms = cells.norm(dim=-1)
    assert (cells >= 0).all()
    assert torch.equal(norms[0, :, 0, 0], torch.zeros(3))                  # wholly flat cell (gradient 0 inside)
    textured = norms[0, :, 2:, 2:]
    assert torch.allclose(textured, torch.ones_like(textured), atol=1e-5)


def test_orientation_convention():
    # A vertical edge (intensity rises to the right) has a horizontal gradient: 0 degrees, bin 0; a horizontal
    # edge: 90 degrees, bin 4; a diagonal where intensity rises down-right: 45 degrees (rows point down), bin 2.
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for ramp, bin_ in ((x, 0), (y, 4), (x + y, 2), (x - y, 6)):
        cells = hog_cells((ramp / 64).expand(1, 3, 32, 32))
        assert torch.equal(cells[0, :, 1:3, 1:3].argmax(-1), torch.full((3, 2, 2), bin_)), bin_
        assert torch.allclose(cells[0, :, 1:3, 1:3, bin_], torch.ones(3, 2, 2))


def test_autocast_does_not_change_the_histograms():
    video = torch.rand(1, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    want = hog_targets(video, 2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = hog_targets(video, 2, 16)
    assert got.dtype == torch.float32 and torch.equal(got, want)


# ---- token layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("patch, dim", [(8, 27), (16, 108), (32, 432)])
def test_shape_and_dim(patch, dim):
    video = torch.rand(2, 3, 4, 64, 96)
    target = build_target(PretrainConfig(target="hog", steps=1).validate(), (2, 64 // patch, 96 // patch), 2,
                          patch, torch.device("cpu"))
    assert target.dim == dim
    out = target(video)
    assert out.shape == (2, 2 * (64 // patch) * (96 // patch), dim) and out.dtype == torch.float32


def test_token_vector_is_its_cells_in_cell_y_cell_x_channel_bin_order():
    video = torch.rand(2, 3, 4, 32, 48, generator=torch.Generator().manual_seed(1))
    out = hog_targets(video, tubelet=2, patch=16)                          # grid (2, 2, 3), 2x2 cells per token
    b, t, h, w = 1, 1, 1, 2
    cells = hog_cells(video[:, :, 2 * t])[b]                               # (3, 4, 6, 9) of the tubelet's frame 0
    token = out[b, (t * 2 + h) * 3 + w].reshape(2, 2, 3, 9)                # (cell_y, cell_x, channel, bin)
    for cy in range(2):
        for cx in range(2):
            assert torch.equal(token[cy, cx], cells[:, 2 * h + cy, 2 * w + cx])


def test_tokens_are_in_patchify_order():
    # Texture inside one token of a flat video (1 px clear of its edges, so the gradients stay inside it):
    # the token patchify puts it in is the only one whose target is non-zero.
    video = torch.full((1, 3, 4, 64, 64), 0.5)
    video[0, :, 2, 17:31, 33:47] = torch.rand(3, 14, 14, generator=torch.Generator().manual_seed(4))
    textured = patchify(video, 2, 16).std(dim=(2, 3)).nonzero()[:, 1].tolist()
    assert textured == [22]                                                # (t 1, h 1, w 2) in a (2, 4, 4) grid
    assert hog_targets(video, 2, 16).abs().sum(-1).nonzero()[:, 1].tolist() == textured


def test_only_the_first_frame_of_each_tubelet_counts():
    gen = torch.Generator().manual_seed(2)
    video = torch.rand(1, 3, 6, 32, 32, generator=gen)
    want = hog_targets(video, 3, 16)
    other = video.clone()
    other[:, :, [1, 2, 4, 5]] = torch.rand(1, 3, 4, 32, 32, generator=gen)
    assert torch.equal(hog_targets(other, 3, 16), want)
    other[:, :, 3] = torch.rand(1, 3, 32, 32, generator=gen)               # frame 0 of the second tubelet
    changed = hog_targets(other, 3, 16)
    assert torch.equal(changed[:, :4], want[:, :4]) and not torch.equal(changed[:, 4:], want[:, 4:])


def test_each_clip_of_a_batch_is_computed_alone():
    video = torch.rand(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    batch = hog_targets(video, 2, 16)
    for i in range(3):
        torch.testing.assert_close(hog_targets(video[i:i + 1], 2, 16), batch[i:i + 1], rtol=0, atol=1e-6)


# ---- registration, errors, pretraining ------------------------------------------------------------------

def test_hog_is_a_registered_target():
    assert "hog" in TARGETS
    PretrainConfig(target="hog", steps=1).validate()


@pytest.mark.parametrize("patch", [4, 12, 14])
def test_patch_not_a_multiple_of_8_is_one_line_user_error(patch):
    cfg = PretrainConfig(target="hog", steps=1).validate()
    with pytest.raises(UserError) as err:
        build_target(cfg, (2, 2, 2), 2, patch, torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message and f"not {patch}" in message and "multiple of 8" in message
    with pytest.raises(UserError):
        hog_targets(torch.rand(1, 3, 2, 2 * patch, 2 * patch), 2, patch)


def test_pretrain_with_the_hog_target(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pretrain", "--recipe", "black+objects", "--target", "hog", "--frames", 4, "--size", 32,
                     "--steps", 2, "--batch-size", 2, "--workers", 0, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["student"]["target_dim"] == 108
    assert ckpt["model"]["decoder.head.weight"].shape == (108, 96)
