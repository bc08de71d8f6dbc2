"""Reconstruction targets: VideoMAE's normalized pixels, token standardization, grid resizing, CLIP teacher."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from smile_synth.errors import UserError
from training.targets import (
    normalize,
    patchify,
    pixel_targets,
    resize_token_grid,
    standardize_tokens,
    to_unit_video,
)


def coded_video(B=1, T=4, H=32, W=48) -> torch.Tensor:
    """(B, 3, T, H, W) whose value encodes (b, c, t, y, x), so any mix-up of pixels shows."""
    b, c, t, y, x = torch.meshgrid(*(torch.arange(n) for n in (B, 3, T, H, W)), indexing="ij")
    return (b * 1e6 + c * 1e5 + t * 1e4 + y * 1e2 + x).double()


# ---- patchify / pixel targets --------------------------------------------------------------------

def test_patchify_order():
    video = coded_video(B=2, T=4, H=32, W=48)            # token grid (2, 2, 3)
    tokens = patchify(video, tubelet=2, patch=16)
    assert tokens.shape == (2, 12, 2 * 16 * 16, 3)
    # token 0: frames 0-1, rows 0-15, cols 0-15, pixels in (t, y, x) order, channels last
    t0 = video[:, :, 0:2, 0:16, 0:16].permute(0, 2, 3, 4, 1).reshape(2, 512, 3)
    assert torch.equal(tokens[:, 0], t0)
    assert tokens[0, 0, 0].tolist() == [0, 1e5, 2e5]                      # (t0, y0, x0), channels r g b
    assert tokens[0, 0, 1, 0] == 1                                        # next pixel: x = 1
    assert tokens[0, 0, 16, 0] == 100                                     # y = 1
    assert tokens[0, 0, 256, 0] == 1e4                                    # t = 1
    # every token: index n = (t * H' + h) * W' + w
    for n in range(12):
        t, rem = divmod(n, 6)
        h, w = divmod(rem, 3)
        cube = video[:, :, 2 * t:2 * t + 2, 16 * h:16 * h + 16, 16 * w:16 * w + 16]
        assert torch.equal(tokens[:, n], cube.permute(0, 2, 3, 4, 1).reshape(2, 512, 3)), n


def test_pixel_targets_shape_and_per_token_channel_normalization():
    torch.manual_seed(0)
    video = torch.rand(2, 3, 4, 32, 32) * torch.rand(2, 3, 1, 1, 1) + 0.2
    target = pixel_targets(video, tubelet=2, patch=16)
    assert target.shape == (2, 8, 2 * 16 * 16 * 3)
    per_channel = target.reshape(2, 8, 512, 3)                            # (p c) order: channel fastest
    assert per_channel.mean(dim=2).abs().max() < 1e-5
    assert (per_channel.std(dim=2) - 1).abs().max() < 1e-3
    # VideoMAE's formula, computed here independently for one token and channel
    cube = video[1, 2, 2:4, 16:32, 0:16].reshape(-1)                        # token (t1, h1, w0) = 6, blue
    want = (cube - cube.mean()) / (cube.std(unbiased=True) + 1e-6)
    assert torch.allclose(target[1, 6, 2::3], want, atol=1e-5)


def test_pixel_targets_of_flat_patches_are_zero():
    video = torch.full((1, 3, 2, 16, 16), 0.5)
    target = pixel_targets(video, 2, 16)
    assert torch.isfinite(target).all() and target.abs().max() == 0


def test_to_unit_video_and_normalize():
    u8 = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    v = to_unit_video(u8)
    assert v.shape == (2, 3, 4, 8, 8) and v.dtype == torch.float32
    assert torch.equal(v[1, 2, 3], u8[1, 3, :, :, 2].float() / 255)
    n = normalize(v)
    assert torch.allclose(n[:, 0], (v[:, 0] - 0.485) / 0.229)
    assert torch.allclose(n[:, 2], (v[:, 2] - 0.406) / 0.225)


# ---- standardization / grid resizing --------------------------------------------------------------

def test_standardize_tokens_per_clip_and_channel():
    torch.manual_seed(0)
    tokens = torch.randn(3, 50, 8) * torch.tensor([1, 2, 3, 4, 5, 6, 7, 8.0]) + torch.arange(8.0) * 10
    tokens[1] *= 100                                                        # clips are independent
    out = standardize_tokens(tokens)
    assert out.shape == tokens.shape
    assert out.mean(dim=1).abs().max() < 1e-4
    assert (out.std(dim=1, unbiased=False) - 1).abs().max() < 1e-3
    # a per-(clip, channel) affine map: the order of tokens within a channel is kept
    assert torch.equal(out[2, :, 5].argsort(), tokens[2, :, 5].argsort())


def test_resize_token_grid_identity():
    tokens = torch.randn(2, 49, 16)
    assert torch.equal(resize_token_grid(tokens, (7, 7), (7, 7)), tokens)


def test_resize_token_grid_constant_grid_stays_constant():
    tokens = torch.full((2, 14 * 14, 5), 3.25)
    tokens[1] = -1.5
    out = resize_token_grid(tokens, (14, 14), (7, 7))
    assert out.shape == (2, 49, 5)
    assert torch.allclose(out[0], torch.full((49, 5), 3.25))
    assert torch.allclose(out[1], torch.full((49, 5), -1.5))


def test_resize_token_grid_shrinks_by_area_average():
    """14 x 14 -> 7 x 7 is area-weighted (docstring): each output token is the mean of its 2 x 2 block."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 14 * 14, 4)
    out = resize_token_grid(tokens, (14, 14), (7, 7))
    grid = tokens.transpose(1, 2).reshape(2, 4, 14, 14)
    want = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    assert torch.allclose(out, want, atol=1e-5), (out - want).abs().max()


# ---- the CLIP teacher ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(clip_teacher_file):
    from training.teacher import load_teacher

    return load_teacher("ViT-S-16", str(clip_teacher_file), tubelet=2, out_grid=(7, 7))


def test_teacher_from_local_file_shape_and_standardization(teacher):
    video = torch.rand(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    out = teacher(video)
    assert out.shape == (2, 2 * 7 * 7, 384)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.mean(dim=1).abs().max() < 1e-4
    assert (out.std(dim=1, unbiased=False) - 1).abs().max() < 1e-2
    assert teacher.width == 384 and teacher.grid == (14, 14)


def test_teacher_weights_are_the_saved_ones(teacher, clip_teacher_file):
    saved = torch.load(clip_teacher_file, map_location="cpu")
    own = teacher.visual.state_dict()
    assert len(own) > 50
    for k, v in own.items():
        assert torch.equal(v, saved[f"visual.{k}"]), k


def test_teacher_is_frozen(teacher):
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()                                               # stays in eval mode (no dropout etc.)
    assert not any(m.training for m in teacher.visual.modules())
    video = torch.rand(1, 3, 2, 32, 32, requires_grad=True)
    assert not teacher(video).requires_grad


def test_teacher_reads_the_first_frame_of_each_tubelet(teacher):
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 4, 32, 32, generator=g)
    out = teacher(video)
    other = video.clone()
    other[:, :, 1] = torch.rand(1, 3, 32, 32, generator=g)     # second frames of the tubelets
    other[:, :, 3] = 0
    assert torch.allclose(teacher(other), out)
    other[:, :, 2] = torch.rand(1, 3, 32, 32, generator=g)     # a first frame
    assert not torch.allclose(teacher(other), out, atol=1e-3)


def test_two_loads_give_identical_targets(teacher, clip_teacher_file):
    from training.teacher import load_teacher

    again = load_teacher("ViT-S-16", str(clip_teacher_file), tubelet=2, out_grid=(7, 7))
    video = torch.rand(2, 3, 4, 48, 48, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again(video), teacher(video))


def test_random_teacher_warns():
    from training.teacher import load_teacher

    with pytest.warns(UserWarning, match="RANDOM"):
        t = load_teacher("ViT-S-16", "none", tubelet=2, out_grid=(2, 2))
    assert t(torch.rand(1, 3, 2, 32, 32)).shape == (1, 4, 384)


def _clip_b16_obtainable() -> bool:
    """True when ViT-B-16/openai weights are cached or a download host answers (then the offline test is moot)."""
    if (Path.home() / ".cache" / "clip" / "ViT-B-16.pt").is_file():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache("timm/vit_base_patch16_clip_224.openai", "open_clip_pytorch_model.bin"), str):
            return True
    except Exception:  # noqa: BLE001 - no hub library / odd cache: treat as not cached
        pass
    for host in ("huggingface.co", "openaipublic.azureedge.net"):
        try:
            socket.create_connection((host, 443), timeout=3).close()
            return True
        except OSError:
            pass
    return False


def test_resolve_weights_offline_fails_fast_with_ways_out():
    from training.teacher import resolve_weights

    if _clip_b16_obtainable():
        pytest.skip("ViT-B-16/openai weights are cached or the network is reachable")
    t = time.perf_counter()
    with pytest.raises(UserError) as info:
        resolve_weights("ViT-B-16", "openai")
    assert time.perf_counter() - t < 15
    msg = str(info.value)
    for needle in ("ViT-B-16", "openai", "--teacher-pretrained PATH", "--target pixel"):
        assert needle in msg, (needle, msg)


def test_resolve_weights_bad_names(tmp_path):
    from training.teacher import resolve_weights

    with pytest.raises(UserError, match="no-such-tag"):
        resolve_weights("ViT-B-16", "no-such-tag")
    with pytest.raises(UserError, match="no such file"):
        resolve_weights("ViT-B-16", str(tmp_path / "nowhere" / "weights.pt"))
    with pytest.raises(UserError, match="no such file"):
        resolve_weights("ViT-B-16", "weights_not_here.pt")
    with pytest.raises(UserError, match="ViT-Q-99"):
        resolve_weights("ViT-Q-99", "openai")
    assert resolve_weights("ViT-B-16", "none") is None
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert resolve_weights("ViT-B-16", str(f)) == str(f)


def test_load_teacher_rejects_files_that_are_not_its_weights(tmp_path):
    from training.teacher import load_teacher

    wrong = tmp_path / "wrong.pt"
    torch.save({"foo": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="cannot load"):
        load_teacher("ViT-S-16", str(wrong), 2, (7, 7))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="garbage.pt"):
        load_teacher("ViT-S-16", str(garbage), 2, (7, 7))


# ---- the registry of targets ---------------------------------------------------------------------

def test_targets_are_registered_by_name():
    from training.config import PretrainConfig
    from training.targets import TARGETS, build_target
    assert tuple(TARGETS) == ("clip", "pixel", "hog", "motion", "flow")
    cfg = PretrainConfig(recipe="black+objects", steps=1, target="pixel").validate()
    target = build_target(cfg, (2, 2, 2), 2, 16, torch.device("cpu"))
    assert target.dim == 3 * 2 * 16 * 16
    video = torch.rand(2, 3, 4, 32, 32)
    assert torch.equal(target(video), pixel_targets(video, 2, 16))


def test_a_registered_target_is_a_cli_choice(monkeypatch):
    from training import targets
    from training.config import PretrainConfig

    class Mean:
        dim = 3

        def __call__(self, video):
            return video.mean(dim=(2, 3, 4))[:, None].expand(-1, 8, -1)

    monkeypatch.setitem(targets.TARGETS, "mean", None)           # so that undo() removes it again

    @targets.register_target("mean")
    def mean_target(cfg, grid, tubelet, patch, device):
        return Mean()

    cfg = PretrainConfig(recipe="black+objects", steps=1, target="mean").validate()
    assert targets.build_target(cfg, (2, 2, 2), 2, 16, torch.device("cpu")).dim == 3
    monkeypatch.undo()
    with pytest.raises(UserError, match="--target 'mean' is not one of clip, pixel"):
        PretrainConfig(recipe="black+objects", steps=1, target="mean").validate()
