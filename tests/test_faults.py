"""Faults from outside the program: SIGKILL and Ctrl-C mid-run, damaged and foreign shards, and
several `generate` commands sharing one folder. Each ends with data that is whole and byte-identical
to an uninterrupted run, or with one clean `Error:` line.

Processes are real (`python -m smile_synth`, started with subprocess.Popen) so that signals, locks
and the kernel's cleanup of a killed process's locks are the real ones. Malicious checkpoints at
every loading entry point (including `pretrain --resume auto`) are covered by tests/test_safe_loading.py.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, recipe, run_cli, run_module, shard_tars

from smile_synth.app.generate import GenerateConfig, generate
from smile_synth.shards import read_json, write_json_atomic

# one dataset for every generate test here: 10 shards of 40 tiny clips (about 1 s of rendering), so a
# signal sent once the first shard exists lands mid-run
GEN = ("--recipe", "black+objects", "--n", 400, "--size", 32, "--frames", 4, "--shard-size", 40, "--quiet")
PROC_TIMEOUT = 120


# ---- helpers ----------------------------------------------------------------------------------------------

def gen_cmd(out: Path, *extra, seed: int = 0, workers: int = 1) -> list[str]:
    args = ("generate", "--out", out, *GEN, "--seed", seed, "--workers", workers, *extra)
    return [sys.executable, "-m", "smile_synth", *map(str, args)]


def start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = PROC_TIMEOUT) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a started process; kills it if it overruns."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {timeout} s\n{out}\n{err}")
    return proc.returncode, out, err


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> bool:
    """Poll `condition()` until true (True), or until `proc` exits first (False); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    pytest.fail(f"timed out waiting for {what}")


def digests(folder: Path, manifest: bool = True) -> dict[str, str]:
    """sha256 of every shard, sidecar, dataset.json (and manifest.json) in a dataset folder."""
    names = [p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")
             and (manifest or p.name != "manifest.json")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(names)}


def shard_digests(folder: Path) -> dict[str, str]:
    return {k: v for k, v in digests(folder).items() if k.startswith("shard-")}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("shard-*.tar.tmp*"))


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def assert_clean_error(rc: int, stderr: str, *needles: str) -> str:
    """A subprocess failed with exit 2 and exactly one Error: line, no traceback."""
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str]:
    """Digests of an uninterrupted single-process run with GEN, seed 0."""
    out = tmp_path_factory.mktemp("reference") / "data"
    rc, stdout, stderr = finish(start(gen_cmd(out)))
    assert rc == 0 and "complete" in stdout, stderr
    assert len(shard_tars(out)) == 10
    return digests(out)


def shards_of(ref: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in ref.items() if k.startswith("shard-")}


# ---- 1. SIGKILL mid-generate --------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_sigkill_mid_generate_then_rerun_gives_identical_shards(tmp_path, reference):
    out = tmp_path / "data"
    proc = start(gen_cmd(out))
    wait_for(lambda: bool(shard_tars(out)), proc, "the first shard")
    proc.kill()                                     # SIGKILL: no cleanup code runs
    finish(proc)
    killed_with = len(shard_tars(out))
    rc, stdout, stderr = finish(start(gen_cmd(out)))
    assert rc == 0 and "complete" in stdout, stderr
    assert killed_with < 10 or proc.returncode == 0    # (in practice the kill lands after 1-2 of 10 shards)
    assert digests(out) == reference
    assert leftovers(out) == []


# ---- 2. SIGKILL mid-pretrain ---------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_sigkill_mid_pretrain_then_resume_auto_gives_identical_weights(tmp_path, training_shards):
    def cmd(out, *extra):
        args = ("pretrain", "--source", "synthetic", "--data", training_shards, "--preset", "tiny", "--target", "pixel",
                "--frames", 8, "--size", 64, "--steps", 24, "--save-every", 2, "--batch-size", 2, "--workers", 0,
                "--quiet", "--set", "log_every=1", "--out", out, *extra)
        return [sys.executable, "-m", "smile_synth", *map(str, args)]

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")   # same threads every run: same bits
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    straight = start(cmd(straight_out), env=env)    # side by side: one thread each
    killed = start(cmd(killed_out), env=env)
    wait_for(lambda: (killed_out / "checkpoint.pt").is_file(), killed, "the first checkpoint", timeout=120)
    killed.kill()
    finish(killed)
    rc, _, stderr = finish(straight)
    assert rc == 0, stderr
    if killed.returncode != 0:                      # killed mid-run (else it had finished: still compared below)
        assert killed.returncode == -signal.SIGKILL
        assert not (killed_out / "encoder.pt").exists()
    rc, stdout, stderr = finish(start(cmd(killed_out, "--resume", "auto"), env=env))
    assert rc == 0, stderr
    assert "24 steps" in stdout
    if killed.returncode != 0:
        assert "resuming" in stderr, stderr

    a = torch.load(straight_out / "encoder.pt", map_location="cpu", weights_only=True)["model"]
    b = torch.load(killed_out / "encoder.pt", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys() and a
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, unequal
    ca = torch.load(straight_out / "checkpoint.pt", map_location="cpu", weights_only=True)
    cb = torch.load(killed_out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ca["step"] == cb["step"] == 24
    assert all(torch.equal(v, cb["model"][k]) for k, v in ca["model"].items())
    # the loss of every step, whichever process ran it, is the straight run's
    la = {r["step"]: r["loss"] for r in map(read_json_line, (straight_out / "log.jsonl").read_text().splitlines())}
    lb = {r["step"]: r["loss"] for r in map(read_json_line, (killed_out / "log.jsonl").read_text().splitlines())}
    assert sorted(lb) == sorted(la) == list(range(1, 25))
    assert lb == la


def read_json_line(line: str) -> dict:
    return json.loads(line)


def test_resume_after_a_kill_logs_every_step_once(tmp_path):
    out = tmp_path / "run"
    args = ("pretrain", "--source", "synthetic", "--recipe", "black+objects", "--preset", "tiny", "--target", "pixel",
            "--frames", 4, "--size", 32, "--steps", 4, "--save-every", 2, "--keep-every", 2, "--batch-size", 2,
            "--workers", 0, "--quiet", "--set", "log_every=1", "--out", out)
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    # the state a SIGKILL after logging step 4 but before its checkpoint leaves: checkpoint at step 2, no encoder
    shutil.copy(out / "checkpoint-0000002.pt", out / "checkpoint.pt")
    for name in ("encoder.pt", "encoder.safetensors", "run.json"):
        (out / name).unlink()
    res = run_cli(*args, "--resume", "auto")
    assert res.exit_code == 0, res.output
    steps = [read_json_line(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ---- 3. truncated, empty, garbage and oddly named shards ------------------------------------------------------

@pytest.fixture(scope="module")
def four_shards(tmp_path_factory) -> Path:
    """16 clips of black+objects, 4 frames of 32 px, in 4 shards of 4. Read-only: copy before damaging."""
    out = tmp_path_factory.mktemp("four") / "data"
    generate(GenerateConfig(n=16, out=str(out), recipe=recipe("black+objects"), seed=1, frames=4, size=32,
                            workers=1, shard_size=4), progress=False)
    return out


def cut_inside_a_member(path: Path) -> int:
    """Truncate a shard about halfway, inside a member's data (a cut exactly between two samples is the
    separate case of test_a_shard_cut_between_two_samples_is_noticed). Returns the new size."""
    size = path.stat().st_size
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    m = next(m for m in members if m.offset_data + m.size > size // 2)
    cut = m.offset_data + max(1, m.size // 2)
    with open(path, "r+b") as f:
        f.truncate(cut)
    return cut


@pytest.fixture
def damaged(four_shards, tmp_path) -> Path:
    """four_shards with shard 0 garbage, shard 1 cut in half, shard 2 empty; shard 3 is whole."""
    d = tmp_path / "damaged"
    shutil.copytree(four_shards, d)
    size = (d / "shard-000000.tar").stat().st_size
    (d / "shard-000000.tar").write_bytes(bytes((i * 7 + 3) % 256 for i in range(size)))
    cut_inside_a_member(d / "shard-000001.tar")
    (d / "shard-000002.tar").write_bytes(b"")
    return d


BAD = ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar")


@pytest.mark.timeout(120)
def test_pretrain_skips_bad_shards_and_names_them(damaged, tmp_path):
    res = run_module("pretrain", "--source", "synthetic", "--data", damaged, "--preset", "tiny", "--target", "pixel",
                     "--frames", 4, "--size", 32, "--steps", 2, "--batch-size", 2, "--workers", 0, "--quiet",
                     "--out", tmp_path / "run", timeout=PROC_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert "2 steps" in res.stdout
    assert "Traceback" not in res.stderr
    for name in BAD:
        assert any(name in line and "unreadable" in line for line in res.stderr.splitlines()), (name, res.stderr)
    assert "shard-000003.tar" not in res.stderr
    assert "skipped 3 of 4 shards" in res.stderr
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["summary"]["skipped_shards"]
    assert sorted(r.split(":")[0] for r in recorded) == sorted(BAD)


@pytest.mark.timeout(120)
def test_preview_skips_bad_shards_and_names_them(damaged, tmp_path):
    png = tmp_path / "x.png"
    res = run_module("preview", "--shards", damaged, "--out", png, "--n", 16, timeout=PROC_TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert png.is_file() and "wrote" in res.stdout
    assert "Traceback" not in res.stderr
    for name in BAD:
        assert any(name in line and "unreadable" in line for line in res.stderr.splitlines()), (name, res.stderr)
    # the whole shard and the samples of the cut one before the cut are shown
    shown = int(res.stdout.split("(")[1].split()[0])
    assert 4 <= shown < 8


@pytest.mark.parametrize("verify", [False, True])
def test_inspect_fails_on_bad_shards_and_names_them(damaged, verify):
    res = run_cli("inspect", damaged, *(["--verify"] if verify else []))
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.output.splitlines()
    for name in BAD:
        assert any(line.startswith(f"CORRUPT {name}") for line in lines), (name, res.output)
    assert not any("shard-000003.tar" in line for line in lines if line.startswith("CORRUPT"))
    assert "FAILED" in lines[-1]


@pytest.mark.parametrize("odd", ["hello.txt", "000000005", "readme.000000005.json"])
def test_inspect_gives_a_plain_reason_for_an_oddly_named_member(four_shards, tmp_path, odd):
    d = tmp_path / "odd"
    shutil.copytree(four_shards, d)
    tar_path = d / "shard-000001.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, data in members:
            if m.name == "000000005.json":
                m.name = odd
            tar.addfile(m, io.BytesIO(data))
    for verify in ([], ["--verify"]):
        res = run_cli("inspect", d, *verify)
        assert res.exit_code == 1, res.output
        corrupt = [line for line in res.output.splitlines() if line.startswith("CORRUPT")]
        assert len(corrupt) == 1 and corrupt[0].startswith("CORRUPT shard-000001.tar"), res.output
        assert repr(odd) in corrupt[0] and "not named" in corrupt[0], corrupt[0]
        for noise in ("StopIteration", "invalid literal", "Traceback", "KeyError"):
            assert noise not in res.output


def test_a_shard_cut_between_two_samples_is_noticed(four_shards, tmp_path):
    d = tmp_path / "cut"
    shutil.copytree(four_shards, d)
    tar_path = d / "shard-000001.tar"
    with tarfile.open(tar_path) as tar:
        second = next(m for m in tar.getmembers() if m.name.startswith("000000005."))
    with open(tar_path, "r+b") as f:
        f.truncate(second.offset)                 # exactly where sample 5's first header starts
    res = run_cli("inspect", d)
    assert res.exit_code == 1 and any(line.startswith("CORRUPT shard-000001.tar") for line in res.output.splitlines()), \
        res.output


# ---- 4. foreign shards ---------------------------------------------------------------------------------------

def generate_into(folder: Path):
    """black+objects with the same n, shard size and geometry as small_dataset's, into `folder`."""
    return run_cli("generate", "--out", folder, "--recipe", "black+objects", "--set", "background.bank_size=2",
                   "--n", 7, "--shard-size", 3, "--frames", 4, "--size", 64, "--workers", 1, "--quiet")


def only_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    errors = error_lines(res.output)
    assert len(errors) == 1, res.output
    return errors[0]


def test_foreign_shards_with_their_sidecars_are_refused(small_dataset, tmp_path):
    src = small_dataset[0]
    d = tmp_path / "mix"
    d.mkdir()
    for name in ("shard-000000", "shard-000001"):
        shutil.copy(src / f"{name}.tar", d)
        shutil.copy(src / f"{name}.json", d)
    before = digests(d)
    line = only_error_line(generate_into(d))
    assert "shard-000000.tar" in line and "another dataset" in line and "fingerprint" in line, line
    assert digests(d) == before                    # no new shard, no dataset.json, nothing changed
    assert shard_tars(d) == ["shard-000000.tar", "shard-000001.tar"]


def test_foreign_shards_without_sidecars_are_refused(small_dataset, tmp_path):
    src = small_dataset[0]
    d = tmp_path / "bare"
    d.mkdir()
    for name in ("shard-000000.tar", "shard-000001.tar"):
        shutil.copy(src / name, d)
    before = digests(d)
    line = only_error_line(generate_into(d))
    assert "shard-000000.tar" in line and "no fingerprint" in line, line
    assert digests(d) == before


def test_inspect_verify_reports_a_shard_with_another_fingerprint(small_dataset, tmp_path):
    d = tmp_path / "edited"
    shutil.copytree(small_dataset[0], d)
    side = d / "shard-000001.json"
    data = read_json(side)
    data["fingerprint"] = "0123456789abcdef"
    write_json_atomic(side, data)
    res = run_cli("inspect", d, "--verify")
    assert res.exit_code == 1, res.output
    foreign = [line for line in res.output.splitlines() if line.startswith("FOREIGN")]
    assert len(foreign) == 1 and foreign[0].startswith("FOREIGN shard-000001.tar"), res.output
    assert "0123456789abcdef" in foreign[0]
    assert "1 foreign" in res.output.splitlines()[-1]


# ---- 5. two generates into one folder ------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_the_same_generate_twice_at_once_gives_one_clean_dataset(tmp_path, reference):
    for attempt in range(2):                       # twice, to give races two chances
        out = tmp_path / f"data{attempt}"
        procs = [start(gen_cmd(out)), start(gen_cmd(out))]
        results = [finish(p) for p in procs]
        for rc, stdout, stderr in results:
            assert rc == 0, stderr
            assert "complete" in stdout and "400 clips" in stdout, stdout
            assert "Traceback" not in stderr
        assert shard_digests(out) == shards_of(reference), attempt
        assert digests(out, manifest=False) == {k: v for k, v in reference.items() if k != "manifest.json"}
        assert read_json(out / "manifest.json")["complete"]
        assert leftovers(out) == []


@pytest.mark.timeout(180)
def test_two_seeds_at_once_leave_exactly_one_consistent_dataset(tmp_path):
    out = tmp_path / "data"
    procs = {seed: start(gen_cmd(out, seed=seed)) for seed in (0, 1)}
    results = {seed: finish(p) for seed, p in procs.items()}
    winners = [seed for seed, (rc, _, _) in results.items() if rc == 0]
    assert len(winners) == 1, results
    winner, loser = winners[0], 1 - winners[0]
    rc, stdout, stderr = results[winner]
    assert "complete" in stdout and "400 clips" in stdout, stdout
    rc, stdout, stderr = results[loser]
    line = assert_clean_error(rc, stderr)
    assert "complete" not in stdout
    assert str(out) in line and ("other settings" in line), line
    assert read_json(out / "dataset.json")["seed"] == winner
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code == 0, res.output
    assert "400 clips in 10 shards" in res.output and "verify: OK" in res.output
    assert leftovers(out) == []


# ---- 6. ranks side by side -----------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_two_ranks_write_one_folder_side_by_side(tmp_path, reference):
    out = tmp_path / "data"
    procs = [start(gen_cmd(out, "--rank", r, "--world-size", 2)) for r in (0, 1)]
    for rc, stdout, stderr in (finish(p) for p in procs):
        assert rc == 0, stderr
        assert "Traceback" not in stderr
    assert shard_digests(out) == shards_of(reference)
    assert digests(out, manifest=False) == {k: v for k, v in reference.items() if k != "manifest.json"}
    assert leftovers(out) == []
    res = run_cli("inspect", out, "--verify")
    assert res.exit_code == 0, res.output


# ---- 7. Ctrl-C -------------------------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_ctrl_c_with_workers_is_one_error_line_and_a_rerun_completes(tmp_path, reference):
    out = tmp_path / "data"
    proc = start(gen_cmd(out, workers=2), start_new_session=True)   # its own process group, as in a terminal
    running = wait_for(lambda: bool(shard_tars(out)), proc, "the first shard")
    assert running and proc.poll() is None, "generate finished before Ctrl-C could be sent"
    os.killpg(proc.pid, signal.SIGINT)             # the terminal sends Ctrl-C to the parent and its workers
    rc, stdout, stderr = finish(proc)
    assert rc != 0, stdout
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and "interrupted" in errors[0], stderr
    assert "complete" not in stdout
    rc, stdout, stderr = finish(start(gen_cmd(out, workers=2)))
    assert rc == 0 and "complete" in stdout, stderr
    assert digests(out) == reference
    assert leftovers(out) == []
