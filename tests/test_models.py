"""The student: VideoMAE-compatible parameter names/shapes, forward semantics, presets, weight loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smile_synth.errors import UserError
from training.checkpoint import load_weights
from training.layers import Attention
from training.masking import tube_mask
from training.models import build_student, encoder_state_dict, student_config

# ---- an independent description of VideoMAE's pretraining checkpoint layout ---------------------

def videomae_block_shapes(prefix: str, dim: int, mlp_hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
        f"{prefix}.attn.q_bias": (dim,), f"{prefix}.attn.v_bias": (dim,),
        f"{prefix}.attn.qkv.weight": (3 * dim, dim),
        f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (mlp_hidden, dim), f"{prefix}.mlp.fc1.bias": (mlp_hidden,),
        f"{prefix}.mlp.fc2.weight": (dim, mlp_hidden), f"{prefix}.mlp.fc2.bias": (dim,),
    }


def videomae_pretrain_shapes(dim=768, depth=12, dec_dim=384, dec_depth=4, target=768, patch=16, tubelet=2):
    """Names and shapes of a VideoMAE/SMILE ViT-B/16 pretraining state dict (no pos_embed: it is a fixed table)."""
    shapes = {"mask_token": (1, 1, dec_dim),
              "encoder.patch_embed.proj.weight": (dim, 3, tubelet, patch, patch),
              "encoder.patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        shapes.update(videomae_block_shapes(f"encoder.blocks.{i}", dim, 4 * dim))
    shapes.update({"encoder.norm.weight": (dim,), "encoder.norm.bias": (dim,),
                   "encoder_to_decoder.weight": (dec_dim, dim)})
    for i in range(dec_depth):
        shapes.update(videomae_block_shapes(f"decoder.blocks.{i}", dec_dim, 4 * dec_dim))
    shapes.update({"decoder.norm.weight": (dec_dim,), "decoder.norm.bias": (dec_dim,),
                   "decoder.head.weight": (target, dec_dim), "decoder.head.bias": (target,)})
    return shapes


def test_expected_layout_spot_checks():
    """The hand-written layout itself (so a typo in the helper cannot make the main test vacuous)."""
    s = videomae_pretrain_shapes()
    assert len(s) == 3 + 12 * 13 + 3 + 4 * 13 + 4
    assert s["encoder.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert s["encoder.blocks.0.mlp.fc1.weight"] == (3072, 768)
    assert s["encoder.blocks.5.mlp.fc2.weight"] == (768, 3072)
    assert s["decoder.blocks.3.attn.qkv.weight"] == (1152, 384)
    assert s["decoder.blocks.0.mlp.fc1.weight"] == (1536, 384)
    assert "encoder_to_decoder.bias" not in s and "encoder.blocks.0.attn.k_bias" not in s


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            out[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[name] = 0.02 * torch.randn(shape, generator=g)
    return out


@pytest.fixture(scope="module")
def videomae_b16():
    return random_state_dict(videomae_pretrain_shapes())


def test_base_state_dict_has_videomae_names_and_shapes(videomae_b16):
    torch.manual_seed(0)
    sd = build_student("base", target_dim=768).state_dict()
    expected = {k: tuple(v.shape) for k, v in videomae_b16.items()}
    assert sorted(set(sd) - set(expected)) == []
    assert sorted(set(expected) - set(sd)) == []
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert not any("pos_embed" in k for k in sd)


# ---- a reference VideoMAE forward, written from the paper's code layout ------------------------

def sinusoid_table(n: int, d: int) -> torch.Tensor:
    table = np.array([[p / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for p in range(n)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)[None]


def ref_block(x, p, prefix, heads):
    B, N, C = x.shape
    d = C // heads
    h = F.layer_norm(x, (C,), p[f"{prefix}.norm1.weight"], p[f"{prefix}.norm1.bias"], eps=1e-6)
    bias = torch.cat([p[f"{prefix}.attn.q_bias"], torch.zeros(C), p[f"{prefix}.attn.v_bias"]])
    qkv = (h @ p[f"{prefix}.attn.qkv.weight"].T + bias).reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * d ** -0.5, qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    o = (attn @ v).transpose(1, 2).reshape(B, N, C)
    x = x + o @ p[f"{prefix}.attn.proj.weight"].T + p[f"{prefix}.attn.proj.bias"]
    h = F.layer_norm(x, (C,), p[f"{prefix}.norm2.weight"], p[f"{prefix}.norm2.bias"], eps=1e-6)
    h = F.gelu(h @ p[f"{prefix}.mlp.fc1.weight"].T + p[f"{prefix}.mlp.fc1.bias"])
    return x + h @ p[f"{prefix}.mlp.fc2.weight"].T + p[f"{prefix}.mlp.fc2.bias"]


def ref_videomae_pretrain(p, video, mask, depth=12, heads=12, dec_depth=4, dec_heads=6):
    x = F.conv3d(video, p["encoder.patch_embed.proj.weight"], p["encoder.patch_embed.proj.bias"],
                 stride=p["encoder.patch_embed.proj.weight"].shape[2:])
    x = x.flatten(2).transpose(1, 2)
    B, N, C = x.shape
    x = x + sinusoid_table(N, C)
    x = x[~mask].reshape(B, -1, C)
    for i in range(depth):
        x = ref_block(x, p, f"encoder.blocks.{i}", heads)
    x = F.layer_norm(x, (C,), p["encoder.norm.weight"], p["encoder.norm.bias"], eps=1e-6)
    x = x @ p["encoder_to_decoder.weight"].T
    D = x.shape[-1]
    pos = sinusoid_table(N, D).expand(B, -1, -1)
    full = torch.cat([x + pos[~mask].reshape(B, -1, D), p["mask_token"] + pos[mask].reshape(B, -1, D)], dim=1)
    for i in range(dec_depth):
        full = ref_block(full, p, f"decoder.blocks.{i}", dec_heads)
    n_masked = int(mask[0].sum())
    out = F.layer_norm(full[:, -n_masked:], (D,), p["decoder.norm.weight"], p["decoder.norm.bias"], eps=1e-6)
    return out @ p["decoder.head.weight"].T + p["decoder.head.bias"]


def test_videomae_state_dict_loads_strictly_and_computes_videomae_forward(videomae_b16):
    full = build_student("base", target_dim=768)
    full.load_state_dict(videomae_b16, strict=True)          # the 224 px x 16 frame model
    for k, v in full.state_dict().items():
        assert torch.equal(v, videomae_b16[k]), k
    # no geometry in the weights: the same dict drives a small geometry, whose forward we can afford
    small = build_student("base", target_dim=768, size=32, frames=4)
    small.load_state_dict(videomae_b16, strict=True)
    small.eval()
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = tube_mask(2, (2, 2, 2), 0.5, torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = small(video, mask)
        want = ref_videomae_pretrain(videomae_b16, video, mask)
    assert got.shape == (2, 4, 768)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_loaded_weights_fully_determine_the_output():
    """Two students built from different random seeds give the same outputs once the same dict is loaded."""
    torch.manual_seed(1)
    a = build_student("tiny", size=32, frames=4)
    torch.manual_seed(2)
    b = build_student("tiny", size=32, frames=4)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, (2, 2, 2), 0.5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(a(video, mask), b(video, mask))
        b.load_state_dict(a.state_dict(), strict=True)
        assert torch.equal(a(video, mask), b(video, mask))


# ---- forward shapes and order ------------------------------------------------------------------

def test_tiny_forward_shapes():
    torch.manual_seed(0)
    model = build_student("tiny").eval()
    cfg = model.cfg
    assert (cfg.size, cfg.frames, cfg.grid, cfg.num_tokens) == (112, 8, (4, 7, 7), 196)
    video = torch.randn(2, 3, 8, 112, 112)
    mask = tube_mask(2, cfg.grid, 0.75, torch.Generator().manual_seed(0))    # 144 masked, 52 visible
    with torch.no_grad():
        pred = model(video, mask)
        visible = model.encoder(video, mask)
        everything = model.encoder(video, None)
    assert pred.shape == (2, 144, 3 * 2 * 16 * 16)
    assert visible.shape == (2, 52, 192)
    assert everything.shape == (2, 196, 192)
    assert torch.isfinite(pred).all() and torch.isfinite(everything).all()


def test_encoder_without_mask_equals_encoder_with_empty_mask():
    torch.manual_seed(0)
    model = build_student("tiny", size=32, frames=4).eval()
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        a = model.encoder(video, None)
        b = model.encoder(video, torch.zeros(1, 8, dtype=torch.bool))
    assert a.shape == (1, 8, 192)
    assert torch.allclose(a, b, atol=1e-6)


def test_predictions_come_in_token_order():
    """With no decoder blocks each prediction depends only on its own token's position: the i-th
    output row must be the prediction for the i-th masked token in (t, h, w) order."""
    torch.manual_seed(0)
    model = build_student("tiny", size=32, frames=4, decoder_depth=0).eval()
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, [1, 2, 5, 6]] = True
    mask[1, [0, 3, 4, 7]] = True
    video = torch.randn(2, 3, 4, 32, 32)
    D = model.cfg.decoder_dim
    table = sinusoid_table(8, D)[0]
    with torch.no_grad():
        pred = model(video, mask)
        for b in range(2):
            idx = torch.nonzero(mask[b]).flatten()
            want = model.decoder.head(model.decoder.norm(model.mask_token[0, 0] + table[idx]))
            assert torch.allclose(pred[b], want, atol=1e-5), b


# ---- configs -----------------------------------------------------------------------------------

def test_presets_and_overrides():
    assert student_config("tiny").dim == 192
    assert student_config("base").dim == 768 and student_config("base").depth == 12
    assert student_config("large").dim == 1024
    c = student_config("tiny", size=64, frames=4, target_dim=384)
    assert (c.grid, c.num_tokens, c.target_dim) == ((2, 4, 4), 32, 384)


@pytest.mark.parametrize("preset, overrides, needle", [
    ("huge", {}, "huge"),
    ("tiny", {"dimm": 3}, "dimm"),
    ("tiny", {"size": 100}, "100"),
    ("tiny", {"frames": 5}, "5"),
    ("tiny", {"heads": 5}, "5"),
    ("tiny", {"drop_path": 1.0}, "drop_path"),
])
def test_student_config_rejects_bad_settings(preset, overrides, needle):
    with pytest.raises(UserError, match=needle):
        student_config(preset, **overrides)
    with pytest.raises(UserError):
        build_student(preset, **overrides)


# ---- attention -----------------------------------------------------------------------------------

def test_sdpa_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.qkv.weight.normal_(std=0.3)
    x = torch.randn(2, 10, 32)
    W = attn.qkv.weight
    q = x @ W[:32].T + attn.q_bias           # k has no bias
    k = x @ W[32:64].T
    v = x @ W[64:].T + attn.v_bias
    split = lambda t: t.reshape(2, 10, 4, 8).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    want = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    with torch.no_grad():
        got = attn(x)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


# ---- training.checkpoint.load_weights --------------------------------------------------------------

def tiny(seed: int, **kw):
    torch.manual_seed(seed)
    return build_student("tiny", size=32, frames=4, **kw)


def same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_load_weights_encoder_only_file(tmp_path):
    src, dst = tiny(1), tiny(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    enc = encoder_state_dict(src)
    assert enc and not any(k.startswith("encoder.") for k in enc)
    assert "blocks.0.attn.qkv.weight" in enc and "patch_embed.proj.weight" in enc
    # a fine-tuning checkpoint also carries a classifier and fc_norm: ignored, reported as unused
    enc_ft = dict(enc, **{"head.weight": torch.zeros(400, 192), "head.bias": torch.zeros(400),
                          "fc_norm.weight": torch.ones(192)})
    torch.save(enc_ft, tmp_path / "encoder_bare.pt")
    missing, unexpected = load_weights(dst, tmp_path / "encoder_bare.pt")
    sd = dst.state_dict()
    enc_keys = [f"encoder.{k}" for k in enc]
    assert all(torch.equal(sd[f"encoder.{k}"], v) for k, v in enc.items())
    other = [k for k in sd if not k.startswith("encoder.")]
    assert same(sd, before, other)                      # decoder untouched
    assert sorted(missing) == sorted(other)
    assert set(unexpected) >= {"encoder.head.weight", "encoder.head.bias", "encoder.fc_norm.weight"}
    assert not set(unexpected) & set(enc_keys)
    # the trainer's encoder.pt format: {"model": encoder weights, ...}
    dst2 = tiny(3)
    torch.save({"model": enc, "student": {}, "summary": {}}, tmp_path / "encoder.pt")
    load_weights(dst2, tmp_path / "encoder.pt")
    assert all(torch.equal(dst2.state_dict()[f"encoder.{k}"], v) for k, v in enc.items())


def test_load_weights_videomae_style_model_dict(tmp_path):
    src, dst = tiny(1), tiny(2)
    torch.save({"model": src.state_dict(), "epoch": 799}, tmp_path / "checkpoint-799.pth")
    missing, unexpected = load_weights(dst, tmp_path / "checkpoint-799.pth")
    assert missing == [] and unexpected == []
    assert same(dst.state_dict(), src.state_dict(), src.state_dict())
    # a DDP-wrapped save ({"module": ...} with "module." prefixes)
    dst2 = tiny(3)
    torch.save({"module": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pth")
    assert load_weights(dst2, tmp_path / "ddp.pth") == ([], [])
    assert same(dst2.state_dict(), src.state_dict(), src.state_dict())


def test_load_weights_skips_a_head_of_another_target(tmp_path):
    src, dst = tiny(1, target_dim=384), tiny(2)          # CLIP-target checkpoint into a pixel-target model
    head_before = dst.decoder.head.weight.detach().clone()
    torch.save({"model": src.state_dict()}, tmp_path / "clip.pt")
    _, unexpected = load_weights(dst, tmp_path / "clip.pt")
    assert torch.equal(dst.decoder.head.weight, head_before)
    assert set(unexpected) == {"decoder.head.weight", "decoder.head.bias"}
    assert torch.equal(dst.encoder.blocks[0].attn.qkv.weight, src.encoder.blocks[0].attn.qkv.weight)


def test_load_weights_rejects_another_preset(tmp_path):
    torch.manual_seed(0)
    small = build_student("small", size=32, frames=4, depth=2, decoder_depth=1)
    torch.save({"model": small.state_dict()}, tmp_path / "small.pt")
    dst = tiny(2)
    with pytest.raises(UserError, match="preset"):
        load_weights(dst, tmp_path / "small.pt")
    torch.save(encoder_state_dict(small), tmp_path / "small_encoder.pt")
    with pytest.raises(UserError, match="preset"):
        load_weights(dst, tmp_path / "small_encoder.pt")


def test_load_weights_rejects_files_without_encoder_weights(tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="no encoder weights"):
        load_weights(tiny(0), tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError):
        load_weights(tiny(0), tmp_path / "garbage.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_weights(tiny(0), tmp_path / "missing.pt")
