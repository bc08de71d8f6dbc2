"""What a new user or an attacker gets wrong (issue 23, every failed row of the reliability audit): each ends
in one clear line and a non-zero exit, or in the documented behaviour, never in a traceback. Every broken or
tampered file is made here.

Part 1, runs, options and data (rows L2, E7, F1-F18, P6, P13, W4-W5, O1-O3, E8, T5-T7, L5): the tiny preset at
4 frames x 32 px, one step, one test view, --workers 0.
Part 2, model files (rows C*, I*, S*, X2, X6, P9): a downloaded transformers folder, a safetensors file or a
checkpoint is untrusted input; each tampered file is built from a tiny model exported once per module with
the project's own `export`, and names the file and the field at fault. The reader's seek row (D1) is
tests/test_reader_seek.py.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_user_error, run_cli, write_test_video

from eval.finetune.model import build_classifier
from smile_synth.atomic import temporaries_of
from smile_synth.errors import UserError, one_line, printable
from smile_synth.locks import FolderLocks, run_folder
from training.checkpoint import MAX_LABEL_CHARS, save_safetensors

# fine-tuning from a random init (labels task), and pretraining rendered clips with pixel targets
FT = ["--random-init", "--preset", "tiny", "--frames", 4, "--size", 32, "--test-clips", 1, "--test-crops", 1,
      "--batch-size", 2, "--workers", 0, "--steps", 1, "--quiet"]
PRE = ["--recipe", "black+objects", "--set", "background.bank_size=2", "--target", "pixel", "--frames", 4, "--size", 32,
       "--steps", 1, "--batch-size", 2, "--workers", 0, "--quiet"]
EVAL = ["--eval-only", "--test-clips", 1, "--test-crops", 1, "--workers", 0, "--quiet"]


def write_list(path: Path, entries) -> Path:
    """A video list: one 'path label' line per (path, label)."""
    path.write_text("".join(f"{p} {label}\n" for p, label in entries))
    return path


# ----------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def lists(tmp_path_factory, test_videos) -> dict[str, Path]:
    """Labelled lists of the session's small videos: train (2 videos, labels 0 and 1), test (the third)."""
    root = tmp_path_factory.mktemp("lists")
    a, b, c = test_videos
    return {"train": write_list(root / "train.txt", [(a, 0), (b, 1)]), "test": write_list(root / "test.txt", [(c, 0)])}


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory, test_videos) -> list[Path]:
    """Six unreadable videos: truncated, random bytes, empty, text, a folder, and one that is missing."""
    root = tmp_path_factory.mktemp("unreadable")
    data = test_videos[0].read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 3])
    (root / "garbage.mp4").write_bytes(os.urandom(5000))
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n")
    (root / "folder.mp4").mkdir()
    return [root / n for n in ("truncated.mp4", "garbage.mp4", "empty.mp4", "text.mp4", "folder.mp4", "missing.mp4")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lists) -> Path:
    """A one-step fine-tuning run (its folder), trained on lists["train"] and tested on lists["test"]."""
    out = tmp_path_factory.mktemp("trained") / "ft"
    r = run_cli("finetune", *FT, "--data", lists["train"], "--test-data", lists["test"], "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A pretraining run's folder as the trainer leaves it (encoder.pt, checkpoint.pt), without training."""
    from training.checkpoint import save_encoder
    from training.models import build_student, encoder_state_dict

    model = build_student("tiny", frames=4, size=32)
    out = tmp_path_factory.mktemp("pretrained")
    student = dataclasses.asdict(model.cfg)
    save_encoder(out, encoder_state_dict(model), student, {"steps": 1})
    torch.save({"model": model.state_dict(), "optimizer": {}, "scaler": {}, "step": 1, "student": student,
                "config": {"target": "pixel"}, "summary": {"steps": 1}}, out / "checkpoint.pt")
    return out


# ------------------------------------------------------------------------- L2: one run-folder lock

HOLDER = """import sys, time
from smile_synth.locks import run_folder
with run_folder(sys.argv[1], "pretrain"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_into_a_folder_in_use_stops_with_one_line_naming_the_other(tmp_path, lists):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in (["pretrain", *PRE], ["finetune", *FT, "--data", lists["train"], "--test-data", lists["test"]]):
            r = run_cli(*command, "--out", out)
            assert r.exit_code == 2
            assert_user_error(r, f"{out} is in use by another run", f"pid {holder.pid}", "another --out")
        assert not (out / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the killed holder's lock: the next run goes ahead, and releases the folder when done
    r = run_cli("pretrain", *PRE, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "encoder.pt").is_file()
    with run_folder(out, "pretrain"):
        pass


def test_fold_runs_share_a_folder_but_not_a_fold(tmp_path):
    """finetune --fold K locks the folder shared and its fold alone: other folds run side by side; the
    same fold, or a run of every fold, is refused."""
    with run_folder(tmp_path, "finetune", "fold-0"):
        with run_folder(tmp_path, "finetune", "fold-1"):
            pass
        for part, where in (("fold-0", tmp_path / "fold-0"), (None, tmp_path)):
            with pytest.raises(UserError, match=f"{where} is in use by another run \\(pid {os.getpid()} "):
                with run_folder(tmp_path, "finetune", part):
                    pass


# ------------------------------------------------------------------ E7: --eval-only's own folder

def test_eval_only_writes_beside_the_run_it_tests_never_into_it(trained, lists):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    r = run_cli("finetune", *EVAL, "--checkpoint", trained, "--data", lists["train"])
    assert r.exit_code == 0, r.output
    beside = trained.parent / f"{trained.name}-eval"
    assert str(beside / "metrics.json") in r.output
    assert json.loads((beside / "metrics.json").read_text())["split"] == "eval-only on --data"
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before
    for checkpoint in (trained, trained / "classifier.safetensors"):     # --out the run itself: refused
        r = run_cli("finetune", *EVAL, "--checkpoint", checkpoint, "--data", lists["train"], "--out", trained)
        assert r.exit_code == 2
        assert_user_error(r, f"--eval-only would write its metrics.json and confusion.png into {trained}",
                          f"{trained}-eval")
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


# ------------------------------------------------------------------------ F1, F2, F4, P13: data

@pytest.mark.parametrize("bad", [1, 6])
def test_videos_rejected_up_front_count_towards_max_bad_share(tmp_path, lists, test_videos, unreadable, bad):
    """F1 (one of three unreadable) and F2 (six of eight: truncated, garbage, empty, text, folder, missing)."""
    train = write_list(tmp_path / "train.txt", [(test_videos[0], 0), (test_videos[1], 1)]
                       + [(p, i % 2) for i, p in enumerate(unreadable[-bad:])])
    r = run_cli("finetune", *FT, "--data", train, "--test-data", lists["test"], "--out", tmp_path / "ft")
    assert r.exit_code == 2
    line = assert_user_error(r, f"of the {2 + bad} training videos are unreadable", "--max-bad-share 0.1")
    assert not (tmp_path / "ft" / "checkpoint.pt").exists(), line


def test_a_test_label_absent_from_training_is_one_line(tmp_path, lists, test_videos):
    test = write_list(tmp_path / "test5.txt", [(test_videos[2], 5)])
    r = run_cli("finetune", *FT, "--data", lists["train"], "--test-data", test, "--out", tmp_path / "ft")
    assert r.exit_code == 2
    assert_user_error(r, "has labels that no --data video has (5)")


def test_the_same_video_in_train_and_test_needs_allow_overlap(tmp_path, lists):
    r = run_cli("finetune", *FT, "--data", lists["train"], "--test-data", lists["train"], "--out", tmp_path / "ft")
    assert r.exit_code == 2
    assert_user_error(r, "2 of the 2 --test-data videos are also in --data", "--allow-overlap")
    r = run_cli("finetune", *FT, "--data", lists["train"], "--test-data", lists["train"], "--allow-overlap",
                "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------- F10-F17: options

@pytest.mark.parametrize("option, value, needle", [
    ("--lr", "nan", "--lr nan must be a finite number > 0"),                          # F10
    ("--epochs", "inf", "--epochs inf must be a finite number > 0"),                   # F11
    ("--epochs", "nan", "--epochs nan must be a finite number > 0"),                   # F12
    ("--warmup-epochs", "inf", "--warmup-epochs inf must be a finite number >= 0"),    # F13
    ("--weight-decay", "nan", "--weight-decay nan must be a finite number >= 0"),      # F15
    ("--min-lr", "-inf", "--min-lr -inf must be a finite number >= 0"),
    ("--clip-grad", "nan", "--clip-grad nan must be a finite number > 0"),
    ("--drop-path", "nan", "--drop-path nan must be a finite number in [0, 1)"),
    ("--size", "160000", "--size 160000 must be in [8, 2048]"),                        # F16
    ("--frames", "2000000000", "--frames 2000000000 must be in [2, 512]"),             # F17
    ("--workers", "100000", "--workers 100000 must be in [0, 256]"),
    ("--batch-size", "1000000000", "more than this machine's"),
    ("--test-clips", "1000000000", "more than this machine's"),
])
def test_finetune_numbers_out_of_range_get_one_line(tmp_path, lists, option, value, needle):
    r = run_cli("finetune", *FT, "--data", lists["train"], "--test-data", lists["test"], "--out", tmp_path / "ft",
                option, value)
    assert r.exit_code == 2
    assert_user_error(r, needle)


@pytest.mark.parametrize("args, needle", [
    (["--lr", "nan"], "--lr nan must be a finite number > 0"),
    (["--warmup", "inf"], "--warmup inf must be a finite number >= 0"),
    (["--set", "weight_decay=.nan"], "--weight-decay nan must be a finite number >= 0"),
    (["--clip-grad", "inf"], "--clip-grad inf must be a finite number > 0"),
    (["--size", "160000"], "--size 160000 must be in [16, 2048]"),
    (["--frames", "2000000000"], "--frames 2000000000 must be in [2, 512]"),
    (["--batch-size", "1000000000"], "more than this machine's"),
    (["--size", "16"], "--mask-ratio 0.8 masks 0 of the 1 tokens"),       # one token per frame slot: none to predict
    (["--mask-ratio", "0.2"], "masks 0 of the 4 tokens"),                 # 32 px: floor(0.2 x 4) = 0
])
def test_pretrain_numbers_out_of_range_get_one_line(tmp_path, args, needle):
    r = run_cli("pretrain", *PRE, "--out", tmp_path / "pre", *args)
    assert r.exit_code == 2
    assert_user_error(r, needle)


@pytest.mark.parametrize("command", [["generate", "--n", 2, "--out"], ["preview", "--recipe", "black+objects", "--out"]])
@pytest.mark.parametrize("args, needle", [
    (["--frames", "2000000000"], "--frames 2000000000 must be in [2, 512]"),
    (["--size", "160000"], "--size 160000 must be a positive multiple of 16 (the patch size) up to 2048"),
])
def test_generate_and_preview_sizes_have_upper_bounds(tmp_path, command, args, needle):
    """F16/F17 for the renderers: an absurd clip size is one line, not an allocator traceback."""
    r = run_cli(*command, tmp_path / "out.png", *args)
    assert r.exit_code == 2
    assert_user_error(r, needle)


def test_more_folds_than_the_data_makes_reports_the_real_number(tmp_path, test_videos, caplog):
    """F18: 3 source videos make 3 folds whatever --folds says; the run says so and reports 3-fold."""
    data = write_list(tmp_path / "all.txt", [(v, 0) for v in test_videos])
    out = tmp_path / "ft"
    r = run_cli("finetune", *FT, "--task", "arrow-of-time", "--windows", 2, "--data", data, "--folds", 20, "--fold", 0,
                "--out", out)
    assert r.exit_code == 0, r.output
    assert "--folds 20: the data's 3 source videos make only 3 folds" in caplog.text
    assert "3-fold by source video (fold 0 only)" in r.output and "20-fold" not in r.output
    assert json.loads((out / "metrics.json").read_text())["split"] == "3-fold by source video (fold 0 only)"


# ---------------------------------------------------------------------------------- W4, W5: disk full

def block_with_dev_full(path: Path) -> Path:
    """Make `replacing`'s temporary file of `path` (in this process) a link to /dev/full, whose writes fail
    with ENOSPC, as a full disk's do."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.symlink_to("/dev/full")
    return tmp


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_partial_file(tmp_path, lists, command):
    out = tmp_path / "run"
    tmp = block_with_dev_full(out / "checkpoint.pt")
    args = PRE if command == "pretrain" else [*FT, "--data", lists["train"], "--test-data", lists["test"]]
    r = run_cli(command, *args, "--out", out)
    assert r.exit_code == 2
    assert_user_error(r, f"disk full while writing {out / 'checkpoint.pt'}", "it needs about", "MB", "free in")
    assert not tmp.exists() and not temporaries_of(out / "checkpoint.pt") and not (out / "checkpoint.pt").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (root only; skipped where it cannot be mounted)."""
    folder = tmp_path / "small"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_really_full_disk_is_one_line_for_torch_and_safetensors_files(small_disk):
    from training.checkpoint import save_atomic, save_safetensors

    weights = {"w": torch.zeros(2_000_000)}                   # 8 MB, twice the disk
    for save, name in ((save_atomic, "checkpoint.pt"), (save_safetensors, "encoder.safetensors")):
        with pytest.raises(UserError, match=f"disk full while writing {small_disk / name} "
                                            r"\(it needs about 8.0 MB, 4.\d MB free in"):
            save(weights, small_disk / name)
    assert sorted(p.name for p in small_disk.iterdir()) == []


def test_a_full_disk_in_any_other_writer_is_one_line(trained, lists, tmp_path, monkeypatch):
    """The CLI's last line of defence: an OSError ENOSPC from a writer that does not report it itself."""
    import smile_synth.plots

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "eval" / "confusion.png"))

    monkeypatch.setattr(smile_synth.plots, "confusion_picture", no_space)
    r = run_cli("finetune", *EVAL, "--checkpoint", trained, "--data", lists["train"], "--out", tmp_path / "eval")
    assert r.exit_code == 2
    assert_user_error(r, f"disk full while writing {tmp_path / 'eval' / 'confusion.png'}", "free space")


# -------------------------------------------------------------------------- O1-O3, P6: messages

def test_resume_messages_name_real_options_and_what_the_file_is(tmp_path, lists, pretrained, trained):
    base = ["finetune", *FT, "--data", lists["train"], "--test-data", lists["test"], "--out", tmp_path / "ft"]
    r = run_cli(*base, "--resume", pretrained / "encoder.pt")                                       # O1
    line = assert_user_error(r, "holds no optimizer", f"--checkpoint {pretrained / 'encoder.pt'}")
    assert "--init" not in line
    r = run_cli(*base, "--resume", pretrained / "checkpoint.pt")                                    # O2
    assert_user_error(r, "it is a pretraining checkpoint, not a fine-tuning one", "--checkpoint")
    r = run_cli(*base, "--resume", trained)                                                         # O3
    assert_user_error(r, f"--resume {trained} is a folder", f"--resume {trained / 'checkpoint.pt'}")
    r = run_cli("pretrain", *PRE, "--out", tmp_path / "pre", "--resume", trained / "checkpoint.pt")
    assert_user_error(r, "it is a fine-tuning checkpoint, not a pretraining one", "--init")
    r = run_cli("pretrain", *PRE, "--config", tmp_path)                                             # P6
    assert_user_error(r, f"config file {tmp_path} is a folder")


# ------------------------------------------------------------------- E8: test-side skips are warned

def test_eval_only_of_unreadable_test_videos_warns_for_each(tmp_path, trained, unreadable, caplog):
    bad = unreadable[1:4] + unreadable[5:]                  # garbage, empty, text, missing
    data = write_list(tmp_path / "allbad.txt", [(p, i % 2) for i, p in enumerate(bad)])
    r = run_cli("finetune", *EVAL, "--checkpoint", trained, "--data", data, "--out", tmp_path / "eval")
    assert r.exit_code == 2
    assert_user_error(r, f"no test clip could be read ({len(bad)} videos skipped); see the warnings above")
    warned = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("skipped test video")]
    assert len(warned) == len(bad) and all(any(str(p) in w for w in warned) for p in bad)


# --------------------------------------------------------------------------- T5-T7: the study's files

@pytest.mark.parametrize("text", ['{"top1": 0.5, "chan', "", "{}", "[1, 2]", '{"top1": "high", "chance": 0.5}'])
def test_a_broken_study_metrics_file_is_redone_with_a_warning(tmp_path, monkeypatch, caplog, text):
    """T5, T6: that fine-tuning runs again (it resumes from its checkpoint, so only its test is redone)."""
    import eval.finetune.run as R
    from eval import study

    out = tmp_path / "speed"
    out.mkdir()
    (out / "metrics.json").write_text(text)
    calls = []
    monkeypatch.setattr(R, "finetune", lambda cfg: calls.append(cfg) or {"top1": 0.75, "chance": 0.5})
    row = study.finetune_row(study.Protocol(), study.Evaluation("speed", "speed", str(tmp_path)), None, None, 0, out)
    assert row["top1"] == 0.75 and len(calls) == 1 and calls[0].out == str(out)
    assert f"study: {out / 'metrics.json'} is unreadable" in caplog.text
    # a good file is read back, not redone
    (out / "metrics.json").write_text(json.dumps({"top1": 0.25, "chance": 0.5}))
    assert study.finetune_row(study.Protocol(), study.Evaluation("speed", "speed", str(tmp_path)), None, None, 0,
                              out)["top1"] == 0.25 and len(calls) == 1


def test_a_broken_direction_json_rewrites_the_set_with_a_warning(tmp_path, caplog):
    """T7."""
    from eval.direction import DONE, write_direction_set

    root = tmp_path / "direction"
    write_direction_set(root, 1, 1, frames=4, size=32)
    good = (root / DONE).read_text()
    (root / DONE).write_text(good[: len(good) // 2])
    assert write_direction_set(root, 1, 1, frames=4, size=32) == (root / "train", root / "test")
    assert f"{root / DONE} is unreadable" in caplog.text
    assert (root / DONE).read_text() == good


# ------------------------------------------------------------- L5: a generate that waits says so

def test_a_generate_waiting_for_a_stopped_one_says_which(tmp_path):
    """Another generate that holds every shard lock and makes no progress (as one suspended with Ctrl-Z):
    this one prints one line naming that process, then waits and finishes once the locks are free."""
    out = tmp_path / "shards"
    locks = FolderLocks(out)
    for shard in range(2):
        locks.acquire(f"shard-{shard:06d}")
    proc = subprocess.Popen([sys.executable, "-m", "smile_synth", "generate", "--n", "4", "--shard-size", "2",
                             "--recipe", "black+objects", "--set", "background.bank_size=2", "--frames", "4",
                             "--size", "32", "--workers", "1", "--quiet", "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said, deadline = "", time.time() + 120
        while "waiting" not in said and time.time() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1)[0]:
                said += proc.stderr.readline()
        assert "waiting for another generate" in said and f"pid {os.getpid()} " in said, said
        assert not list(out.glob("shard-*.tar"))
        locks.release_all()
        _, rest = proc.communicate(timeout=120)
        assert proc.returncode == 0, said + rest
        assert len(list(out.glob("shard-*.tar"))) == 2 and "Traceback" not in said + rest
    finally:
        locks.release_all()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ====================================================================================================
# Part 2: model files (C*, I*, S*, X2, X6, P9)
# ====================================================================================================

FRAMES, SIZE = 4, 32                 # tiny's widths at 8 tokens: fast
CLASSES = ["jumping", "rolling", "sliding"]
TEST_VIEWS = ["--workers", "0", "--test-clips", "1", "--test-crops", "1", "--quiet"]


# ---- building and tampering files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A tiny 3-class classifier (classifier.safetensors of a fine-tuning run) and its transformers export
    (config.json + model.safetensors, made by `smile-synth export`), 4 blocks; a list of 3 little videos."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hostile_models")
    torch.manual_seed(0)
    clf = build_classifier("tiny", len(CLASSES), frames=FRAMES, size=SIZE)
    (root / "ft").mkdir()
    save_safetensors(clf.state_dict(), root / "ft" / "classifier.safetensors", student=dataclasses.asdict(clf.cfg),
                     classifier={"num_classes": len(CLASSES), "class_names": CLASSES})
    result = run_cli("export", root / "ft", "--out", root / "hf")
    assert result.exit_code == 0, result.output
    videos = [write_test_video(root / f"v{i}.mp4", frames=12, width=48, height=40, seed=i) for i in range(3)]
    (root / "list.txt").write_text("".join(f"{v} {i}\n" for i, v in enumerate(videos)))
    return {"root": root, "ft": root / "ft", "hf": root / "hf", "list": root / "list.txt", "video": videos[0]}


def copy_of(base, tmp_path: Path, name: str = "tam") -> Path:
    return Path(shutil.copytree(base["hf"], tmp_path / name))


def with_config(base, tmp_path: Path, change=None, **values) -> Path:
    """A copy of the export whose config.json has `values` set (None values too) and `change(config)` applied."""
    folder = copy_of(base, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(values)
    if change:
        change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    """(header, tensor bytes) of a .safetensors file: 8-byte little-endian header length, JSON header, data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)                    # the format pads its header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def with_metadata(base, tmp_path: Path, **student) -> Path:
    """A copy of the export's model.safetensors, alone in a folder (no config.json), whose "student" metadata
    has `student` set."""
    folder = tmp_path / "st"
    folder.mkdir()
    header, data = read_safetensors(base["hf"] / "model.safetensors")
    meta = json.loads(header["__metadata__"]["student"])
    meta.update(student)
    header["__metadata__"]["student"] = json.dumps(meta)
    write_safetensors(folder / "model.safetensors", header, data)
    return folder


def export_error(source, tmp_path: Path, *needles: str, args=()) -> str:
    line = assert_user_error(run_cli("export", source, "--out", tmp_path / "out", *args), *needles)
    assert not (tmp_path / "out" / "config.json").exists()
    return line


def eval_only_error(source, base, tmp_path: Path, *needles: str, data=None) -> str:
    result = run_cli("finetune", "--eval-only", "--checkpoint", source, "--data", data or base["list"], *TEST_VIEWS,
                     "--out", tmp_path / "eval")
    return assert_user_error(result, *needles)


# ---- config.json: one line naming the file, the field and the value (C2-C6, C13) -------------------------

@pytest.mark.parametrize("values, needles", [
    ({"hidden_size": 0}, ["hidden_size 0"]),                                           # C2
    ({"patch_size": 0}, ["patch_size 0"]),                                             # C4
    ({"tubelet_size": 0}, ["tubelet_size 0"]),                                         # C4
    ({"num_hidden_layers": -1}, ["num_hidden_layers -1"]),                             # C5
    ({"image_size": "112"}, ["image_size '112'", "whole number"]),                     # C6: a string
    ({"num_frames": None}, ["num_frames None", "whole number"]),                       # C6: null
    ({"intermediate_size": "768"}, ["intermediate_size '768'", "whole number"]),       # C6
    ({"hidden_size": True}, ["hidden_size True", "whole number"]),                     # a bool
    ({"num_frames": 8.7}, ["num_frames 8.7", "whole number"]),                         # a float
    ({"num_attention_heads": 5}, ["hidden_size 192", "not divisible", "num_attention_heads 5"]),
    ({"image_size": 40}, ["image_size 40 is not a multiple of the patch_size 16"]),
    ({"num_frames": 5}, ["num_frames 5 is not a multiple of the tubelet_size 2"]),
    ({"num_frames": 2_000_000_000}, ["num_frames 2000000000", "from 1 to"]),          # C13
    ({"image_size": 2048, "patch_size": 2}, ["num_frames", "image_size 2048", "GiB"]),  # fits no memory
    ({"image_size": [32, 16]}, ["image_size [32, 16]", "not square"]),
])
def test_a_bad_config_field_is_one_line_naming_file_and_field(base, tmp_path, values, needles):
    folder = with_config(base, tmp_path, **values)
    export_error(folder, tmp_path, str(folder / "config.json"), *needles)


def test_zero_heads_under_eval_only_is_one_line(base, tmp_path):                             # C3
    folder = with_config(base, tmp_path, num_attention_heads=0)
    eval_only_error(folder, base, tmp_path, str(folder / "config.json"), "num_attention_heads 0")


# ---- layer counts must match the weights (C7) ------------------------------------------------------------

def test_fewer_layers_in_the_config_than_in_the_weights_are_refused(base, tmp_path):
    folder = with_config(base, tmp_path, num_hidden_layers=2)
    needles = (str(folder / "config.json"), "num_hidden_layers 2", "hold 4 blocks")
    assert "lacks" not in export_error(folder, tmp_path, *needles)       # every key is there: no hint about defaults
    eval_only_error(folder, base, tmp_path, *needles)


# ---- C9: a negative image_size names the file and key, not an option ------------------------------------

def test_a_negative_image_size_names_the_config_not_an_option(base, tmp_path):
    folder = with_config(base, tmp_path, image_size=-112)
    line = eval_only_error(folder, base, tmp_path, str(folder / "config.json"), "image_size -112")
    assert "--size" not in line


# ---- C10: export validates what it writes ----------------------------------------------------------------

def test_export_checks_the_config_it_writes(base, tmp_path):
    from smile_synth.app.export import export_hf, load_exportable

    for i, (values, key) in enumerate((({"heads": 0}, "num_attention_heads 0"), ({"size": -112}, "image_size -112"))):
        x = load_exportable(base["ft"])
        x.cfg = dataclasses.replace(x.cfg, **values)              # as if the loader had let it through
        out = tmp_path / f"out{i}"
        out.mkdir()
        with pytest.raises(UserError, match=f"config.json: {key}"):
            export_hf(x, out)
        assert list(out.iterdir()) == []                          # nothing written
    for values, key in (({"num_attention_heads": 0}, "num_attention_heads 0"), ({"image_size": -112}, "image_size -112")):
        folder = with_config(base, tmp_path / key.split()[0], **values)
        export_error(folder, tmp_path / key.split()[0], key, args=("--format", "hf"))


# ---- C11: missing keys are named, not blamed on --preset -------------------------------------------------

def test_missing_geometry_keys_are_named(base, tmp_path):
    def drop(config):
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
            del config[key]
    folder = with_config(base, tmp_path, drop)
    for args in ((), ("--preset", "tiny")):
        line = export_error(folder, tmp_path, str(folder / "config.json"), "lacks hidden_size, num_hidden_layers",
                            args=args)
        assert "pass the matching --preset" not in line


# ---- C12, S14: the file at fault is named ----------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ('{"hidden_size": 192}', "model_type None"),                       # no model_type
    ('{"model_type": "videomae", "hidden_si', "cannot read"),           # truncated JSON
    ("[1, 2]", "JSON list"),
    ('"{\\"model_type\\": \\"videomae\\"}"', "JSON str"),              # a JSON string holding a dict
])
def test_a_broken_config_json_is_named(base, tmp_path, text, needle):
    folder = copy_of(base, tmp_path)
    (folder / "config.json").write_text(text)
    line = export_error(folder, tmp_path, str(folder / "config.json"), needle)
    assert "checkpoint.pt" not in line


def test_weights_without_config_json_name_the_weights_file(base, tmp_path):                # S14
    folder = with_metadata(base, tmp_path, size="abc")
    line = export_error(folder, tmp_path, str(folder / "model.safetensors"), "student.size 'abc'")
    assert "checkpoint.pt" not in line


def test_a_folder_without_any_checkpoint_says_what_it_lacks(tmp_path):
    (tmp_path / "empty").mkdir()
    line = export_error(tmp_path / "empty", tmp_path, "holds no checkpoint", "encoder.pt", "config.json")
    assert "does not exist" not in line
    torch.save({"model": {}}, tmp_path / "empty" / "checkpoint-best.pth")      # a weights file of another name
    export_error(tmp_path / "empty", tmp_path, "holds no checkpoint", f"e.g. {tmp_path / 'empty' / 'checkpoint-best.pth'}")


# ---- id2label (I1, I4, I5) -------------------------------------------------------------------------------

def test_a_non_index_id2label_key_is_one_line(base, tmp_path):                              # I1
    folder = with_config(base, tmp_path, id2label={"zero": "a", "1": "b", "2": "c"})
    export_error(folder, tmp_path, str(folder / "config.json"), "id2label key 'zero'")


def test_control_characters_from_labels_are_escaped(base, tmp_path):                        # I4
    hostile = "\x1b]0;pwned\x07x\x08\x08\u202e"
    folder = with_config(base, tmp_path, id2label={"0": hostile, "1": "b", "2": "c"},
                         label2id={hostile: 0, "b": 1, "c": 2})
    classes = tmp_path / "cls"
    for name in ("b", "zzz"):                                       # "zzz" is none of the classifier's classes
        (classes / name).mkdir(parents=True)
        shutil.copy(base["video"], classes / name / "v.mp4")
    line = eval_only_error(folder, base, tmp_path, "zzz", "\\x1b]0;pwned\\x07x\\x08\\x08\\u202e", data=classes)
    assert not any(c in line for c in "\x1b\x07\x08\u202e")


def test_a_two_million_character_label_is_cut(base, tmp_path):                              # I5
    folder = with_config(base, tmp_path, id2label={"0": "L" * 2_000_000, "1": "b", "2": "c"})
    result = run_cli("finetune", "--eval-only", "--checkpoint", folder, "--data", base["list"], *TEST_VIEWS,
                     "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["classes"][0] == "L" * MAX_LABEL_CHARS and metrics["classes"][1:] == ["b", "c"]
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0


def test_printable_escapes_and_cuts():
    assert printable("a\x1b[2Jb\x07\x08c\u202ed") == "a\\x1b[2Jb\\x07\\x08c\\u202ed"
    assert printable("x" * 1000, 10) == "x" * 10 + "... (1000 characters)"
    assert one_line(UserError("two\nlines \x1b")) == "two lines \\x1b"
    assert printable("é 日本 ok") == "é 日本 ok"                       # printable text is left alone


# ---- safetensors (S8, S11, S12) --------------------------------------------------------------------------

def test_float_weights_relabelled_as_integers_are_refused(base, tmp_path):                  # S8
    folder = copy_of(base, tmp_path)
    header, data = read_safetensors(folder / "model.safetensors")
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32" and len(v["shape"]) == 2)
    header[name]["dtype"] = "I32"
    write_safetensors(folder / "model.safetensors", header, data)
    export_error(folder, tmp_path, str(folder / "model.safetensors"), "int32", "float32", args=("--format", "hf"))


@pytest.mark.parametrize("student, needle", [
    ({"size": "abc"}, "student.size 'abc'"),                                          # S11
    ({"heads": 0}, "student.heads 0"),                                                # S11
    ({"frames": 2_000_000_000}, "student.frames 2000000000"),                         # S12
])
def test_bad_student_metadata_is_one_line(base, tmp_path, student, needle):
    folder = with_metadata(base, tmp_path, **student)
    export_error(folder / "model.safetensors", tmp_path, str(folder / "model.safetensors"), needle)


# ---- export: fold roots (X2), non-empty --out (X6), file modes ------------------------------------------

def test_export_of_a_multi_fold_root_names_a_fold(base, tmp_path):                          # X2
    root = tmp_path / "ftroot"
    for k in range(2):
        (root / f"fold-{k}").mkdir(parents=True)
        shutil.copy(base["ft"] / "classifier.safetensors", root / f"fold-{k}")
    export_error(root, tmp_path, "2-fold fine-tuning run", "give one fold's folder", str(root / "fold-0"))


def test_export_refuses_a_folder_holding_other_files(base, tmp_path):                       # X6
    run = tmp_path / "other_run"                                     # another fine-tuning run's folder
    run.mkdir()
    shutil.copy(base["ft"] / "classifier.safetensors", run)
    (run / "metrics.json").write_text("{}")
    assert_user_error(run_cli("export", base["ft"], "--out", run), str(run), "not empty", "new or empty")
    assert sorted(p.name for p in run.iterdir()) == ["classifier.safetensors", "metrics.json"]
    # a previous export of the same source may be replaced, in either format; another source's may not
    out = tmp_path / "exp"
    for fmt in ("hf", "hf", "videomae"):
        result = run_cli("export", base["ft"], "--out", out, "--format", fmt)
        assert result.exit_code == 0, result.output
    assert_user_error(run_cli("export", base["hf"], "--out", out), "holds an export of",
                      str(base["ft"] / "classifier.safetensors"))


def test_safetensors_outputs_follow_the_umask(base, tmp_path):
    old = os.umask(0o022)
    try:
        result = run_cli("export", base["ft"], "--out", tmp_path / "out")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {"0o644"}, modes


# ---- P9: a file that is no checkpoint at all -------------------------------------------------------------

def test_a_video_given_as_checkpoint_is_not_called_a_pickle(base, tmp_path):
    for command in (["eval", "--checkpoint", base["video"], "--data", base["list"], "--out", tmp_path / "e"],
                    ["finetune", "--eval-only", "--checkpoint", base["video"], "--data", base["list"], *TEST_VIEWS,
                     "--out", tmp_path / "f"],
                    ["export", base["video"], "--out", tmp_path / "x"]):
        line = assert_user_error(run_cli(*command), str(base["video"]), "is not a checkpoint")
        assert "weights_only" not in line and "refusing" not in line and "unpickling" not in line
