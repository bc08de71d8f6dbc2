"""Shared fixtures and helpers for the smile-synth test suite.

Everything is kept tiny (4-8 frames, 32-64 px, texture banks of 2) so the whole suite runs in
well under three minutes on two cores.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from generators import get_recipe
from smile_synth.app.cli import cli

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE = 4, 64
CHEAP = ["background.bank_size=2"]  # keeps the noise/fractal texture banks cheap to build
# the recipes that render a background themselves ("overlay" needs given frames)
RENDER_RECIPES = ["black+objects", "noise+objects", "image+objects", "fractal+objects", "mixed"]
ALL_RECIPES = RENDER_RECIPES + ["overlay"]
# keys encode_sample adds to a clip's meta
STORAGE_META = {"num_objects", "frames", "size"}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one); run them with `pytest -m gpu`")


def recipe(name: str, *overrides: str):
    """A named recipe with cheap texture banks plus any extra KEY=VALUE overrides."""
    return get_recipe(name, [*CHEAP, *overrides])


def clip_digest(clip) -> dict[str, str]:
    """Hashes of every part of a clip, for comparing clips across processes."""
    h = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return {
        "video": h(clip.video), "masks": h(clip.masks), "boxes": h(clip.boxes),
        "shapes": repr((clip.video.shape, clip.video.dtype.str, clip.masks.shape, clip.boxes.shape)),
        "meta": json.dumps(clip.meta, sort_keys=True),
    }


def run_cli(*args: str, env: dict[str, str] | None = None):
    """Invoke the click CLI in-process (catching exceptions, like a user's terminal would show)."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=True)


def run_module(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m smile_synth ARGS` in a fresh process (the real entry point)."""
    return subprocess.run([sys.executable, "-m", "smile_synth", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kw)


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter (fresh caches, nothing inherited)."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_user_error(result, *needles: str) -> str:
    """The CLI failed cleanly: non-zero exit, no traceback, one 'Error:' line naming the problem."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed with {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def read_samples(path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of every sample in a shard folder (fails on duplicate keys)."""
    from smile_synth.shards import iter_samples

    out: dict[str, dict[str, bytes]] = {}
    for _, key, sample in iter_samples(path):
        assert key not in out, f"duplicate sample {key}"
        out[key] = sample
    return out


def rewrite_member(tar_path: Path, member_name: str, change) -> None:
    """Rewrite a tar in place with `change(bytes) -> bytes` applied to one member."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert member_name in [m.name for m, _ in members], member_name
    tmp = tar_path.with_name(tar_path.name + ".rewrite")
    with tarfile.open(tmp, "w") as tar:
        for m, data in members:
            if m.name == member_name:
                data = change(data)
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    os.replace(tmp, tar_path)


def shard_tars(path: Path) -> list[str]:
    return sorted(p.name for p in Path(path).glob("shard-*.tar"))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A finished dataset made with the Python API: 'mixed', n=7 in shards of 3 (the last one short).

    Read-only: tests that damage data must copy it first."""
    from smile_synth.app.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("data") / "mixed"
    cfg = GenerateConfig(n=7, out=str(out), recipe=recipe("mixed"), seed=5, frames=FRAMES, size=SIZE,
                         workers=1, shard_size=3)
    manifest = generate(cfg, progress=False)
    return out, cfg, manifest


def tracks_of(r, seed: int, index: int, frames: int, size: int):
    """The object tracks render_clip draws for clip `index` (same random stream, same resources)."""
    from generators.objects import make_tracks
    from generators.resources import resources_for
    from generators.seeding import clip_rngs

    _, obj_rng = clip_rngs(r.key, seed, index)
    return make_tracks(obj_rng, r, frames, size, resources_for(r, seed, size))


# ---- fixtures of the `training` package tests (test_masking/models/targets/trainer_data/pretrain) ----

def write_test_video(path, frames: int = 24, width: int = 96, height: int = 64, seed: int = 0,
                     codec: str = "libx264") -> Path:
    """A small real video file written with PyAV: a bright square moving over a noisy gradient."""
    import av

    rng = np.random.default_rng(seed)
    path = Path(path)
    base = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    base = base + rng.uniform(0, 40, size=(1, 1, 3)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            img = base + rng.normal(0, 4, size=base.shape).astype(np.float32)
            x = (4 + 3 * t) % max(1, width - 16)
            img[16:32, x:x + 16] = (255, 60 + 5 * seed, 30)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory) -> list[Path]:
    """Three good little .mp4 files (24 frames, 96x64)."""
    root = tmp_path_factory.mktemp("videos")
    return [write_test_video(root / f"good{i}.mp4", seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory) -> list[Path]:
    """A missing path, a zero-byte file and a file of garbage bytes named .mp4."""
    root = tmp_path_factory.mktemp("bad_videos")
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return [root / "missing.mp4", root / "empty.mp4", root / "garbage.mp4"]


@pytest.fixture(scope="session")
def training_shards(tmp_path_factory):
    """12 clips of black+objects, 8 frames of 64 px, in shards of 5 (made with the Python API). Read-only."""
    from smile_synth.app.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("train_shards") / "black"
    generate(GenerateConfig(n=12, out=str(out), recipe=recipe("black+objects"), seed=3, frames=8, size=64,
                            workers=1, shard_size=5), progress=False)
    return out


@pytest.fixture(scope="session")
def clip_teacher_file(tmp_path_factory) -> Path:
    """A randomly initialised open_clip ViT-S-16 (no download), saved as a local state-dict file."""
    import warnings

    import open_clip
    import torch

    torch.manual_seed(1234)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-S-16", pretrained=None)
    path = tmp_path_factory.mktemp("teacher") / "vit_s16_random.pt"
    torch.save(model.state_dict(), path)
    return path
