"""Loading a CLIP teacher never runs code from the file (training/teacher.py, README: "loading a file never
runs code from it"): every shape of `--teacher-pretrained FILE` (a whole open_clip model, or only its image
tower with keys bare or under "visual."; plain or under "state_dict") with a malicious pickle beside
the true weights is refused with one line, and the payload's marker file never appears. (That each layout
loads without the payload is tested in test_targets.py and test_pretrain_edges.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, run_cli
from test_safe_loading import Payload

from smile_synth.errors import UserError
from training.teacher import load_teacher

TEACHER = "ViT-S-32-alt"    # open_clip's quickest ViT to build: each refusal builds it twice


def shaped(whole: dict, shape: str) -> dict:
    """The weights of one file layout `--teacher-pretrained` accepts."""
    tower = {k: v for k, v in whole.items() if k.startswith("visual.")}
    return {"whole model": whole,
            "image tower, visual. keys": tower,
            "image tower, bare keys": {k.removeprefix("visual."): v for k, v in tower.items()}}[shape]


@pytest.fixture(scope="module")
def clip_weights() -> dict:
    """A randomly initialised TEACHER's whole-model state dict (no download)."""
    import warnings

    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(TEACHER, pretrained=None).state_dict()


def write_evil(path: Path, weights: dict, wrapped: bool, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = dict(weights, extra=Payload(marker))
    torch.save({"state_dict": sd, "epoch": 3} if wrapped else sd, path)
    return path


@pytest.mark.parametrize("shape,wrapped", [("whole model", False), ("image tower, visual. keys", True),
                                           ("image tower, bare keys", False)])
def test_a_malicious_teacher_file_is_refused_and_runs_nothing(clip_weights, tmp_path, shape, wrapped):
    marker = tmp_path / "PWNED"
    path = write_evil(tmp_path / "evil.pt", shaped(clip_weights, shape), wrapped, marker)
    with pytest.raises(UserError) as refused:
        load_teacher(TEACHER, str(path), tubelet=2, out_grid=(2, 2))
    assert str(path) in refused.value.one_line() and "\n" not in str(refused.value)
    assert not marker.exists(), "the teacher file's code ran"


def test_pretrain_refuses_a_malicious_teacher_pretrained_file(clip_weights, tmp_path):
    marker = tmp_path / "PWNED"
    path = write_evil(tmp_path / "evil.pt", clip_weights, False, marker)
    out = tmp_path / "out"
    res = run_cli("pretrain", "--source", "synthetic", "--recipe", "black+objects", "--preset", "tiny",
                  "--target", "clip", "--teacher", TEACHER, "--teacher-pretrained", path, "--frames", 4,
                  "--size", 32, "--steps", 1, "--batch-size", 2, "--workers", 0, "--quiet", "--out", out)
    assert_user_error(res, str(path))
    assert not marker.exists(), "the teacher file's code ran"
    assert not (out / "checkpoint.pt").exists()
