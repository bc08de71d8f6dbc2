"""`smile-synth export`: a run, checkpoint or classifier as a transformers VideoMAE folder or a VideoMAE .pth.

--format hf        OUT/model.safetensors + OUT/config.json (+ preprocessor_config.json for
                   VideoMAEImageProcessor), loadable with transformers' from_pretrained(OUT):
                   a fine-tuned classifier as VideoMAEForVideoClassification (id2label = its classes); a
                   pretraining checkpoint with a pixel target as VideoMAEForPreTraining (encoder + decoder;
                   it also loads as VideoMAEModel); any other encoder as VideoMAEModel. Needs transformers.
--format videomae  OUT/checkpoint.pth = {"model": tensors with VideoMAE's original names} (torch.load with
                   weights_only=True), for VideoMAE's own scripts: a pretraining checkpoint's full model
                   (encoder.*, decoder.*), an encoder's fine-tuning keys, a classifier's modeling_finetune keys.

The weights go through our own model first (loaded strictly), so an incomplete or mismatched file fails here
with one line rather than in the other library, and the config.json about to be written is read back and
checked as any config.json would be. OUT also gets export.json, naming the source: a non-empty OUT is
refused unless it holds only a previous export of the same source (so an export never shadows a run's own
files). Name and layout conversions: training/hf.py.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import click

from smile_synth.errors import UserError, shown

from .choices import PRESET_CHOICE

FORMATS = ("hf", "videomae")
# config.json last: a folder with a config has its weights; preprocessor_config.json = our resize, crop, normalisation
HF_FILES = ("model.safetensors", "preprocessor_config.json", "config.json")
VIDEOMAE_FILE = "checkpoint.pth"
RECORD = "export.json"           # {"source": the exported file, absolute}: what a re-export may replace


@dataclass
class Exportable:
    """What a checkpoint holds, checked: `kind` one of training.hf's ENCODER / PRETRAINING / CLASSIFIER (the
    transformers class it exports as), `weights` our names (that kind's layout), fp32 on the CPU."""
    kind: str
    cfg: object                      # training.models.StudentConfig
    weights: dict
    source: Path
    summary: dict
    class_names: list[str] | None = None
    note: str = ""                   # what was left out, and why


def export_source(path: str | Path) -> Path:
    """The file to export for `path`: as every loader's (training.checkpoint.resolve_weights_file), except that
    a pretraining run folder gives its checkpoint.pt, the only file with the decoder."""
    from training.checkpoint import CHECKPOINT, CLASSIFIER_SAFETENSORS, resolve_weights_file, transformers_model_type

    p = Path(path)
    if (p.is_dir() and (p / CHECKPOINT).is_file() and not (p / CLASSIFIER_SAFETENSORS).is_file()
            and transformers_model_type(p) is None):
        return p / CHECKPOINT
    return resolve_weights_file(p)


def _strict(model, weights: dict, path: Path, what: str) -> dict:
    """`weights` loaded into every parameter of `model`; returns model's state dict, fp32 CPU."""
    from training.checkpoint import load_complete

    load_complete(model, weights, path, what, "is it a complete checkpoint of this kind?")
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def _class_names(ckpt: dict, n: int) -> list[str]:
    """A classifier's class names (training.checkpoint.checkpoint_classes), else transformers' LABEL_i."""
    from training.checkpoint import checkpoint_classes

    names = checkpoint_classes(ckpt)
    return names if names is not None and len(names) == n else [f"LABEL_{i}" for i in range(n)]


def _target(ckpt: dict) -> str | None:
    """The pretraining target of a checkpoint (its summary's or config's), None when it does not say."""
    for key in ("summary", "config"):
        value = (ckpt.get(key) or {}).get("target")
        if isinstance(value, str):
            return value
    return None


def load_exportable(path: str | Path, preset: str | None = None) -> Exportable:
    """The checkpoint at `path` (run folder, checkpoint.pt, encoder.pt/.safetensors, classifier.safetensors, a
    VideoMAE/SMILE file with `preset`, a transformers folder), loaded into our matching model to check it."""
    from training import hf
    from training.checkpoint import checkpoint_student, encoder_weights, model_weights, read_checkpoint
    from training.models import PretrainVideoTransformer, VideoEncoder

    source = export_source(path)
    ckpt = read_checkpoint(source)
    cfg = checkpoint_student(ckpt, source, preset)
    weights, summary = model_weights(ckpt), dict(ckpt.get("summary") or {})
    kind = hf.layout_of(weights)
    if kind == hf.CLASSIFIER:
        from eval.finetune.model import VideoClassifier

        n = weights["head.weight"].shape[0]
        model = VideoClassifier(cfg, n)
        return Exportable(kind, cfg, _strict(model, weights, source, f"a {n}-class classifier"), source, summary,
                          _class_names(ckpt, n))
    note = ""
    if kind == hf.PRETRAINING:
        head = weights.get("decoder.head.weight")
        width = head.shape[0] if head is not None else cfg.target_dim
        target = _target(ckpt) or ("pixel" if width == hf.pixel_dim(cfg) else None)   # VideoMAE's own: pixels
        if target == "pixel" and width == hf.pixel_dim(cfg):
            cfg = dataclasses.replace(cfg, target_dim=width)
            model = PretrainVideoTransformer(cfg)
            return Exportable(kind, cfg, _strict(model, weights, source, "a pretraining model"), source, summary)
        note = (f"encoder only: the decoder predicts {target or 'unknown'} targets ({width} per token), and "
                "transformers' VideoMAEForPreTraining predicts pixels")
    encoder = _strict(VideoEncoder(cfg), encoder_weights(weights), source, "an encoder")
    return Exportable(hf.ENCODER, cfg, encoder, source, summary,
                      note=note)


def export_hf(x: Exportable, out: Path) -> list[Path]:
    """OUT/model.safetensors and OUT/config.json (each written whole or not at all) for transformers'
    from_pretrained(OUT), as the class x.kind names. The config is checked first as any config.json read
    back (training.hf.student_from_config) and against the weights. Returns the paths."""
    from smile_synth.atomic import replacing
    from training import hf
    from training.checkpoint import check_fits_weights, save_safetensors

    transformers = hf.require_transformers("smile-synth export --format hf")
    kwargs = hf.videomae_config(x.cfg, mean_pooling=x.kind == hf.CLASSIFIER, norm_pix_loss=True)
    weights, processor_file, config_file = (out / name for name in HF_FILES)
    written = hf.student_from_config(kwargs, str(config_file))        # what from_pretrained will build, checked
    check_fits_weights(written, x.weights, str(config_file), hf.HF_NAMES, x.source)
    kwargs.pop("model_type")
    classifier = None
    if x.class_names is not None:
        kwargs.update(hf.label_maps(x.class_names))
        classifier = {"num_classes": len(x.class_names), "class_names": x.class_names}
    config = transformers.VideoMAEConfig(architectures=[x.kind], **kwargs)
    write_record(out, x.source)
    # our metadata rides along in the header (transformers reads only "format"), so a re-import keeps the summary
    save_safetensors(hf.to_hf(x.weights), weights, student=dataclasses.asdict(x.cfg), summary=x.summary,
                     classifier=classifier)
    for path, text in ((processor_file, image_processor(transformers, x.cfg).to_json_string()),
                       (config_file, config.to_json_string())):
        with replacing(path) as tmp:
            tmp.write_text(text)
    return [weights, processor_file, config_file]


def image_processor(transformers, cfg):
    """transformers' VideoMAEImageProcessor doing what our test views do: short side to the model's size,
    centre crop, [0, 1], ImageNet mean/std (training.targets)."""
    from training.targets import IMAGENET_MEAN, IMAGENET_STD
    return transformers.VideoMAEImageProcessor(size={"shortest_edge": cfg.size},
                                               crop_size={"height": cfg.size, "width": cfg.size},
                                               image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def export_videomae(x: Exportable, out: Path) -> list[Path]:
    """OUT/checkpoint.pth: {"model": x.weights} (VideoMAE's names are ours), tensors only. Returns [path]."""
    from training.checkpoint import save_atomic

    path = out / VIDEOMAE_FILE
    write_record(out, x.source)
    save_atomic({"model": {k: v.contiguous() for k, v in x.weights.items()}}, path)
    return [path]


def check_out_folder(out: Path, source: Path) -> None:
    """One UserError unless `out` is new, empty, or holds only a previous export of `source` (its RECORD
    names the same file): an export must not mix into, or shadow, another folder's files."""
    from smile_synth.atomic import remove_stale_temporaries

    if not out.is_dir():
        return                                        # new (or not a folder: ensure_writable_folder says so)
    remove_stale_temporaries(out)                     # a killed export's partial files
    entries = sorted(e.name for e in out.iterdir())
    if not entries:
        return
    try:
        previous = json.loads((out / RECORD).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous is None:
        raise UserError(f"--out {out} is not empty (it holds {shown(entries[0])}{', ...' if len(entries) > 1 else ''}) "
                        "and is not a previous export; give a new or empty folder")
    if previous != str(source.resolve()):
        raise UserError(f"--out {out} holds an export of {shown(previous)}, not of {source}; give a new or empty folder")
    others = [name for name in entries if name not in (*HF_FILES, VIDEOMAE_FILE, RECORD)]
    if others:
        raise UserError(f"--out {out} holds {shown(others[0])} besides a previous export of {source}; give a new or "
                        "empty folder")


def write_record(out: Path, source: Path) -> None:
    """OUT/RECORD naming the exported file; written before the exported files, so a folder with any of them
    has it."""
    from smile_synth.atomic import write_json_atomic

    write_json_atomic(out / RECORD, {"source": str(source.resolve())})


def describe(x: Exportable, fmt: str, out: Path) -> str:
    """One line: what was written and how to load it."""
    from training import hf

    geometry = f"{x.cfg.dim}-wide {x.cfg.depth}-deep, {x.cfg.frames} frames x {x.cfg.size} px"
    if fmt == "hf":
        what = {hf.ENCODER: "VideoMAEModel", hf.PRETRAINING: "VideoMAEForPreTraining (encoder + pixel decoder)",
                hf.CLASSIFIER: f"VideoMAEForVideoClassification ({len(x.class_names or [])} classes)"}[x.kind]
        load = f"transformers.{x.kind}.from_pretrained('{out}')"
    else:
        what = {hf.ENCODER: "VideoMAE fine-tuning keys (patch_embed, blocks, norm)",
                hf.PRETRAINING: "VideoMAE pretraining keys (encoder.*, decoder.*)",
                hf.CLASSIFIER: "VideoMAE modeling_finetune keys (patch_embed, blocks, fc_norm, head)"}[x.kind]
        load = f"torch.load('{out / VIDEOMAE_FILE}', weights_only=True)['model']"
    note = f"; {x.note}" if x.note else ""
    return f"{what}, {geometry}, from {x.source}{note}; load with {load}"


@click.command("export")
@click.argument("source", metavar="RUN_OR_CHECKPOINT")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="hf", show_default=True,
              help="hf: a transformers VideoMAE folder (config.json + model.safetensors); videomae: VideoMAE's "
                   "original key layout as OUT/checkpoint.pth.")
@click.option("--out", required=True, help="Output folder (created if needed).")
@click.option("--preset", type=PRESET_CHOICE, default=None,
              help="The geometry of a file that does not carry it (VideoMAE/SMILE "
                   "checkpoints); checked against files that do.")
def export_command(source, fmt, out, preset) -> None:
    """Export weights for other libraries: transformers (from_pretrained) or VideoMAE's own scripts."""
    from smile_synth.atomic import ensure_writable_folder
    from training.hf import require_transformers

    if fmt == "hf":
        require_transformers("smile-synth export --format hf")     # before any work
    x = load_exportable(source, preset)
    if fmt == "hf" and Path(out).resolve() == x.source.parent.resolve():
        raise UserError(f"--out {out} is the folder of {x.source}: a transformers config.json there would shadow "
                        "the run's own files; choose another folder")
    check_out_folder(Path(out), x.source)
    folder = ensure_writable_folder(out, "--out")
    paths = export_hf(x, folder) if fmt == "hf" else export_videomae(x, folder)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}: {describe(x, fmt, folder)}")
