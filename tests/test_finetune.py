"""eval/finetune: the VideoMAE-compatible classifier, loading encoders into it, the training recipe
(mixup per clip, layer decay, per-frame-consistent augmentation, step batches), resume, --eval-only,
bad videos and bad options of `smile-synth finetune`.

Kept small: runs use the tiny preset at 4 frames x 32 px (a 2x2x2 token grid), arrow of time with 2
windows and 1 test crop, batches of 2 videos and --workers 0.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli

from eval.finetune import engine as E
from eval.finetune import run as R
from eval.finetune.config import FinetuneConfig
from eval.finetune.data import ClipAugment, StepBatches, same_for_every_frame
from eval.finetune.engine import mix_clips
from eval.finetune.model import build_classifier, load_into_classifier
from eval.finetune.run import finetune
from smile_synth.errors import UserError
from training.checkpoint import save_encoder
from training.models import build_student, encoder_state_dict

FRAMES, SIZE = 4, 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the fast geometry and test views shared by every run here (CLI spelling)
FAST = ["--random-init", "--preset", "tiny", "--frames", FRAMES, "--size", SIZE, "--task", "arrow-of-time",
        "--windows", 2, "--test-crops", 1, "--batch-size", 2, "--workers", 0, "--quiet"]


def api_config(out, data, **kw) -> FinetuneConfig:
    """The same fast settings as FAST, for the Python API."""
    base = dict(random_init=True, preset="tiny", frames=FRAMES, size=SIZE, task="arrow-of-time", windows=2,
                test_crops=1, batch_size=2, workers=0, progress=False, data=str(data), out=str(out))
    base.update(kw)
    return FinetuneConfig(**base)


def write_list(path: Path, videos) -> Path:
    path.write_text("".join(f"{v}\n" for v in videos))
    return path


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def safetensors_weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


# ----------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def embedded_eval(tmp_path_factory) -> Path:
    """The held-out parts of the embedded real scenes (eval.embedded), as a folder of .mp4 files."""
    from eval.embedded import prepare_embedded_data

    try:
        _, eval_dir = prepare_embedded_data(tmp_path_factory.mktemp("embedded"))
    except UserError as e:
        pytest.skip(str(e))
    return eval_dir


@pytest.fixture(scope="module")
def lists(tmp_path_factory, test_videos) -> tuple[Path, Path]:
    """(train list: 2 of the session's small test videos, test list: the third)."""
    root = tmp_path_factory.mktemp("lists")
    return write_list(root / "train.txt", test_videos[:2]), write_list(root / "test.txt", test_videos[2:])


@pytest.fixture(scope="module")
def tiny_pretraining(tmp_path_factory):
    """A tiny PretrainVideoTransformer (4 frames, 32 px) saved as a trainer does: encoder.pt,
    encoder.safetensors and a checkpoint.pt of the whole model. Returns (model, folder)."""
    torch.manual_seed(7)
    model = build_student("tiny", frames=FRAMES, size=SIZE)
    out = tmp_path_factory.mktemp("pretrain_run")
    student = asdict(model.cfg)
    save_encoder(out, encoder_state_dict(model), student, {"steps": 1, "source": "test"})
    torch.save({"model": model.state_dict(), "optimizer": {}, "scaler": {}, "step": 1, "student": student,
                "summary": {"steps": 1}}, out / "checkpoint.pt")
    return model, out


# ---------------------------------------------------------------------------------- 1, 2: the model

def videomae_finetune_shapes(dim: int, depth: int, classes: int, tubelet: int = 2, patch: int = 16,
                             mlp: int = 4) -> dict[str, tuple[int, ...]]:
    """The state dict of VideoMAE's modeling_finetune.VisionTransformer (use_mean_pooling, no init_values,
    fixed sin-cos positions, which are not saved): names -> shapes."""
    shapes = {"patch_embed.proj.weight": (dim, 3, tubelet, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.q_bias": (dim,), b + "attn.v_bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (mlp * dim, dim), b + "mlp.fc1.bias": (mlp * dim,),
            b + "mlp.fc2.weight": (dim, mlp * dim), b + "mlp.fc2.bias": (dim,),
        })
    shapes.update({"fc_norm.weight": (dim,), "fc_norm.bias": (dim,), "head.weight": (classes, dim),
                   "head.bias": (classes,)})
    return shapes


def test_base_classifier_has_videomae_finetune_keys_and_shapes():
    sd = build_classifier("base", 101).state_dict()           # ViT-B/16, 16 frames, 224 px
    assert len(sd) == 162
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes == videomae_finetune_shapes(768, 12, 101)
    # spelled out, as in a released VideoMAE ViT-B fine-tuned checkpoint
    assert shapes["patch_embed.proj.weight"] == (768, 3, 2, 16, 16)
    assert shapes["patch_embed.proj.bias"] == (768,)
    assert shapes["blocks.0.norm1.weight"] == (768,)
    assert shapes["blocks.0.attn.qkv.weight"] == (2304, 768)
    assert shapes["blocks.0.attn.q_bias"] == shapes["blocks.0.attn.v_bias"] == (768,)
    assert shapes["blocks.0.attn.proj.weight"] == (768, 768)
    assert shapes["blocks.0.mlp.fc1.weight"] == (3072, 768)
    assert shapes["blocks.11.mlp.fc2.bias"] == (768,)
    assert shapes["fc_norm.weight"] == shapes["fc_norm.bias"] == (768,)
    assert shapes["head.weight"] == (101, 768) and shapes["head.bias"] == (101,)
    assert "norm.weight" not in sd and "norm.bias" not in sd          # mean pooling: fc_norm instead
    assert not any("pos_embed" in k for k in sd)                     # fixed sin-cos table, not saved
    assert not any("attn.qkv.bias" in k or "gamma" in k for k in sd)


@pytest.mark.parametrize("name", ["encoder.pt", "encoder.safetensors", "checkpoint.pt", "."])
def test_pretraining_encoder_loads_with_only_fc_norm_and_head_new(tiny_pretraining, name):
    pretrain_model, folder = tiny_pretraining
    encoder = encoder_state_dict(pretrain_model)
    torch.manual_seed(0)
    model = build_classifier("tiny", 3, frames=FRAMES, size=SIZE)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    info = load_into_classifier(model, folder / name)
    assert info["missing"] == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert not info["classifier"]
    assert set(info["unused"]) >= {"norm.weight", "norm.bias"}           # the encoder's final norm: unused
    assert not any(k.startswith(("blocks.", "patch_embed.")) for k in info["unused"])
    sd = model.state_dict()
    loaded = [k for k in sd if k.startswith(("blocks.", "patch_embed."))]
    assert len(loaded) == len(sd) - 4 == 2 + 13 * 4
    for k in loaded:
        assert torch.equal(sd[k], encoder[k]), k
    for k in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"):
        assert torch.equal(sd[k], fresh[k]), k                       # left as initialised
    assert sd["head.weight"].abs().max() < 1e-3                        # VideoMAE's init_scale 0.001
    assert model(torch.zeros(2, 3, FRAMES, SIZE, SIZE)).shape == (2, 3)


def test_encoder_of_another_preset_is_refused(tiny_pretraining):
    _, folder = tiny_pretraining
    with pytest.raises(UserError, match="another preset"):
        load_into_classifier(build_classifier("tiny", 2, frames=FRAMES, size=SIZE, dim=96), folder / "encoder.pt")


# -------------------------------------------------------------------------- 3: a run on real clips

def test_finetune_on_embedded_clips_writes_metrics_and_confusion(tmp_path, embedded_eval):
    out = tmp_path / "ft"
    r = run_cli("finetune", *FAST, "--data", embedded_eval, "--folds", 2, "--steps", 2, "--out", out)
    assert r.exit_code == 0, r.output
    assert "arrow-of-time / finetune: top-1" in r.output
    m = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "per_class_accuracy", "n_train_clips", "n_test_clips", "skipped_videos", "views", "confusion"):
        assert key in m, key
    assert 0 <= m["top1"] <= 1
    assert m["classes"] == ["forward", "reversed"]
    assert set(m["per_class_accuracy"]) == {"forward", "reversed"}
    assert m["views"] == {"clips": 1, "crops": 1}
    assert m["skipped_videos"] == 0 and m["skipped"] == {}
    assert m["n_videos"] == len(list(Path(embedded_eval).glob("*.mp4"))) >= 10 and m["n_train_clips"] > 0
    confusion = np.array(m["confusion"])
    assert confusion.shape == (2, 2) and confusion.sum() == m["n_test_clips"] > 0
    assert confusion.sum(1).tolist() == [m["n_test_clips"] // 2] * 2       # forward and reversed, balanced
    assert math.isclose(m["top1"], np.trace(confusion) / confusion.sum())
    assert m["steps"] == [2, 2] and len(m["per_fold_top1"]) == 2
    png = (out / "confusion.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from PIL import Image
    with Image.open(out / "confusion.png") as im:
        im.verify()
    for fold in ("fold-0", "fold-1"):
        assert (out / fold / "classifier.safetensors").is_file() and (out / fold / "metrics.json").is_file()
        assert [e["step"] for e in read_log(out / fold)] == [2]


# ------------------------------------------------------------------------------------- 4: resume

class Killed(Exception):
    """Stands for the process being killed mid-run."""


def test_resume_after_a_kill_continues_the_same_schedule(tmp_path, lists, monkeypatch):
    train, test = lists
    steps, kill_at, save_every = 6, 3, 2     # 8 training examples, 4 steps per epoch: crosses an epoch
    kw = dict(test_data=str(test), steps=steps, save_every=save_every, log_every=1, lr=0.1)

    whole = finetune(api_config(tmp_path / "whole", train, **kw))

    original = E.train_step
    calls = []

    def train_step(loop, batch, step):
        if step == kill_at:
            raise Killed
        calls.append(step)
        return original(loop, batch, step)

    monkeypatch.setattr(E, "train_step", train_step)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        finetune(api_config(out, train, **kw))
    assert calls == [0, 1, 2]
    assert [e["step"] for e in read_log(out)] == [1, 2, 3]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (out / "metrics.json").exists()

    calls.clear()

    def counted(loop, batch, step):
        calls.append(step)
        return original(loop, batch, step)

    monkeypatch.setattr(E, "train_step", counted)
    resumed = finetune(api_config(out, train, resume="auto", **kw))
    assert calls == [2, 3, 4, 5]                     # started at the checkpoint's step 2, ran to 6

    a, b = read_log(tmp_path / "whole"), read_log(out)
    assert [e["step"] for e in b] == list(range(1, steps + 1))          # step 3 logged again once, no duplicate
    assert [e["lr"] for e in b] == [e["lr"] for e in a]                  # the same schedule, exactly
    assert len({e["lr"] for e in a}) == steps                            # (a schedule that moves)
    # data order, augmentation, mixup and drop path are seeded per (seed, step / position): on the CPU the
    # resumed run is bit-identical to the uninterrupted one (GPU kernels may differ in the last bits)
    exact = not torch.cuda.is_available()
    la, lb = [e["loss"] for e in a], [e["loss"] for e in b]
    assert la == lb if exact else np.allclose(la, lb, rtol=1e-3)
    wa = safetensors_weights(tmp_path / "whole" / "classifier.safetensors")
    wb = safetensors_weights(out / "classifier.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]) if exact else torch.allclose(wa[k].float(), wb[k].float(), atol=1e-4), k
    if exact:
        assert resumed["top1"] == whole["top1"] and resumed["confusion"] == whole["confusion"]
    assert resumed["steps"] == whole["steps"] == [steps]


def test_resume_refuses_a_changed_setting(tmp_path, lists, monkeypatch):
    train, test = lists
    out = tmp_path / "run"
    orig = E.train_step     # a checkpoint of step 1, as a killed run leaves it

    def step_then_kill(loop, batch, step):
        if step == 1:
            raise Killed
        return orig(loop, batch, step)

    monkeypatch.setattr(E, "train_step", step_then_kill)
    with pytest.raises(Killed):
        finetune(api_config(out, train, test_data=str(test), steps=3, save_every=1))
    monkeypatch.undo()
    r = run_cli("finetune", *FAST, "--data", train, "--test-data", test, "--steps", 3, "--out", out, "--seed", 1)
    assert r.exit_code == 2
    assert_user_error(r, "cannot resume", "seed")
    r = run_cli("finetune", *FAST, "--data", train, "--test-data", test, "--steps", 3, "--out", out, "--resume", "none")
    assert_user_error(r, "--resume auto")


# -------------------------------------------------------------------------------------- 5: mixup

def distinct_clips(B=4, T=4, H=16, W=16) -> torch.Tensor:
    """(B, 3, T, H, W) where every clip and every frame differs from every other, everywhere."""
    g = torch.Generator().manual_seed(0)
    base = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1, 1) * 100
    frame = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1) * 10
    return base + frame + torch.rand(B, 3, T, H, W, generator=g)


def test_mixup_targets_are_soft_and_sum_to_one():
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1, num_classes=5)
    video, label = distinct_clips(), torch.tensor([0, 1, 2, 3])
    for seed in range(6):
        np.random.seed(seed)
        mixed, target = mix_clips(mixup, video.clone(), label)
        assert mixed.shape == video.shape and target.shape == (4, 5)
        assert torch.allclose(target.sum(1), torch.ones(4))
        assert (target >= 0).all()
        assert not torch.equal(mixed, video)
    # an odd batch loses its last clip (timm pairs clip i with clip B-1-i)
    np.random.seed(0)
    mixed, target = mix_clips(mixup, distinct_clips(B=5), torch.tensor([0, 1, 2, 3, 4]))
    assert mixed.shape == (4, 3, 4, 16, 16) and target.shape == (4, 5)
    assert torch.allclose(target.sum(1), torch.ones(4))
    assert target[:, 4].max() < 0.1                                     # clip 4 (class 4) is gone


def test_cutmix_pastes_the_same_box_in_every_frame():
    from timm.data import Mixup

    cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, label_smoothing=0.0, num_classes=4)
    video, label = distinct_clips(), torch.tensor([0, 1, 2, 3])
    partial = 0
    for seed in range(10):
        np.random.seed(seed)
        mixed, target = mix_clips(cutmix, video.clone(), label)
        pasted = mixed == video.flip(0)                          # (B, 3, T, H, W): from the partner clip
        kept = mixed == video
        assert (pasted | kept).all()
        for i in range(4):
            box = pasted[i, 0, 0]
            assert (pasted[i] == box).all(), "the box differs between frames or channels"
            lam = 1 - box.float().mean().item()
            if 0 < box.sum() < box.numel():
                partial += 1
                rows, cols = box.any(1).nonzero().ravel(), box.any(0).nonzero().ravel()
                assert box.sum() == len(rows) * len(cols)        # a rectangle
            assert math.isclose(target[i, label[i]].item() + (target[i, label[3 - i]].item() if i != 3 - i else 0),
                                1.0, abs_tol=1e-6)
            assert math.isclose(target[i, label[i]].item(), lam, abs_tol=1e-6)
    assert partial > 0


def test_mixup_uses_one_lambda_for_every_frame():
    from timm.data import Mixup

    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.0, num_classes=4)
    video, label = distinct_clips(), torch.tensor([0, 1, 2, 3])
    np.random.seed(3)
    mixed, target = mix_clips(mix, video.clone(), label)
    lam = target[0, 0].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.flip(0), atol=1e-4)


# -------------------------------------------------------------------------------- 6: layer decay

class Captured(Exception):
    pass


def test_layer_decay_and_weight_decay_of_the_optimizer_groups(tmp_path, lists, monkeypatch):
    """The optimizer and scheduler run.py builds (captured as the loop starts): VideoMAE's layer-wise lr."""
    train, test = lists
    seen = {}

    def capture(loop, loader):
        seen["loop"] = loop
        raise Captured

    monkeypatch.setattr(R, "train_loop", capture)
    steps, batch, lr = 20, 2, 1e-3
    with pytest.raises(Captured):
        finetune(api_config(tmp_path / "ld", train, test_data=str(test), steps=steps, batch_size=batch, lr=lr,
                            layer_decay=0.75, weight_decay=0.05))
    loop = seen["loop"]
    model, optimizer, scheduler = loop.raw_model, loop.optimizer, loop.scheduler
    depth = model.cfg.depth
    assert depth == 4
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)

    def expected_scale(name: str) -> float:
        if name.startswith("patch_embed."):
            return 0.75 ** (depth + 1)
        if name.startswith("blocks."):
            return 0.75 ** (depth - int(name.split(".")[1]))
        assert name.startswith(("fc_norm.", "head.")), name
        return 1.0

    for name, p in names.items():
        g = group_of[id(p)]
        assert math.isclose(g["lr_scale"], expected_scale(name)), (name, g["lr_scale"], expected_scale(name))
        no_decay = p.ndim <= 1     # biases, LayerNorms, q_bias / v_bias
        assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    for name in ("blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.3.norm1.weight", "fc_norm.weight",
                 "head.bias", "patch_embed.proj.bias"):
        assert group_of[id(names[name])]["weight_decay"] == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"):
        assert group_of[id(names[name])]["weight_decay"] == 0.05, name

    # warmup then cosine, per step; each group's lr = schedule lr x its scale
    peak = lr * batch / 256
    warmup = 10                                  # min(5 epochs x 4 steps, steps // 2)
    for step in (0, 3, 9, 10, 15, 19):
        scheduler.step_update(step)
        if step < warmup:
            want = 1e-6 + step * (peak - 1e-6) / warmup
        else:
            want = 1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for name, p in names.items():
            assert math.isclose(group_of[id(p)]["lr"], want * expected_scale(name), rel_tol=1e-9), (step, name)
    assert math.isclose(max(g["lr"] for g in optimizer.param_groups), want)


# --------------------------------------------------------------------------------- 7: --eval-only

def test_eval_only_reproduces_the_metrics_of_a_finetuned_checkpoint(tmp_path, test_videos, monkeypatch):
    train = write_list(tmp_path / "train.txt", test_videos[:1])
    test = write_list(tmp_path / "test.txt", test_videos[1:])
    probs = []
    original = R.test_views

    def spy(*a, **k):
        out = original(*a, **k)
        probs.append(out[0])
        return out

    monkeypatch.setattr(R, "test_views", spy)
    run_dir = tmp_path / "ft"
    r = run_cli("finetune", *FAST, "--data", train, "--test-data", test, "--steps", 3, "--lr", 0.5, "--out", run_dir)
    assert r.exit_code == 0, r.output
    a = json.loads((run_dir / "metrics.json").read_text())
    # the same --test-data (its geometry and classes come from the run's classifier.safetensors), and the
    # test list given as --data (eval-only tests all of it)
    for name, data in (("eval", ["--data", train, "--test-data", test]), ("eval2", ["--data", test])):
        r = run_cli("finetune", "--eval-only", "--checkpoint", run_dir, *data, "--task", "arrow-of-time",
                    "--windows", 2, "--test-crops", 1, "--workers", 0, "--quiet", "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        b = json.loads((tmp_path / name / "metrics.json").read_text())
        assert b["top1"] == a["top1"] and b["confusion"] == a["confusion"]
        assert b["per_class_accuracy"] == a["per_class_accuracy"] and b["n_test_clips"] == a["n_test_clips"] == 8
        assert b["encoder"]["frames"] == FRAMES and b["encoder"]["size"] == SIZE
        assert b["steps"] == [0] and b["n_train_clips"] == 0
        assert not (tmp_path / name / "checkpoint.pt").exists()
        assert (tmp_path / name / "confusion.png").read_bytes().startswith(PNG_SIGNATURE)
    assert len(probs) == 3
    np.testing.assert_allclose(probs[1], probs[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs[2], probs[0], rtol=0, atol=1e-6)
    # the classifier did learn something (its probabilities are not the near-uniform ones of a fresh head)
    assert np.abs(probs[0] - 0.5).max() > 1e-3


# ------------------------------------------------------------------------------------ 8: bad videos

def test_bad_videos_are_skipped_and_counted(tmp_path, test_videos, bad_videos):
    missing, empty, garbage = bad_videos
    train = write_list(tmp_path / "train.txt", [test_videos[0], missing, test_videos[1], garbage])
    test = write_list(tmp_path / "test.txt", [test_videos[2], empty])
    out = tmp_path / "ft"
    # 2 of the 4 training videos are rejected up front: within --max-bad-share 0.5 (the default 0.1 stops the run)
    r = run_cli("finetune", *FAST, "--data", train, "--test-data", test, "--steps", 2, "--max-bad-share", 0.5, "--out", out)
    assert r.exit_code == 0, r.output
    assert "3 videos skipped" in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["skipped_videos"] == 3
    assert set(m["skipped"]) == {str(missing), str(garbage), str(empty)}
    assert m["n_train_clips"] == 2 * 2 * 2          # 2 good videos x 2 windows x (forward, reversed)
    assert m["n_test_clips"] == 4 and m["n_videos"] == 2


# ------------------------------------------------------------------------------------ 9: bad input

@pytest.mark.parametrize("args, needle", [
    (["--random-init", "--preset", "tiny", "--eval-only"], "--checkpoint"),
    (["--random-init", "--preset", "tiny", "--folds", 1], "--folds"),
    (["--random-init", "--preset", "tiny", "--aa", "garbage"], "--aa"),
    (["--random-init", "--preset", "tiny", "--size", 40], "--size"),
    (["--random-init", "--preset", "tiny", "--fold", 3], "--fold"),
    (["--random-init", "--preset", "tiny", "--layer-decay", 1.5], "--layer-decay"),
    (["--random-init", "--preset", "tiny", "--batch-size", 1, "--repeated-aug", 1], "--batch-size"),
    (["--random-init"], "--preset"),
    (["--preset", "tiny"], "--checkpoint"),
])
def test_bad_options_get_one_clear_line(tmp_path, lists, args, needle):
    train, _ = lists
    r = run_cli("finetune", "--data", train, "--task", "arrow-of-time", "--workers", 0, "--quiet",
                "--out", tmp_path / "out", *args)
    assert r.exit_code == 2, r.output
    assert_user_error(r, needle)


def test_eval_only_of_a_pretraining_encoder_is_refused(tmp_path, lists, tiny_pretraining):
    _, folder = tiny_pretraining
    train, _ = lists
    r = run_cli("finetune", "--eval-only", "--checkpoint", folder / "encoder.pt", "--data", train,
                "--task", "arrow-of-time", "--workers", 0, "--quiet", "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert_user_error(r, "--eval-only", "fine-tuned classifier")


# ------------------------------------------------------------------------------- 10: augmentation

def test_rand_augment_is_the_same_for_every_frame():
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    ra = rand_augment_transform("rand-m9-n4-mstd0.5-inc1", {"translate_const": 14, "img_mean": (124, 116, 104)})
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    same = np.repeat(frame[None], 5, 0)
    changed = 0
    for seed in range(8):
        random.seed(seed)
        np.random.seed(seed)
        out = same_for_every_frame(ra, same)
        assert out.shape == same.shape and out.dtype == np.uint8
        for t in range(1, 5):
            assert np.array_equal(out[t], out[0]), (seed, t)
        changed += not np.array_equal(out[0], frame)
    assert changed > 0
    # frames that differ get the same ops: each is what the transform makes of it alone from the same state
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    random.seed(11)
    np.random.seed(11)
    out = same_for_every_frame(ra, frames)
    for t in range(3):
        random.seed(11)
        np.random.seed(11)
        assert np.array_equal(out[t], np.asarray(ra(Image.fromarray(frames[t])))), t


def test_clip_augment_shapes_seeds_and_one_erasing_box():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (FRAMES, 37, 50, 3), dtype=np.uint8)
    aug = ClipAugment(SIZE, "rand-m7-n4-mstd0.5-inc1", flip=True, reprob=0.25)
    torch_state = torch.random.get_rng_state()
    a = aug(frames, 5)
    assert torch.equal(torch.random.get_rng_state(), torch_state)      # the caller's torch stream is untouched
    assert a.shape == (3, FRAMES, SIZE, SIZE) and a.dtype == torch.float32
    assert torch.equal(aug(frames, 5), a)
    assert not torch.equal(aug(frames, 6), a)
    # identical frames stay identical (one crop, flip and RandAugment for the whole clip)
    still = np.repeat(frames[:1], FRAMES, 0)
    plain = ClipAugment(SIZE, "rand-m7-n4-mstd0.5-inc1", flip=True, reprob=0.0)
    for seed in range(4):
        v = plain(still, seed)
        assert all(torch.equal(v[:, t], v[:, 0]) for t in range(FRAMES)), seed
    # random erasing: one box through all frames (the same draws up to the erasing, then one box)
    erase = ClipAugment(SIZE, "rand-m7-n4-mstd0.5-inc1", flip=True, reprob=1.0)
    erased_any = False
    for seed in range(4):
        v0, v1 = plain(frames, seed), erase(frames, seed)
        box = (v0 != v1).any(0)                                          # (T, S, S)
        assert all(torch.equal(box[t], box[0]) for t in range(FRAMES)), seed
        erased_any |= bool(box.any())
    assert erased_any


def test_every_clip_of_a_batch_gets_its_own_augmentation(test_videos):
    """Seeds per (epoch, position, repeat) are distinct: repeat 1 of position p is not augmented like
    repeat 0 of position p + 1 (same video and frames here, so equal draws would give equal clips)."""
    from eval.finetune.data import Entry, TrainClips
    from smile_synth.video import VideoItem

    entries = [Entry(0, 0, (0, 2, 4, 6))] * 3
    ds = TrainClips([VideoItem(test_videos[0])], entries, FRAMES, 2, SIZE,
                    ClipAugment(SIZE, "rand-m7-n4-mstd0.5-inc1", flip=True, reprob=0.25), repeats=2, seed=0)
    clips = [c for p in range(3) for c in ds[(0, p, p)]["clips"]]
    for i in range(len(clips)):
        for j in range(i):
            assert not torch.equal(clips[i], clips[j]), (i, j)
    assert torch.equal(ds[(0, 1, 1)]["clips"], ds[(0, 1, 1)]["clips"])          # and a key is reproducible
    assert not torch.equal(ds[(1, 1, 1)]["clips"], ds[(0, 1, 1)]["clips"])      # another epoch, other draws


@pytest.fixture
def one_broken_of_three(tmp_path, test_videos, monkeypatch) -> Path:
    """A training list of the 3 test videos whose second fails to decode (BadVideo) during training (the
    test list's video among them: the tests using it pass allow_overlap)."""
    from eval.finetune import data as D
    from smile_synth.video import BadVideo

    broken, real = str(test_videos[1]), D.decode_frames

    def decode(path, idx, short_side=None):
        if str(path) == broken:
            raise BadVideo(f"{path}: broken stream")
        return real(path, idx, short_side=short_side)

    monkeypatch.setattr(D, "decode_frames", decode)
    return write_list(tmp_path / "train.txt", test_videos)


def test_unreadable_training_videos_past_max_bad_share_stop_the_run(tmp_path, lists, one_broken_of_three):
    """--max-bad-share is a share of videos: one of three failing to decode is more than 0.3 (with
    each good video giving 2 clips, 1 bad in 2 x 2 + 1 would not be)."""
    _, test = lists
    train = one_broken_of_three
    with pytest.raises(UserError, match="--max-bad-share"):
        finetune(api_config(tmp_path / "out", train, test_data=str(test), steps=30, batch_size=4, max_bad_share=0.3,
                            allow_overlap=True))
    m = finetune(api_config(tmp_path / "ok", train, test_data=str(test), steps=3, batch_size=4, max_bad_share=0.4,
                            log_every=1, allow_overlap=True))
    assert read_log(tmp_path / "ok")[-1]["bad"] > 0 and m["steps"] == [3]


def test_a_batch_of_only_unreadable_videos_is_skipped_not_fatal(tmp_path, lists, one_broken_of_three):
    """With one video per step, the steps that draw the broken one have nothing to train on: they are
    skipped (and counted), and the run goes on under --max-bad-share."""
    _, test = lists
    train = one_broken_of_three
    m = finetune(api_config(tmp_path / "out", train, test_data=str(test), steps=6, batch_size=1, max_bad_share=0.9,
                            log_every=1, allow_overlap=True))
    log = read_log(tmp_path / "out")
    assert m["steps"] == [6] and log[-1]["bad"] >= 1
    assert len(log) < 6                       # the skipped steps log no loss


def test_eval_only_of_a_folded_run_names_a_fold(tmp_path, embedded_eval):
    out = tmp_path / "folds"
    finetune(api_config(out, str(embedded_eval), folds=2, fold=0, steps=1))
    with pytest.raises(UserError, match="fold-0"):
        finetune(api_config(tmp_path / "again", str(embedded_eval), eval_only=True, random_init=False, checkpoint=str(out)))


# ------------------------------------------------------------------------------ 11: step batches

def test_step_batches_resume_and_ranks():
    full = list(StepBatches(10, 3, 12, 0, seed=4))
    assert len(full) == 12 and all(len(b) == 3 for b in full)
    for start in (1, 5, 11):
        assert list(StepBatches(10, 3, 12, start, seed=4)) == full[start:]
    assert list(StepBatches(10, 3, 12, 12, seed=4)) == []
    # an epoch = 3 steps (10 // 3, the last short batch dropped): no entry twice within one
    for e in range(4):
        epoch = [key for b in full[3 * e:3 * e + 3] for key in b]
        assert {k[0] for k in epoch} == {e}
        assert len({k[2] for k in epoch}) == 9 and len({k[1] for k in epoch}) == 9
    assert [k[2] for b in full[:3] for k in b] != [k[2] for b in full[3:6] for k in b]     # reshuffled
    # two ranks: disjoint batches within every epoch, covering 2 x 2 x 2 of the 10 entries
    ranks = [list(StepBatches(10, 2, 6, 0, seed=4, rank=r, world=2)) for r in (0, 1)]
    assert StepBatches(10, 2, 6, 0, seed=4, world=2).per_epoch == 2
    for e in range(3):
        per_rank = [{k[2] for b in ranks[r][2 * e:2 * e + 2] for k in b} for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 4
        assert not per_rank[0] & per_rank[1]
        keys = [k[:2] for r in (0, 1) for b in ranks[r][2 * e:2 * e + 2] for k in b]
        assert len(set(keys)) == 8                                       # (epoch, position): each augmentation once
    assert list(StepBatches(10, 2, 6, 3, seed=4, rank=1, world=2)) == ranks[1][3:]


# ------------------------------------------------------------------------ compare --probe finetune

def test_compare_probe_finetune_sits_beside_the_frozen_probes(tmp_path, tiny_pretraining, lists):
    """Every run and scratch fine-tuned with the same recipe and seeds; the report has the fine-tune
    column next to the linear probe's, with seed spread; scratch takes the runs' geometry."""
    _, run = tiny_pretraining
    train, test = lists
    out = tmp_path / "cmp"
    result = run_cli(*["compare", "--run", f"tiny={run}", "--scratch", "--data", str(train), "--test-data", str(test),
                      "--task", "arrow-of-time", "--probe", "finetune", "--probe", "linear", "--seeds", 2,
                      "--windows", 2, "--crops", 1, "--cache-dir", "", "--out", out, "--quiet",
                      "--finetune-set", "steps=2", "--finetune-set", "batch_size=2", "--finetune-set", "workers=0",
                      "--finetune-set", "test_crops=1"])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "| arrow-of-time/finetune | arrow-of-time/linear |" in report
    rows = json.loads((out / "results.json").read_text())["rows"]
    tuned = [r for r in rows if r["probe"] == "finetune"]
    assert sorted((r["run"], r["seed"]) for r in tuned) == [("scratch", 0), ("scratch", 1), ("tiny", 0), ("tiny", 1)]
    assert all(r["steps"] == [2] and r["encoder"]["frames"] == FRAMES and r["encoder"]["size"] == SIZE for r in tuned)
    assert {r["encoder"]["random_init"] for r in tuned if r["run"] == "scratch"} == {True}
    assert (out / "finetune" / "tiny-seed1" / "arrow-of-time" / "classifier.safetensors").is_file()


def test_compare_refuses_a_finetune_setting_it_sets_itself(tmp_path, tiny_pretraining, lists):
    _, run = tiny_pretraining
    train, _ = lists
    for setting, needle in (("seed=3", "--finetune-set seed"), ("learning_rate=1", "--finetune-set")):
        result = run_cli(*["compare", "--run", f"tiny={run}", "--data", str(train), "--probe", "finetune",
                          "--finetune-set", setting, "--out", tmp_path / "x", "--quiet"])
        assert_user_error(result, needle)


def test_a_videomae_finetuned_checkpoint_tests_here(tmp_path, lists, monkeypatch):
    """A file as VideoMAE's run_class_finetuning saves it ({"model": modeling_finetune keys, "args":
    Namespace}, no geometry) evaluates with --eval-only --preset, and its logits are ours."""
    import argparse

    _, test = lists
    torch.manual_seed(3)
    model = build_classifier("tiny", 2, frames=FRAMES, size=SIZE)
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": model.state_dict(), "epoch": 9, "args": argparse.Namespace(nb_classes=2)}, path)
    assert_user_error(run_cli("finetune", "--eval-only", "--checkpoint", path, "--data", test, "--task", "arrow-of-time",
                              "--out", tmp_path / "x", "--quiet"), "--preset")
    captured = {}
    real = E.test_views

    def spy(m, *a, **kw):
        captured["state"] = {k: v.clone() for k, v in m.state_dict().items()}
        return real(m, *a, **kw)

    monkeypatch.setattr(R, "test_views", spy)
    m = finetune(api_config(tmp_path / "ev", test, random_init=False, eval_only=True, checkpoint=str(path)))
    assert m["n_test_clips"] > 0 and m["classes"] == ["forward", "reversed"]
    assert all(torch.equal(captured["state"][k], v) for k, v in model.state_dict().items())


def test_eval_probes_a_finetuned_classifier(tmp_path, lists):
    """`eval --checkpoint` of a fine-tuning run: the classifier's encoder (no final norm under mean
    pooling) gives the tokens that its fc_norm and head see."""
    from training.checkpoint import load_encoder

    train, test = lists
    out = tmp_path / "ft"
    finetune(api_config(out, train, test_data=str(test), steps=1))
    encoder, cfg, _ = load_encoder(out)
    clf = build_classifier("tiny", 2, frames=FRAMES, size=SIZE)
    load_into_classifier(clf, out, strict_head=True)
    video = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(clf.head(clf.fc_norm(encoder(video).mean(1))), clf.eval()(video), atol=1e-5)
    result = run_cli("eval", "--checkpoint", out, "--data", train, "--task", "arrow-of-time", "--windows", 2, "--crops", 1,
                     "--folds", 2, "--cache-dir", "", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_test_clips"] > 0


def test_ddp_two_processes_gloo(tmp_path, lists):
    """torchrun with 2 CPU processes: each rank its share of every batch and of the test videos; rank 0
    writes once, and the gathered test covers every example exactly once (as one process does)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    train, test = lists
    args = ["finetune", *map(str, FAST), "--data", str(train), "--test-data", str(test), "--steps", "3", "--log-every", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "smile_synth",
           *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["train_clips_seen"] == [3 * 2 * 2 * 2]                 # steps x videos x repeats x ranks
    assert [r["step"] for r in read_log(tmp_path / "ddp")] == [1, 2, 3]
    single = run_cli(*args, "--out", tmp_path / "one")
    assert single.exit_code == 0, single.output
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert ddp["n_test_clips"] == one["n_test_clips"] > 0
    assert sum(map(sum, ddp["confusion"])) == ddp["n_test_clips"]


def test_a_test_folder_lacking_a_class_keeps_the_class_indices(tmp_path, test_videos):
    """Folders of classes are matched by class name: a test folder without class "a" must not shift
    "b" to index 0; a test class the training data lacks gets one clear line."""
    import shutil

    train, test = tmp_path / "train", tmp_path / "test"
    for i, name in enumerate(("a", "b", "b")):
        (train / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(test_videos[i], train / name / f"v{i}{Path(test_videos[i]).suffix}")
    (test / "b").mkdir(parents=True)
    shutil.copy(test_videos[2], test / "b" / f"t{Path(test_videos[2]).suffix}")
    m = finetune(api_config(tmp_path / "ft", train, test_data=str(test), task="labels", steps=1, test_clips=1))
    assert m["classes"] == ["a", "b"] and sum(m["confusion"][1]) == m["n_test_clips"] > 0 and sum(m["confusion"][0]) == 0
    (test / "c").mkdir()
    shutil.copy(test_videos[0], test / "c" / f"u{Path(test_videos[0]).suffix}")
    with pytest.raises(UserError, match="class folder 'c'"):
        finetune(api_config(tmp_path / "ft2", train, test_data=str(test), task="labels", steps=1, test_clips=1))
