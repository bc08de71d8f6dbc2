"""Interoperability with Hugging Face transformers' VideoMAE and VideoMAE's own layout (`smile-synth export`,
imports through training/checkpoint.py): both directions agree numerically on fp32 CPU.

transformers models here get random weights, and every parameter (biases and norms too) is moved off its
initial value, so a name mapped to the wrong place or a dropped tensor shows up as a large difference.
Inputs: ours take (B, 3, T, H, W), transformers' pixel_values (B, T, 3, H, W), the same normalized numbers.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_user_error, run_cli

from eval.finetune.model import build_classifier, load_into_classifier
from smile_synth.errors import UserError
from training import hf
from training.checkpoint import (load_encoder, load_weights, read_checkpoint, resolve_weights_file, save_atomic,
                                 save_encoder, save_safetensors)
from training.models import PretrainVideoTransformer, VideoEncoder, student_config
from training.targets import IMAGENET_MEAN, IMAGENET_STD, normalize, pixel_targets

transformers = pytest.importorskip("transformers")

FRAMES, SIZE = 4, 32             # tiny's widths at 2 x 2 x 2 = 8 tokens: fast, and --preset tiny matches
TOL = 1e-4                       # max abs diff the issue asks for
CLASSES = ["jumping", "rolling", "sliding"]


def tiny(**kw):
    return student_config("tiny", frames=FRAMES, size=SIZE, **kw)


def hf_config(mean_pooling: bool, **kw):
    """A transformers VideoMAEConfig of our tiny student's geometry (our conversion, so geometry reads back)."""
    args = hf.videomae_config(tiny(), mean_pooling=mean_pooling)
    args.pop("model_type")
    return transformers.VideoMAEConfig(**{**args, **kw})


def jitter(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Move every parameter (zero biases, unit norms included) off its init; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def video(seed: int = 0) -> torch.Tensor:
    """Normalized clip, ours: (2, 3, T, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(2, 3, FRAMES, SIZE, SIZE, generator=g))


def hf_in(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> transformers' pixel_values (B, T, 3, H, W)."""
    return x.permute(0, 2, 1, 3, 4).contiguous()


def mask(seed: int = 0) -> torch.Tensor:
    """bool (2, 8), 5 of 8 tokens masked per clip (the same count, as both models need)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(8, generator=g) < 5 for _ in range(2)])


def max_diff(name: str, a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (name, a.shape, b.shape)
    d = (a - b).abs().max().item()
    print(f"{name}: max abs diff {d:.3g} (values up to {a.abs().max().item():.3g})")
    return d


def made(path: Path) -> Path:
    """`path`, its folder created (the writers expect it to exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export(src, out, *args):
    result = run_cli("export", src, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return result.output


def loaded(cls, folder):
    """cls.from_pretrained(folder), checking that every tensor was used and none was missing."""
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


# ---- transformers -> ours ------------------------------------------------------------------------------

def test_a_transformers_encoder_imports_through_load_encoder(tmp_path):
    torch.manual_seed(0)
    theirs = jitter(transformers.VideoMAEModel(hf_config(mean_pooling=False)), 1)
    theirs.save_pretrained(tmp_path / "hf")
    x = video()
    with torch.no_grad():
        want = theirs(pixel_values=hf_in(x)).last_hidden_state                   # (2, 8, 192)
    for path in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):       # the folder or its file
        encoder, cfg, _ = load_encoder(path, "tiny")
        assert (cfg.frames, cfg.size, cfg.dim, cfg.depth) == (FRAMES, SIZE, 192, 4)  # from config.json
        with torch.no_grad():
            assert max_diff("transformers VideoMAEModel -> load_encoder, tokens", want, encoder(x)) <= TOL
    # a pytorch_model.bin of transformers 5's in-memory names (query.bias, not q_bias) reads the same way
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    torch.save(theirs.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert resolve_weights_file(tmp_path / "bin").name == "pytorch_model.bin"
    encoder, _, _ = load_encoder(tmp_path / "bin", "tiny")
    with torch.no_grad():
        assert max_diff("pytorch_model.bin -> load_encoder, tokens", want, encoder(x)) <= TOL


def test_a_transformers_classifier_imports_into_ours(tmp_path):
    config = hf_config(mean_pooling=True, **hf.label_maps(CLASSES))
    theirs = jitter(transformers.VideoMAEForVideoClassification(config), 2)
    theirs.save_pretrained(tmp_path / "hf")
    ckpt = read_checkpoint(tmp_path / "hf" / "model.safetensors")
    assert ckpt["classifier"] == {"num_classes": 3, "class_names": CLASSES}
    ours = build_classifier("tiny", 3, frames=FRAMES, size=SIZE).eval()
    info = load_into_classifier(ours, tmp_path / "hf", strict_head=True)
    assert info["classifier"] and info["missing"] == [] and info["unused"] == []
    x = video(1)
    with torch.no_grad():
        d = max_diff("transformers VideoMAEForVideoClassification -> ours, logits",
                     theirs(pixel_values=hf_in(x)).logits, ours(x))
    assert d <= TOL


def test_a_transformers_pretraining_model_loads_for_init(tmp_path):
    """What `pretrain --init HF_FOLDER` does: load_weights, decoder included."""
    theirs = jitter(transformers.VideoMAEForPreTraining(hf_config(mean_pooling=False)), 3)
    theirs.save_pretrained(tmp_path / "hf")
    ours = PretrainVideoTransformer(tiny(target_dim=hf.pixel_dim(tiny()))).eval()
    assert load_weights(ours, tmp_path / "hf") == ([], [])
    x, m = video(2), mask(2)
    with torch.no_grad():
        d = max_diff("transformers VideoMAEForPreTraining -> load_weights, decoder predictions",
                     theirs(pixel_values=hf_in(x), bool_masked_pos=m).logits, ours(x, m))
    assert d <= TOL


# ---- ours -> transformers ------------------------------------------------------------------------------

def test_our_encoder_exports_as_videomae_model(tmp_path):
    cfg = tiny(target_dim=512)                                   # a CLIP-target run: the encoder alone exports
    model = jitter(PretrainVideoTransformer(cfg), 4)
    run = tmp_path / "run"
    save_encoder(made(run / "encoder.pt").parent, model.encoder.state_dict(), dataclasses.asdict(cfg),
                 {"target": "clip", "steps": 5})
    out = export(run / "encoder.safetensors", tmp_path / "hf")
    assert "VideoMAEModel" in out and str(tmp_path / "hf") in out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEModel"] and config["use_mean_pooling"] is False
    assert (config["num_frames"], config["image_size"], config["hidden_size"], config["layer_norm_eps"]) == \
        (FRAMES, SIZE, 192, 1e-6)
    theirs = loaded(transformers.VideoMAEModel, tmp_path / "hf")
    x = video(3)
    with torch.no_grad():
        d = max_diff("our encoder -> export -> VideoMAEModel, tokens", theirs(pixel_values=hf_in(x)).last_hidden_state,
                     model.encoder(x))
    assert d <= TOL
    # a CLIP-target checkpoint.pt has a decoder transformers cannot hold: the encoder goes alone, and says so
    save_atomic({"model": model.state_dict(), "student": dataclasses.asdict(cfg), "config": {"target": "clip"},
                 "summary": {"target": "clip"}}, run / "checkpoint.pt")
    out = export(run, tmp_path / "hf2")
    assert "encoder only" in out and "clip" in out
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["architectures"] == ["VideoMAEModel"]
    # and the export imports back: our summary rides along in the safetensors header
    encoder, _, summary = load_encoder(tmp_path / "hf2", "tiny")
    assert summary["target"] == "clip"
    with torch.no_grad():
        assert max_diff("export -> re-import, tokens", model.encoder(x), encoder(x)) <= TOL


def test_our_classifier_exports_as_video_classification(tmp_path):
    ours = jitter(build_classifier("tiny", 3, frames=FRAMES, size=SIZE), 5)
    save_safetensors(ours.state_dict(), made(tmp_path / "ft" / "classifier.safetensors"),
                     student=dataclasses.asdict(ours.cfg), classifier={"num_classes": 3, "class_names": CLASSES})
    export(tmp_path / "ft", tmp_path / "hf")
    theirs = loaded(transformers.VideoMAEForVideoClassification, tmp_path / "hf")
    assert theirs.config.id2label == dict(enumerate(CLASSES)) and theirs.config.use_mean_pooling
    x = video(4)
    with torch.no_grad():
        d = max_diff("our classifier -> export -> VideoMAEForVideoClassification, logits",
                     theirs(pixel_values=hf_in(x)).logits, ours(x))
    assert d <= TOL


def test_our_pixel_pretraining_model_exports_with_its_decoder(tmp_path):
    cfg = tiny(target_dim=hf.pixel_dim(tiny()))
    ours = jitter(PretrainVideoTransformer(cfg), 6)
    save_atomic({"model": ours.state_dict(), "student": dataclasses.asdict(cfg), "config": {"target": "pixel"},
                 "summary": {"target": "pixel"}}, made(tmp_path / "run" / "checkpoint.pt"))
    export(tmp_path / "run", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEForPreTraining"] and config["norm_pix_loss"] is True
    theirs = loaded(transformers.VideoMAEForPreTraining, tmp_path / "hf")
    unit = torch.rand(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    x, m = normalize(unit), mask(5)
    with torch.no_grad():
        out = theirs(pixel_values=hf_in(x), bool_masked_pos=m)
        pred = ours(x, m)
        assert max_diff("our pretraining model -> export -> VideoMAEForPreTraining, decoder predictions",
                        out.logits, pred) <= TOL
        # norm_pix_loss=True is our pixel target: transformers' loss on the same clip is ours
        target = pixel_targets(unit, cfg.tubelet, cfg.patch)[m].reshape(pred.shape)
        ours_loss = torch.nn.functional.mse_loss(pred, target)
    assert abs(out.loss.item() - ours_loss.item()) <= TOL * ours_loss.item()
    # the encoder alone loads as VideoMAEModel from the same folder
    encoder = transformers.VideoMAEModel.from_pretrained(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        assert max_diff("pretraining export -> VideoMAEModel, tokens", encoder(pixel_values=hf_in(x)).last_hidden_state,
                        ours.encoder(x)) <= TOL


# ---- VideoMAE's own layout -----------------------------------------------------------------------------

def test_videomae_format_loads_with_weights_only(tmp_path):
    cfg = tiny(target_dim=hf.pixel_dim(tiny()))
    ours = jitter(PretrainVideoTransformer(cfg), 8)
    save_atomic({"model": ours.state_dict(), "student": dataclasses.asdict(cfg), "summary": {"target": "pixel"}},
                made(tmp_path / "run" / "checkpoint.pt"))
    save_encoder(tmp_path / "run", ours.encoder.state_dict(), dataclasses.asdict(cfg), {"target": "pixel"})
    clf = jitter(build_classifier("tiny", 3, frames=FRAMES, size=SIZE), 9)
    save_safetensors(clf.state_dict(), made(tmp_path / "ft" / "classifier.safetensors"),
                     student=dataclasses.asdict(cfg))

    def pth(src, name):
        output = export(src, tmp_path / name, "--format", "videomae")
        assert str(tmp_path / name / "checkpoint.pth") in output
        ckpt = torch.load(tmp_path / name / "checkpoint.pth", weights_only=True)
        assert set(ckpt) == {"model"} and all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
        return ckpt["model"]

    full = pth(tmp_path / "run", "pretrain")                             # the whole pretraining model
    again = PretrainVideoTransformer(cfg)
    again.load_state_dict(full)                                          # strict: VideoMAE's pretraining names
    enc = pth(tmp_path / "run" / "encoder.pt", "encoder")                # fine-tuning names: no prefix, `norm` kept
    assert set(enc) == set(VideoEncoder(cfg).state_dict())
    into = build_classifier("tiny", 3, frames=FRAMES, size=SIZE)
    assert load_into_classifier(into, tmp_path / "encoder" / "checkpoint.pth")["missing"] == \
        ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    head = pth(tmp_path / "ft", "classifier")                           # modeling_finetune names
    fresh = build_classifier("tiny", 3, frames=FRAMES, size=SIZE).eval()
    fresh.load_state_dict(head)
    x = video(5)
    with torch.no_grad():
        assert max_diff("classifier -> videomae .pth -> build_classifier, logits", clf(x), fresh(x)) == 0.0
        assert max_diff("pretraining -> videomae .pth, predictions", ours(x, mask()), again.eval()(x, mask())) == 0.0


# ---- what a user gets wrong ----------------------------------------------------------------------------

def test_a_geometry_mismatch_and_other_mistakes_are_one_line(tmp_path):
    transformers.VideoMAEModel(hf_config(mean_pooling=False)).save_pretrained(tmp_path / "hf")
    assert_user_error(run_cli("export", tmp_path / "hf", "--out", tmp_path / "hf"), "--out", "another folder")
    with pytest.raises(UserError, match="not --preset small"):
        load_encoder(tmp_path / "hf", "small")
    assert_user_error(run_cli("export", tmp_path / "hf", "--preset", "small", "--out", tmp_path / "o"),
                      str(tmp_path / "hf"), "not --preset small")
    assert_user_error(run_cli("eval", "--checkpoint", tmp_path / "hf", "--preset", "small", "--data", tmp_path,
                              "--out", tmp_path / "e"), "not --preset small")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="'bert' model, not VideoMAE"):
        resolve_weights_file(tmp_path / "bert")


def test_without_transformers_export_says_what_to_install(tmp_path, monkeypatch):
    ours = PretrainVideoTransformer(tiny())
    save_encoder(made(tmp_path / "run" / "encoder.pt").parent, ours.encoder.state_dict(),
                 dataclasses.asdict(tiny()), {})
    transformers.VideoMAEModel(hf_config(mean_pooling=False)).save_pretrained(tmp_path / "hf")
    monkeypatch.setitem(sys.modules, "transformers", None)                     # `import transformers` fails
    line = assert_user_error(run_cli("export", tmp_path / "run", "--out", tmp_path / "o"), 'pip install -e ".[hf]"')
    assert "transformers" in line
    assert not (tmp_path / "o" / "config.json").exists()
    # VideoMAE's layout and reading a transformers folder need no transformers
    export(tmp_path / "run", tmp_path / "vm", "--format", "videomae")
    load_encoder(tmp_path / "hf", "tiny")


def test_the_readme_example_classifies_a_clip(tmp_path):
    """The five-line example of README's "Use the encoder elsewhere", run on a tiny exported classifier."""
    clf = build_classifier("tiny", 3, frames=FRAMES, size=SIZE)
    save_safetensors(clf.state_dict(), made(tmp_path / "ft" / "classifier.safetensors"),
                     student=dataclasses.asdict(clf.cfg), classifier={"num_classes": 3, "class_names": CLASSES})
    section = (REPO / "README.md").read_text().split("## Use the encoder elsewhere", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"smile-synth export (\S+) --format (\w+) --out (\S+)", section)
    assert {fmt for _, fmt, _ in commands} == {"hf", "videomae"}, commands
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    assert len(code.strip().splitlines()) == 5, code
    folder = next(out for src, fmt, out in commands if fmt == "hf" and "finetune" in src)
    export(tmp_path / "ft", tmp_path / "hf")
    printed = StringIO()
    with redirect_stdout(printed):
        exec(code.replace(f'"{folder}"', repr(str(tmp_path / "hf"))), {})
    assert printed.getvalue().strip() in CLASSES
    processor = transformers.VideoMAEImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.crop_size == {"height": SIZE, "width": SIZE} and processor.size == {"shortest_edge": SIZE}
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD


def test_pretrain_init_takes_a_transformers_folder(tmp_path, caplog):
    """`pretrain --init HF_FOLDER`: every tensor, decoder included, starts from transformers' weights."""
    jitter(transformers.VideoMAEForPreTraining(hf_config(mean_pooling=False)), 10).save_pretrained(tmp_path / "hf")
    caplog.set_level("WARNING")
    result = run_cli("pretrain", "--source", "synthetic", "--recipe", "black+objects", "--preset", "tiny",
                     "--target", "pixel", "--frames", FRAMES, "--size", SIZE, "--steps", 1, "--batch-size", 2,
                     "--workers", 0, "--quiet", "--init", tmp_path / "hf", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"initialised from {tmp_path / 'hf'} (0 missing, 0 unused tensors)" in caplog.text
