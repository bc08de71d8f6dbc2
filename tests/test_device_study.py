"""The device script of the GPU study (benchmarks/device_study.sh, bench_device.py, device_prepare.py; issue 21).

The dry run is the device command on CPU, a few steps each: it must finish, return at most the 8 files
the device sends back, and hold the study's report and the throughput table. The table's FLOPs are
checked against the analytic count of bench_train (forward and backward: three forward passes); the
preparation's checks (requirements the device lacks, the travelling size) against hand-made wheels and
a scratch git repository.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO

from smile_synth.errors import UserError

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_device  # noqa: E402
import device_prepare  # noqa: E402
from bench_train import step_flops  # noqa: E402

from training.masking import masked_count  # noqa: E402
from training.models import build_student  # noqa: E402

MAX_FILES = 8                     # what the device sends back from $OUT


def test_the_dry_run_finishes_with_the_report_and_the_table_in_at_most_8_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/device_study.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=580)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES and all((out / f).is_file() for f in files), files
    assert {"device_study.log", "report.md", "results.json", "bench.md"} <= set(files), files
    for step in ("setup", "study", "tests", "bench"):
        assert f"{step}: ok in" in log, step
    bench = json.loads((out / "bench.json").read_text()) if "bench.json" in files else None
    if bench is not None:   # the 8-file cap may leave it out; bench.md then carries the same rows
        assert all(row["status"] == "ok" for key in ("renderer", "pretraining", "data_wait") for row in bench[key])
    assert "| ok |" in (out / "bench.md").read_text()


def test_steps_past_the_budget_are_reported_not_run(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "BUDGET_S": "5"}   # under any step's 10 s
    done = subprocess.run(["bash", "benchmarks/device_study.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    for step in ("setup", "study", "tests", "bench"):
        assert f"  {step}: not run (out of time)" in done.stdout, step
    assert sorted(p.name for p in out.iterdir()) == ["device_study.log"]


def test_an_unknown_option_is_one_line_and_runs_nothing(tmp_path):
    done = subprocess.run(["bash", "benchmarks/device_study.sh", "--bogus"], cwd=REPO, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: unknown option --bogus; use --prepare, --dry-run, --pilot, --skip-study or --help"]
    assert not (tmp_path / "out").exists()


def test_a_step_flops_count_backward_and_forward_as_the_analytic_count():
    """FlopCounterMode over one step ~ 3 x the forward matmuls (bench_train.step_flops): a count of the
    forward alone would be a third of it."""
    torch.manual_seed(0)
    settings = bench_device.DRY
    row = bench_device.pretrain_row("tiny", "hog", torch.device("cpu"), settings, Path("unused"), matmul=1.0)
    model = build_student("tiny", frames=settings.frames, size=settings.size)
    c = model.cfg
    analytic = step_flops(model, row["batch"], c.num_tokens - masked_count(c.grid, 0.8), c.num_tokens)
    assert 0.8 < row["step_tflop"] * 1e12 / analytic < 1.25, (row["step_tflop"] * 1e12, analytic)
    assert row["clips_per_s"] > 0 and row["mfu"] is None       # no known peak for a CPU


# ---- preparation ----------------------------------------------------------------------------------

def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version) + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_requirements_missing_on_the_device_are_named_and_extras_and_markers_skipped(tmp_path):
    wheels = [fake_wheel(tmp_path, "teacher_lib", "1.0", [
        "torch>=2.0", "ftfy", "Not_On_Device>=1", 'pytest-split; extra == "test"',
        "old-backport; python_version < '3.8'", "linux-only; sys_platform == 'linux'"]),
        fake_wheel(tmp_path, "ftfy", "6.3.1", ["wcwidth"])]
    assert device_prepare.missing_on_device(wheels) == [
        "teacher_lib-1.0-py3-none-any.whl needs Not_On_Device",
        "teacher_lib-1.0-py3-none-any.whl needs linux-only",
        "ftfy-6.3.1-py3-none-any.whl needs wcwidth"]
    fake_wheel(tmp_path, "wcwidth", "0.2", [])
    with pytest.raises(UserError, match="not on the device and not carried: teacher_lib"):
        device_prepare.check_wheels(tmp_path)


def test_two_versions_of_a_wheel_are_refused(tmp_path):
    fake_wheel(tmp_path, "ftfy", "6.3.1", [])
    fake_wheel(tmp_path, "ftfy", "6.2.0", [])
    with pytest.raises(UserError, match="two versions of ftfy"):
        device_prepare.check_wheels(tmp_path)


def test_the_travelling_size_counts_tracked_untracked_and_carried_files_not_ignored_ones(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/.whl/\n/big.bin\n")
    (tmp_path / "tracked.py").write_bytes(b"x" * 1000)
    git("add", ".gitignore", "tracked.py")
    (tmp_path / "untracked.txt").write_bytes(b"y" * 300)
    (tmp_path / "big.bin").write_bytes(b"z" * 5000)                # ignored, not carried: stays behind
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "a.whl").write_bytes(b"w" * 700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = device_prepare.travelling_sizes(tmp_path, (".whl", ".devdata"))
    assert sizes == {"working tree": 1000 + 300 + len("/.whl/\n/big.bin\n"), ".whl": 700, ".devdata": 0}
