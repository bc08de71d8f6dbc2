"""Edges of a run's set-up: an unusable output folder, shards smaller than the model."""
import logging

import pytest

from smile_synth.errors import UserError
from training import trainer
from training.config import PretrainConfig
from training.data import ShardSource


def test_unwritable_out_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = PretrainConfig(recipe="black+objects", frames=4, size=32, target="pixel", steps=1, batch_size=1,
                         workers=0, out=str(blocker / "run"), progress=False).validate()
    with pytest.raises(UserError, match="not a writable folder"):
        trainer.pretrain(cfg)


def test_shards_smaller_than_the_model_are_upscaled_with_a_warning(training_shards, caplog):
    with caplog.at_level(logging.WARNING, logger="training.data"):
        src = ShardSource(training_shards, 4, 128)
    assert "upscaled" in caplog.text
    assert src.get(0, 0).video.shape == (4, 128, 128, 3)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.data"):
        ShardSource(training_shards, 4, 32)
    assert "upscaled" not in caplog.text


def test_resuming_past_the_requested_steps_is_refused(tmp_path):
    kw = dict(recipe="black+objects", frames=4, size=32, target="pixel", batch_size=1, workers=0,
              out=str(tmp_path / "run"), progress=False)
    trainer.pretrain(PretrainConfig(steps=3, **kw).validate())
    with pytest.raises(UserError, match="past --steps 2"):
        trainer.pretrain(PretrainConfig(steps=2, **kw).validate())
    info = trainer.pretrain(PretrainConfig(steps=4, **kw).validate())     # more steps: continues
    assert info["steps"] == 4


@pytest.mark.parametrize("prefix", ["", "visual."])
def test_teacher_from_an_image_tower_only_file(tmp_path, prefix):
    import open_clip
    import torch

    from training.teacher import load_teacher
    clip = open_clip.create_model("ViT-S-16", pretrained=None)
    path = tmp_path / "tower.pt"
    torch.save({prefix + k: v for k, v in clip.visual.state_dict().items()}, path)
    teacher = load_teacher("ViT-S-16", str(path), tubelet=2, out_grid=(7, 7))
    for k, v in clip.visual.state_dict().items():
        assert torch.equal(teacher.visual.state_dict()[k], v), k
    bad = tmp_path / "other.pt"
    torch.save({"visual.not_a_key": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="image tower"):
        load_teacher("ViT-S-16", str(bad), tubelet=2, out_grid=(7, 7))


def test_gradient_checkpointing_gives_the_same_gradients():
    import torch

    from training.masking import tube_mask
    from training.models import build_student
    torch.manual_seed(0)
    model = build_student("tiny", size=32, frames=4, depth=2, drop_path=0.1)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, model.cfg.grid, 0.5, torch.Generator().manual_seed(0))

    def grads(checkpointing):
        model.zero_grad()
        model.encoder.grad_checkpointing = model.decoder.grad_checkpointing = checkpointing
        torch.manual_seed(1)                      # the same drop-path draws
        model(video, mask).pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-6)


def test_keep_every_keeps_snapshots(tmp_path):
    cfg = PretrainConfig(recipe="black+objects", frames=4, size=32, target="pixel", steps=5, batch_size=1,
                         workers=0, keep_every=2, out=str(tmp_path / "run"), progress=False).validate()
    trainer.pretrain(cfg)
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*.pt"))
    assert kept == ["checkpoint-0000002.pt", "checkpoint-0000004.pt"]
    import torch
    assert torch.load(tmp_path / "run" / kept[0], weights_only=False)["step"] == 2


def test_load_encoder_from_our_files_and_a_videomae_checkpoint(tmp_path):
    import torch

    from training.checkpoint import load_encoder
    from training.models import build_student
    cfg = PretrainConfig(recipe="black+objects", frames=4, size=32, target="pixel", steps=2, batch_size=1,
                         workers=0, out=str(tmp_path / "run"), progress=False).validate()
    info = trainer.pretrain(cfg)
    video = torch.randn(1, 3, 4, 32, 32)
    feats = []
    for name in ("encoder.pt", "checkpoint.pt"):
        enc, scfg, summary = load_encoder(tmp_path / "run" / name)
        assert (scfg.frames, scfg.size, scfg.dim) == (4, 32, 192) and summary["steps"] == info["steps"]
        assert not enc.training
        with torch.no_grad():
            feats.append(enc(video))
    torch.testing.assert_close(feats[0], feats[1])
    assert feats[0].shape == (1, 2 * 2 * 2, 192)
    # a VideoMAE-style pretraining checkpoint: {"model": full state dict}, no config: needs --preset
    videomae = tmp_path / "videomae.pth"
    torch.save({"model": build_student("tiny").state_dict()}, videomae)
    with pytest.raises(UserError, match="--preset"):
        load_encoder(videomae)
    enc, scfg, summary = load_encoder(videomae, preset="tiny")
    assert scfg.size == 112 and summary == {}
    with pytest.raises(UserError, match="another preset"):
        load_encoder(videomae, preset="small")
    with pytest.raises(UserError, match="not --preset small"):
        load_encoder(tmp_path / "run" / "encoder.pt", preset="small")


def test_load_encoder_accepts_its_preset_at_another_geometry(tmp_path):
    from training.checkpoint import load_encoder
    cfg = PretrainConfig(recipe="black+objects", frames=4, size=32, target="pixel", steps=1, batch_size=1,
                         workers=0, out=str(tmp_path / "run"), progress=False).validate()
    trainer.pretrain(cfg)
    _, scfg, _ = load_encoder(tmp_path / "run" / "encoder.pt", preset="tiny")   # tiny, trained at 4 x 32
    assert (scfg.frames, scfg.size) == (4, 32)
