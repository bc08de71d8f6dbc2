"""Checkpoints: atomic writes, resume, and loading weights from ours or VideoMAE/SMILE files.

A checkpoint is {"model", "optimizer", "scaler", "step", "config", "student", "summary"}; `encoder.pt`
is {"model": encoder weights with VideoMAE fine-tuning names, "student", "summary"}; `encoder.safetensors`
holds the same weights, with "student" and "summary" as JSON strings in its metadata header.

Reading never runs code: every file goes through `read_checkpoint`, which unpickles with
`weights_only=True` (tensors and plain containers only, plus the allow-listed `SAFE_TYPES` that released
VideoMAE/SMILE checkpoints pickle) or reads safetensors; anything else is refused with one UserError.

A Hugging Face `transformers` VideoMAE folder (config.json + model.safetensors or pytorch_model.bin) or
its weights file is accepted wherever a checkpoint is: `resolve_weights_file` finds its weights, and
`read_checkpoint` converts its names to ours (training/hf.py) and its config.json to our "student" (and
a classifier's id2label to our "classifier"), so the loaders below check its geometry as ours. Reading
one needs no transformers install.

Every file is untrusted input. A file is identified by its first bytes (zip, pickle, safetensors) before
anything reads it; a config.json or a "student" entry goes through StudentConfig.validate (types, bounds,
divisibility; the message names the file and the field) and must fit the weights (check_fits_weights:
width, patch, tubelet, MLP width, and as many blocks as the weights hold); weights must have the model's
floating-point dtypes; class names are cut to MAX_LABEL_CHARS.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smile_synth.atomic import replacing
from smile_synth.errors import UserError, printable, shown

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
ENCODER_SAFETENSORS = "encoder.safetensors"
CLASSIFIER_SAFETENSORS = "classifier.safetensors"   # a fine-tuning run's classifier (eval/finetune)
SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", SAFETENSORS_SUFFIX)   # what weight files are called
# types besides tensors and plain containers that a checkpoint may pickle: VideoMAE/SMILE's `args` entry
SAFE_TYPES: tuple[type, ...] = (argparse.Namespace,)
METADATA_KEYS = ("student", "summary", "classifier")   # JSON objects in a .safetensors header
HF_CONFIG = "config.json"                                # a transformers model folder's config
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # its weights, in the order transformers prefers them
# the files of a run (or transformers) folder that stand for the folder (--eval-only's default --out)
RUN_FILES = (CHECKPOINT, ENCODER, ENCODER_SAFETENSORS, CLASSIFIER_SAFETENSORS, *HF_WEIGHTS)


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name, then rename: a file that exists is complete. Written through a
    Python file, so a full disk raises OSError (torch's own writer says only "unexpected pos"), which
    `replacing` turns into one line."""
    with replacing(path, size_hint=tensor_bytes(obj)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in `obj` (nested dicts, lists and tuples): about what saving it takes."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_encoder(out_dir: str | Path, state_dict: dict[str, torch.Tensor], student: dict,
                 summary: dict) -> tuple[Path, Path]:
    """Write OUT/encoder.pt and OUT/encoder.safetensors (each whole or not at all) holding the encoder
    weights `state_dict` (VideoMAE fine-tuning names, e.g. `encoder_state_dict(model)`), the student config
    `student` (`dataclasses.asdict(StudentConfig)`) and the pretraining `summary`. Returns both paths."""
    out = Path(out_dir)
    weights = {k: v.detach().cpu() for k, v in state_dict.items()}
    save_atomic({"model": weights, "student": dict(student), "summary": dict(summary)}, out / ENCODER)
    save_safetensors(weights, out / ENCODER_SAFETENSORS, student=student, summary=summary)
    return out / ENCODER, out / ENCODER_SAFETENSORS


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path, student: dict | None = None,
                     summary: dict | None = None, classifier: dict | None = None) -> None:
    """`state_dict` as a .safetensors file at `path`, written atomically; `student`, `summary` and
    `classifier` (JSON-able dicts) go into its metadata header as JSON strings, so loaders know the
    geometry (and a classifier its classes)."""
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if v.numel() and ptr in seen:   # safetensors refuses tensors that share memory
            v = v.clone()
        seen.add(ptr)
        tensors[k] = v
    metadata = {"format": "pt"}
    for key, value in (("student", student), ("summary", summary), ("classifier", classifier)):
        if value is not None:
            metadata[key] = json.dumps(value, sort_keys=True)
    with replacing(path, size_hint=tensor_bytes(tensors)) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())      # safetensors writes 0600; every other output follows the umask


def _umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def resolve_weights_file(path: str | Path) -> Path:
    """The file to read for `path`: the path itself; for a run folder its encoder.pt, else its
    encoder.safetensors, else (a fine-tuning run) its classifier.safetensors, else its checkpoint.pt; for a
    transformers VideoMAE folder its model.safetensors, else its pytorch_model.bin (without a config.json
    too: the file's metadata or --preset then give the geometry); and a missing OUT/encoder.pt or
    OUT/checkpoint.pt is OUT/encoder.safetensors when that exists (a run folder shipped with its safetensors
    file only). A folder holding none of these is one UserError saying what it holds (a multi-fold
    fine-tuning run: which fold folder to give); a broken config.json is one naming that file."""
    path = Path(path)
    if path.is_dir():
        from .hf import MODEL_TYPE
        config = read_transformers_config(path)
        if config is not None and config["model_type"] == MODEL_TYPE:
            return _transformers_weights(path)
        for name in (ENCODER, ENCODER_SAFETENSORS, CLASSIFIER_SAFETENSORS, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        if config is not None:
            raise UserError(f"{path} holds a transformers {shown(config['model_type'])} model, not VideoMAE; give "
                            "a VideoMAE folder (model_type \"videomae\" in its config.json) or one of our runs")
        return _transformers_weights(path, config_missing=True)
    if not path.exists() and path.name in (ENCODER, CHECKPOINT) and (path.parent / ENCODER_SAFETENSORS).is_file():
        return path.parent / ENCODER_SAFETENSORS
    return path


def read_transformers_config(folder: Path) -> dict | None:
    """The config.json of a transformers model folder, a JSON object with a model_type string; None when the
    folder has no config.json. One UserError naming the file when it is unreadable, not JSON, not an object
    or without a model_type."""
    path = folder / HF_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_bytes())
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {path}: {_first_line(e)}; it should be a transformers config (JSON)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a JSON {type(config).__name__}, not a transformers config (a JSON object)")
    if not isinstance(config.get("model_type"), str):
        raise UserError(f"{path}: model_type {shown(config.get('model_type'))} is not a model type; a VideoMAE "
                        "config.json says \"model_type\": \"videomae\"")
    return config


def transformers_model_type(folder: Path) -> str | None:
    """The model_type of a transformers model folder (its config.json); None for any other folder."""
    config = read_transformers_config(folder)
    return None if config is None else config["model_type"]


def _transformers_weights(folder: Path, config_missing: bool = False) -> Path:
    """The weights file of a transformers folder; one UserError for a sharded one (not supported) or none.
    `config_missing`: the folder has no config.json (and none of our files)."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise UserError(f"{folder} holds sharded weights (*.index.json); re-save it as one file with "
                        "save_pretrained(DIR, max_shard_size='100GB')")
    if not config_missing:
        raise UserError(f"{folder} has a transformers {HF_CONFIG} but no weights ({' or '.join(HF_WEIGHTS)})")
    folds = sorted(folder.glob(f"fold-*/{CLASSIFIER_SAFETENSORS}"))
    if folds:
        raise UserError(f"{folder} is a {len(folds)}-fold fine-tuning run; give one fold's folder, e.g. "
                        f"{folds[0].parent}")
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    give = f"; give the file itself, e.g. {files[0]}" if files else ""
    raise UserError(f"{folder} holds no checkpoint: none of {ENCODER}, {ENCODER_SAFETENSORS}, "
                    f"{CLASSIFIER_SAFETENSORS}, {CHECKPOINT}, and no transformers {HF_CONFIG} or "
                    f"{' / '.join(HF_WEIGHTS)}{give}")


def file_format(path: Path) -> str | None:
    """What a file's first bytes say it is: "zip" (torch.save since torch 1.6), "pickle" (protocol 2 or
    later: older torch.save), "safetensors" (an 8-byte header length, then a JSON object), else None."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") >= 2:
        return "safetensors"
    return None


def read_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint file (ours, VideoMAE/SMILE's, a bare state dict, .safetensors, or a
    transformers VideoMAE model's, converted) as a dict, on the CPU. Never runs code from the file: a pickle
    holding anything but tensors, plain containers and SAFE_TYPES is refused with one UserError naming the
    file and the type. A file that is none of these formats (by its first bytes) is one UserError saying so."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; give a checkpoint file (.pt, .pth, .bin or .safetensors)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give an existing .pt or .safetensors file")
    try:
        kind = file_format(path)
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if path.suffix == SAFETENSORS_SUFFIX or kind == "safetensors":
        return _from_transformers(path, _read_safetensors(path))
    if kind is None:
        raise UserError(f"{path} is not a checkpoint: it is neither a PyTorch file (zip or pickle) nor safetensors; "
                        "give a .pt, .pth, .bin or .safetensors file")
    try:
        with torch.serialization.safe_globals(list(SAFE_TYPES)):   # torch >= 2.5 (pyproject asks >= 2.6)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise UserError(_refusal(path, e)) from None
        raise UserError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise UserError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a checkpoint (a dict of weights)")
    return _from_transformers(path, ckpt)


def _from_transformers(path: Path, ckpt: dict) -> dict:
    """`ckpt` itself, or for a transformers VideoMAE state dict {"model": our names, "student" (from the
    config.json beside it, validated and checked against the weights; else the file's own), "summary"?,
    "classifier"? (a classifier's id2label)}."""
    from . import hf

    weights = model_weights(ckpt)
    if not hf.is_hf_state_dict(weights):
        return ckpt
    out: dict[str, Any] = {"model": hf.from_hf(weights, str(path))}
    config = read_transformers_config(path.parent)
    if config is not None:
        where = str(path.parent / HF_CONFIG)
        cfg = hf.student_from_config(config, where)
        missing = hf.defaulted_fields(config)
        check_fits_weights(cfg, out["model"], where, hf.HF_NAMES, path, defaulted=tuple(missing),
                           hint=f"; it lacks {', '.join(missing.values())}, whose transformers defaults are a base "
                                "model's: add them")
        out["student"] = dataclasses.asdict(cfg)
    elif isinstance(ckpt.get("student"), dict):     # our export's metadata, the file moved away from its config
        out["student"] = ckpt["student"]
    if isinstance(ckpt.get("summary"), dict):       # our export's metadata: what it saw in pretraining
        out["summary"] = ckpt["summary"]
    if hf.layout_of(out["model"]) == hf.CLASSIFIER:
        classifier = hf.classifier_from_config(config, where) if config else ckpt.get("classifier")
        if classifier and classifier.get("num_classes") == out["model"]["head.weight"].shape[0]:
            out["classifier"] = classifier
    return out


def _block_count(weights: dict[str, torch.Tensor], prefix: str) -> int:
    """1 + the highest N of the `prefix`N.* names (0 without any): how many blocks the weights hold."""
    found = [int(m[1]) for k in weights if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return 1 + max(found) if found else 0


def check_fits_weights(cfg, weights: dict[str, torch.Tensor], where: str, names: dict[str, str], path: Path,
                       defaulted: tuple[str, ...] = (), hint: str = "") -> None:
    """One UserError when the geometry `cfg` (a StudentConfig read from `where`, whose name for each field is
    in `names`) disagrees with what the weights of `path` (our names) fix: width, tubelet and patch (the
    patch embedding), the number of blocks (a config with fewer would silently drop the rest), the MLP
    width, and the decoder's width and blocks when there is a decoder. `hint` ends the message when the
    field at fault is one of `defaulted` (absent from the file, so a default)."""
    encoder = encoder_weights(weights)

    def refuse(field: str, value, found: str):
        raise UserError(f"{where}: {names.get(field, field)} {value} does not match the weights in {path}, which "
                        f"{found}{hint if field in defaulted else ''}")

    embed = encoder.get("patch_embed.proj.weight")                    # (C, 3, tubelet, patch, patch)
    if embed is not None and embed.ndim == 5:
        for field, found, what in (("dim", embed.shape[0], "wide"), ("tubelet", embed.shape[2], "frames a tubelet"),
                                   ("patch", embed.shape[3], "px patches")):
            if getattr(cfg, field) != found:
                refuse(field, getattr(cfg, field), f"are {found} {what}" if field == "dim" else f"take {found} {what}")
    depth = _block_count(encoder, "blocks.")
    if depth and depth != cfg.depth:
        refuse("depth", cfg.depth, f"hold {depth} blocks")
    fc1 = encoder.get("blocks.0.mlp.fc1.weight")                      # (C x mlp_ratio, C)
    if fc1 is not None and fc1.ndim == 2 and fc1.shape[0] != int(cfg.dim * cfg.mlp_ratio):
        refuse("mlp_ratio", f"{cfg.mlp_ratio:g} (an MLP {int(cfg.dim * cfg.mlp_ratio)} wide)",
               f"have {fc1.shape[0]}-wide MLPs")
    to_decoder = weights.get("encoder_to_decoder.weight")              # (D, C)
    if to_decoder is not None and to_decoder.ndim == 2 and to_decoder.shape[0] != cfg.decoder_dim:
        refuse("decoder_dim", cfg.decoder_dim, f"have a {to_decoder.shape[0]}-wide decoder")
    decoder_depth = _block_count(weights, "decoder.blocks.")
    if decoder_depth and decoder_depth != cfg.decoder_depth:
        refuse("decoder_depth", cfg.decoder_depth, f"hold {decoder_depth} decoder blocks")


def read_resume_checkpoint(path: str | Path, kind: str = "pretraining", start_option: str = "--init") -> dict:
    """read_checkpoint() of a file to resume a `kind` ("pretraining" or "fine-tuning") run from: it must hold
    the full training state (model, optimizer, scaler, step) of that kind of run, else one UserError that
    points to `start_option` (the command's option that starts from a file's weights)."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scaler", "step") if k not in ckpt]
    if missing:
        raise UserError(f"cannot resume {path}: it holds no {missing[0]} (weights only, e.g. encoder.pt or a "
                        f"VideoMAE/SMILE file?); start from it with {start_option} {path}, or --resume a run's "
                        f"{CHECKPOINT}")
    found = training_kind(ckpt)
    if found != kind:
        raise UserError(f"cannot resume {path}: it is a {found} checkpoint, not a {kind} one; start from its "
                        f"weights with {start_option} {path}, or --resume a {kind} run's {CHECKPOINT}")
    return ckpt


def training_kind(ckpt: dict) -> str:
    """Which run wrote a training checkpoint: "fine-tuning" (it names its classes) or "pretraining"."""
    return "fine-tuning" if "classes" in ckpt else "pretraining"


def resume_path(resume: str | None, out: str | Path) -> Path | None:
    """The checkpoint a run continues from: --resume auto gives OUT/checkpoint.pt if there is one, a path
    gives itself; None or "none" a fresh run, which refuses an OUT that already holds one (one UserError)."""
    ckpt_path = Path(out) / CHECKPOINT
    if resume == "auto":
        return ckpt_path if ckpt_path.is_file() else None
    if resume not in (None, "none"):
        if Path(resume).is_dir():
            inside = Path(resume) / CHECKPOINT
            give = f"--resume {inside}" if inside.is_file() else f"a run's {CHECKPOINT}"
            raise UserError(f"--resume {resume} is a folder; give a checkpoint file ({give}), or --resume auto to "
                            "continue the run in --out")
        return Path(resume)
    if ckpt_path.is_file():
        raise UserError(f"{out} already holds a run ({CHECKPOINT}); continue it with --resume auto or choose another --out")
    return None


def restore_training_state(path: str | Path, cfg, fixed: tuple[str, ...], model: nn.Module, optimizer, scaler,
                           steps: int, kind: str = "pretraining", start_option: str = "--init") -> int:
    """Continue a `kind` run from the checkpoint at `path` (see read_resume_checkpoint): the settings named in
    `fixed` must equal cfg's (the checkpoint's "config"; one UserError line naming the first that differs),
    then the model, optimizer and scaler states load. Returns its step, which must not be past `steps`."""
    ckpt = read_resume_checkpoint(path, kind, start_option)
    old = ckpt.get("config", {})
    for k in fixed:
        if k in old and old[k] != getattr(cfg, k):
            raise UserError(f"cannot resume {path}: it was run with {k}={shown(old[k])}, now {getattr(cfg, k)!r}; "
                            "keep the setting or start a new run with another --out")
    matching_weights(path, model_weights(ckpt), model.state_dict(), what="the run's model")   # shapes, dtypes: one line
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    start = int(ckpt["step"])
    if start > steps:
        raise UserError(f"{path} is at step {start}, past --steps {steps}; ask for more steps or use another --out")
    return start


def _first_line(e: Exception) -> str:
    """An exception's first line, cut and escaped (it may quote the file)."""
    return printable((str(e).strip().splitlines() or [type(e).__name__])[0], 160)


def _refusal(path: Path, e: Exception) -> str:
    """One line: `path` pickles a type weights_only loading does not allow, and how to convert the file."""
    text = str(e)
    found = (re.search(r"GLOBAL\s+([\w.]+)", text) or re.search(r"Unsupported (?:class|global):?\s+([\w.]+)", text))
    what = f"unexpected type {printable(found.group(1))}" if found else "objects that are not tensors or plain containers"
    return (f"refusing to load {path}: it pickles {what}, and unpickling that could run code. If you trust the "
            f"file, convert it in a trusted Python session: sd = torch.load('{path}', weights_only=False)['model'] "
            "(the entry holding the weights), then torch.save({'model': sd}, 'clean.pt') or "
            "safetensors.torch.save_file(sd, 'clean.safetensors'), and pass the new file")


def _read_safetensors(path: Path) -> dict:
    """A .safetensors file as {"model": tensors, "student"?, "summary"?, "classifier"?} (from its metadata)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - a bad header or truncated file is a bad file to the user
        raise UserError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    ckpt: dict[str, Any] = {"model": weights}
    for key in METADATA_KEYS:
        if key in metadata:
            try:
                value = json.loads(metadata[key])
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise UserError(f"{path}: its metadata entry {key!r} is not a JSON object; re-save the file")
            ckpt[key] = value
    return ckpt


def model_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The weights of any of: our checkpoint or encoder.pt, VideoMAE/SMILE ({"model"} or {"module"}), a bare state dict."""
    for key in ("model", "module", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    return {k.removeprefix("module."): v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def matching_weights(path: str | Path, weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                     may_differ: tuple[str, ...] = (), what: str = "the model") -> dict[str, torch.Tensor]:
    """The entries of `weights` that the state dict `own` has, shapes equal. A shape mismatch means a
    checkpoint of another preset (UserError), except for names starting with `may_differ` (skipped)."""
    usable = {}
    for k, v in weights.items():
        if k not in own:
            continue
        if own[k].shape != v.shape:
            if k.startswith(may_differ):
                continue
            raise UserError(f"{path}: {printable(k)} has shape {tuple(v.shape)}, {what} needs {tuple(own[k].shape)}; "
                            "the checkpoint is of another preset (choose the matching --preset)")
        if v.is_floating_point() != own[k].is_floating_point():      # e.g. float data relabelled as integers
            raise UserError(f"{path}: {printable(k)} is {str(v.dtype).removeprefix('torch.')}, {what} needs "
                            f"{str(own[k].dtype).removeprefix('torch.')} (floating point); the file is damaged or "
                            "not a model of this kind")
        usable[k] = v
    return usable


def load_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load what matches into `model` (a PretrainVideoTransformer); the decoder head may differ (another
    target). Encoder-only files get their "encoder." prefix back. Returns (missing, unexpected) names;
    other shape mismatches raise UserError. `path` may be a run folder or a .safetensors file."""
    path = resolve_weights_file(path)
    weights = model_weights(read_checkpoint(path))
    if weights and not any(k.startswith("encoder.") for k in weights) and any(k.startswith("blocks.") for k in weights):
        weights = {f"encoder.{k}": v for k, v in weights.items()}
    usable = matching_weights(path, weights, model.state_dict(), may_differ=("decoder.head",))
    if not any(k.startswith("encoder.blocks.") for k in usable):
        raise UserError(f"{path} holds no encoder weights this model can use; is it a video transformer checkpoint?")
    result = model.load_state_dict(usable, strict=False)
    return list(result.missing_keys), sorted(set(weights) - set(usable))


def checkpoint_student(ckpt: dict, path: str | Path, preset: str | None):
    """The StudentConfig of a checkpoint read by read_checkpoint: its own "student" entry, validated (one
    UserError naming the file and the entry), checked against its weights (check_fits_weights) and against
    `preset` when given (one UserError line on a mismatch); else the preset's (required then)."""
    from .models import PRESETS, StudentConfig, same_arch, student_config
    if isinstance(ckpt.get("student"), dict):
        fields = {f.name for f in dataclasses.fields(StudentConfig)}
        cfg = StudentConfig(**{k: v for k, v in ckpt["student"].items() if k in fields})
        names = {f: f"student.{f}" for f in fields}        # how messages name the entry's fields
        cfg.validate(str(path), names)
        check_fits_weights(cfg, model_weights(ckpt), str(path), names, Path(path))
        if preset is not None and not same_arch(student_config(preset), cfg):
            raise UserError(f"{path} holds a {_preset_name(cfg)} model, not --preset {preset}; pass the matching --preset")
        return cfg
    if preset is None:
        raise UserError(f"{path} does not say which model it holds; pass --preset ({', '.join(PRESETS)})")
    cfg = student_config(preset)
    depth = _block_count(encoder_weights(model_weights(ckpt)), "blocks.")
    if depth and depth != cfg.depth:                # extra blocks would be dropped without a word
        raise UserError(f"{path} holds {depth} blocks, --preset {preset} has {cfg.depth}: the checkpoint is of "
                        "another preset (choose the matching --preset)")
    return cfg


def load_encoder(path: str | Path, preset: str | None = None):
    """The pretrained encoder of `path` (our encoder.pt, encoder.safetensors, checkpoint.pt or run folder, or
    a VideoMAE/SMILE pretraining checkpoint, or a transformers VideoMAE folder), ready for feature extraction.

    Our files carry their student config; for others give `preset` (its geometry must match the
    weights). Returns (VideoEncoder in eval mode, StudentConfig, summary of what it saw in pretraining,
    {} when unknown). Raises UserError for a checkpoint of another preset or without encoder weights."""
    from .models import VideoEncoder
    path = resolve_weights_file(path)
    ckpt = read_checkpoint(path)
    cfg = checkpoint_student(ckpt, path, preset)
    weights = encoder_weights(model_weights(ckpt))
    encoder = VideoEncoder(cfg)
    if "norm.weight" not in weights and any(k.startswith("blocks.") for k in weights):
        encoder.norm = nn.Identity()     # a fine-tuned classifier (mean pooling): its tokens have no final norm
    load_complete(encoder, weights, path, f"a {_preset_name(cfg)} encoder",
                  "is it a video transformer pretraining checkpoint?")
    return encoder.eval(), cfg, dict(ckpt.get("summary") or {})


def encoder_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder part of a state dict, with VideoMAE's fine-tuning names: a pretraining model's "encoder.*"
    (prefix stripped; decoder dropped), else the whole dict (an encoder file, or a classifier with its head)."""
    if any(k.startswith("encoder.") for k in weights):
        return {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    return dict(weights)


def load_complete(model: nn.Module, weights: dict[str, torch.Tensor], path: str | Path, what: str, hint: str) -> None:
    """Load `weights` into every parameter of `model` (`what`, for messages): a shape mismatch (another preset)
    or a missing tensor is one UserError, the latter ending with `hint`; extra tensors are ignored."""
    own = model.state_dict()
    usable = matching_weights(path, weights, own, what=what)
    missing = sorted(set(own) - set(usable))
    if missing:
        raise UserError(f"{path} lacks {missing[0]} ({len(missing)} tensors in all) of {what}; {hint}")
    model.load_state_dict(usable)


MAX_LABEL_CHARS = 256      # a class name from a file is cut to this (a folder name's most, 255 bytes, fits)


def checkpoint_classes(ckpt: dict) -> list[str] | None:
    """A classifier checkpoint's class names: its "classifier" entry (classifier.safetensors, a transformers
    id2label) or "classes" (a fine-tuning checkpoint.pt), each cut to MAX_LABEL_CHARS; None when it names none."""
    classifier = ckpt.get("classifier")
    names = (classifier.get("class_names") if isinstance(classifier, dict) else None) or ckpt.get("classes")
    return [str(c)[:MAX_LABEL_CHARS] for c in names] if isinstance(names, (list, tuple)) else None


def _preset_name(cfg) -> str:
    from .models import matching_preset
    name = matching_preset(cfg)
    return f"{name} ({cfg.frames}x{cfg.size}px)" if name else f"{cfg.dim}-wide {cfg.depth}-deep"
