"""Hostile model files (issue 23, the audit's C*, I*, S*, X2, X6 and P9 rows): a downloaded transformers folder,
a safetensors file or a checkpoint is untrusted input. Every broken or tampered file is built here from a
tiny model exported with the project's own `export`, and each case must end in one `Error:` line naming the
file and the field at fault, exit code 2 and no traceback (or the documented behaviour).

Self-contained: the base export is built once for the module.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, run_cli, write_test_video

from eval.finetune.model import build_classifier
from smile_synth.errors import UserError, one_line, printable
from training.checkpoint import MAX_LABEL_CHARS, save_safetensors

FRAMES, SIZE = 4, 32                 # tiny's widths at 8 tokens: fast
CLASSES = ["jumping", "rolling", "sliding"]
EVAL = ["--workers", "0", "--test-clips", "1", "--test-crops", "1", "--quiet"]


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
    result = run_cli("finetune", "--eval-only", "--checkpoint", source, "--data", data or base["list"], *EVAL,
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
    result = run_cli("finetune", "--eval-only", "--checkpoint", folder, "--data", base["list"], *EVAL,
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
                    ["finetune", "--eval-only", "--checkpoint", base["video"], "--data", base["list"], *EVAL,
                     "--out", tmp_path / "f"],
                    ["export", base["video"], "--out", tmp_path / "x"]):
        line = assert_user_error(run_cli(*command), str(base["video"]), "is not a checkpoint")
        assert "weights_only" not in line and "refusing" not in line and "unpickling" not in line
