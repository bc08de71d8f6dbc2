"""Loading a checkpoint never runs code: every entry point refuses a malicious pickle with one line, foreign
VideoMAE/SMILE checkpoints (with their pickled `args` Namespace) still load, and encoder weights round-trip
through .safetensors."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, run_cli

from smile_synth.errors import UserError
from training.checkpoint import (ENCODER, ENCODER_SAFETENSORS, load_encoder, load_weights, read_checkpoint,
                                 read_resume_checkpoint, save_encoder)
from training.models import PretrainVideoTransformer, VideoEncoder, encoder_state_dict, student_config

FRAMES, SIZE = 4, 32
SYSTEM = f"{os.system.__module__}.system"        # posix.system on Linux: how the pickle names os.system
PRETRAIN = ("pretrain", "--source", "synthetic", "--recipe", "black+objects", "--preset", "tiny", "--target", "pixel",
            "--frames", FRAMES, "--size", SIZE, "--steps", 1, "--batch-size", 2, "--workers", 0, "--quiet")
PROBE = ("--task", "arrow-of-time", "--windows", 2, "--crops", 1, "--quiet")


class Payload:
    """Unpickling this runs `touch MARKER` (the classic malicious-checkpoint pattern)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def tiny_student(**kw):
    return student_config("tiny", frames=FRAMES, size=SIZE, **kw)


def write_bad(path: Path, marker: Path) -> Path:
    """A real-looking checkpoint (true encoder weights under "model") with the payload beside them."""
    torch.manual_seed(0)
    weights = PretrainVideoTransformer(tiny_student(target_dim=3 * 2 * 16 * 16)).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "step": 1, "student": dataclasses.asdict(tiny_student()), "extra": Payload(marker)},
               path)
    return path


@pytest.fixture
def bad(tmp_path) -> tuple[Path, Path]:
    """(malicious checkpoint, the marker file its unpickling would create)."""
    marker = tmp_path / "PWNED"
    return write_bad(tmp_path / "bad" / "evil.pt", marker), marker


@pytest.fixture(scope="module")
def videos(test_videos) -> Path:
    return test_videos[0].parent


def refused(result, path: Path, marker: Path) -> str:
    line = assert_user_error(result, str(path), SYSTEM, "torch.save", "safetensors")
    assert result.exit_code == 2
    assert not marker.exists(), "the checkpoint's code ran"
    return line


# ---- the payload is real, and refused everywhere -------------------------------------------------------

def test_the_payload_runs_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "ran"
    path = write_bad(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)          # what the old loader did
    assert marker.exists()


def test_read_checkpoint_refuses_and_runs_nothing(bad):
    path, marker = bad
    with pytest.raises(UserError) as e:
        read_checkpoint(path)
    msg = e.value.one_line()
    assert str(path) in msg and SYSTEM in msg and "\n" not in str(e.value)
    assert not marker.exists()


def test_eval_checkpoint_refuses(bad, tmp_path, videos):
    path, marker = bad
    refused(run_cli("eval", "--checkpoint", path, "--data", videos, "--out", tmp_path / "o",
                    "--cache-dir", tmp_path / "c", *PROBE), path, marker)


def test_eval_run_folder_refuses(bad, tmp_path, videos):
    path, marker = bad
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "checkpoint.pt")
    refused(run_cli("eval", "--checkpoint", run, "--data", videos, "--out", tmp_path / "o",
                    "--cache-dir", tmp_path / "c", *PROBE), run / "checkpoint.pt", marker)


def test_pretrain_init_refuses(bad, tmp_path):
    path, marker = bad
    refused(run_cli(*PRETRAIN, "--out", tmp_path / "out", "--init", path), path, marker)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_pretrain_resume_path_refuses(bad, tmp_path):
    path, marker = bad
    refused(run_cli(*PRETRAIN, "--out", tmp_path / "out", "--resume", path), path, marker)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("resume", [("--resume", "auto"), ()])   # auto is also the default
def test_pretrain_resume_auto_refuses(bad, tmp_path, resume):
    path, marker = bad
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(path, out / "checkpoint.pt")
    refused(run_cli(*PRETRAIN, "--out", out, *resume), out / "checkpoint.pt", marker)
    assert (out / "checkpoint.pt").read_bytes() == path.read_bytes()   # left as it was


def test_compare_run_refuses(bad, tmp_path, videos):
    path, marker = bad
    refused(run_cli("compare", "--run", f"x={path}", "--data", videos, "--seeds", 1, "--out", tmp_path / "o",
                    "--cache-dir", tmp_path / "c", *PROBE), path, marker)


def test_other_unknown_types_are_refused_by_name(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "meta": Payload(tmp_path / "m").__class__}, path)   # a class
    with pytest.raises(UserError, match="Payload"):
        read_checkpoint(path)


# ---- what must still load -------------------------------------------------------------------------------

def test_videomae_checkpoint_with_args_namespace_loads(tmp_path):
    s = tiny_student(target_dim=3 * 2 * 16 * 16)
    torch.manual_seed(1)
    source = PretrainVideoTransformer(s)
    path = tmp_path / "videomae.pth"
    args = argparse.Namespace(model="pretrain_videomae_small", mask_ratio=0.9, input_size=224, lr=1.5e-4,
                              batch_size=32, output_dir="out", window_size=(8, 14, 14), device="cuda")
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "args": args, "epoch": 799,
                "optimizer": {"state": {}, "param_groups": []}, "scaler": {"scale": 1024.0}}, path)

    assert isinstance(read_checkpoint(path)["args"], argparse.Namespace)
    model = PretrainVideoTransformer(s)
    missing, unexpected = load_weights(model, path)                # what --init does
    assert not missing and not unexpected
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    encoder, cfg, summary = load_encoder(path, "tiny")            # what eval does (geometry from --preset)
    assert cfg.dim == s.dim and summary == {}
    assert torch.equal(encoder.state_dict()["blocks.0.attn.qkv.weight"],
                       source.state_dict()["encoder.blocks.0.attn.qkv.weight"])


def test_our_run_outputs_are_plain_and_init_takes_a_safetensors_folder(tmp_path):
    """What the trainer writes loads with a bare weights_only=True (no allow-list); --init also takes a run
    folder that ships only encoder.safetensors."""
    s = tiny_student()
    torch.manual_seed(2)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    save_encoder(shipped, VideoEncoder(s).state_dict(), dataclasses.asdict(s), {"steps": 5})
    (shipped / ENCODER).unlink()

    out = tmp_path / "out"
    r = run_cli(*PRETRAIN, "--out", out, "--init", shipped)
    assert r.exit_code == 0, r.output
    for name in ("checkpoint.pt", "encoder.pt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=True)
        assert {"model", "student", "summary"} <= set(ckpt)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1


# ---- safetensors ----------------------------------------------------------------------------------------

def test_safetensors_encoder_round_trip(tmp_path):
    s = tiny_student()
    torch.manual_seed(3)
    sd = encoder_state_dict(PretrainVideoTransformer(dataclasses.replace(s, target_dim=8)))
    summary = {"source": "synthetic", "steps": 7, "clips_seen": 14, "recipe": "black+objects", "teacher": None}
    pt, st = save_encoder(tmp_path, sd, dataclasses.asdict(s), summary)
    assert (pt, st) == (tmp_path / ENCODER, tmp_path / ENCODER_SAFETENSORS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENCODER, ENCODER_SAFETENSORS]   # no temporary left

    from safetensors import safe_open
    with safe_open(str(st), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["student"]) == dataclasses.asdict(s) and json.loads(meta["summary"]) == summary

    for path in (st, pt):
        encoder, cfg, got = load_encoder(path)
        assert cfg == s and got == summary
        own = encoder.state_dict()
        assert set(own) == set(sd)
        for k, v in sd.items():
            assert torch.equal(own[k], v), k
    with pytest.raises(UserError, match="--preset small"):
        load_encoder(st, "small")


def test_an_encoder_file_cannot_be_resumed(tmp_path):
    s = tiny_student()
    pt, st = save_encoder(tmp_path, VideoEncoder(s).state_dict(), dataclasses.asdict(s), {})
    for path in (pt, st):
        with pytest.raises(UserError, match="--init"):
            read_resume_checkpoint(path)


def test_a_broken_safetensors_file_is_one_user_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_eval_reads_a_run_folder_with_only_encoder_safetensors(tmp_path, videos):
    s = student_config("tiny", frames=8, size=64)
    torch.manual_seed(4)
    run = tmp_path / "run"
    run.mkdir()
    save_encoder(run, VideoEncoder(s).state_dict(), dataclasses.asdict(s), {"source": "synthetic", "steps": 3})
    (run / ENCODER).unlink()
    out = tmp_path / "o"
    r = run_cli("eval", "--checkpoint", run, "--data", videos, "--out", out, "--cache-dir", tmp_path / "c", *PROBE)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["encoder"]["pretraining"]["steps"] == 3 and m["encoder"]["size"] == 64
