"""The `smile-synth` command line."""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import click

from smile_synth.config import usable_cores
from smile_synth.errors import UserError, one_line

from .choices import PRESET_CHOICE, RegistryChoice, resolve


class AppError(click.ClickException):
    """A UserError as click shows it: one `Error:` line, exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        return one_line(self.message)          # escaped and cut: messages may quote files


class Commands(click.Group):
    """The command group; maps the library's UserError to AppError (the only place that does)."""

    def invoke(self, ctx: click.Context):
        from smile_synth.atomic import is_disk_full

        try:
            return super().invoke(ctx)
        except UserError as e:
            raise AppError(e.one_line()) from None
        except Exception as e:   # a full disk in a writer that does not say so itself: still one line
            if not is_disk_full(e):
                raise
            where = getattr(e, "filename", None)
            raise AppError(f"disk full{f' while writing {where}' if where else ''} ({e}); free space or choose "
                           "another output folder, then rerun the same command") from None


# ---- defaults and choices come from the configs and registries, read when needed ----------------

PRETRAIN = "training.config:PretrainConfig"
GENERATE = "smile_synth.app.generate:GenerateConfig"
EVAL = "eval.evaluate:EvalConfig"
COMPARE = "eval.compare:CompareConfig"
FINETUNE = "eval.finetune.config:FinetuneConfig"


def config_default(where: str, field: str):
    """The default of `field` in the dataclass at "module:Class" (written once, there); a
    "module:CONSTANT" that is not a dataclass is itself the default."""
    obj = resolve(where)
    if not dataclasses.is_dataclass(obj):
        return obj
    for f in dataclasses.fields(obj):
        if f.name == field:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    raise KeyError(f"{where} has no field {field!r}")


class ConfigOption(click.Option):
    """An option whose default lives in a config dataclass ("module:Class"): the command receives None
    when the option is not given, and --help shows the dataclass's default."""

    def __init__(self, *args, config: str, field: str | None = None, **kwargs):
        kwargs.setdefault("default", None)
        super().__init__(*args, **kwargs)
        self.config, self.field = config, field or self.name

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        value = config_default(self.config, self.field)
        if record is None or value is None or value is False:
            return record
        shown = ", ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        return record[0], f"{record[1]}  [default: {shown}]".strip()


def config_option(config: str):
    """click.option factory for the options of one config dataclass."""
    def option(*args, **kwargs):
        return click.option(*args, cls=ConfigOption, config=config, **kwargs)
    return option


class TaskStrideOption(click.Option):
    """--stride, whose help lists each registered task's default stride."""

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        tasks = resolve("eval.tasks:TASKS")
        defaults = ", ".join(f"{name} {t.default_stride}" for name, t in tasks.items())
        return record[0], f"{record[1]}  [default: {defaults}]"


def given(options: dict) -> dict:
    """The options the user gave (None = not given: the config's default applies)."""
    return {k: v for k, v in options.items() if v is not None}


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v is not None else default
    except ValueError:
        raise UserError(f"environment variable {name}={v!r} is not a whole number") from None


def _load_recipe(recipe: str | None, overrides: tuple[str, ...]):
    from generators.recipes import DEFAULT_RECIPE, get_recipe

    return get_recipe(recipe or DEFAULT_RECIPE, overrides)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
def cli(verbose: bool) -> None:
    """smile-synth: synthetic training videos and SMILE-style video pretraining."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@cli.command()
def recipes() -> None:
    """List the named recipes."""
    from generators.recipes import describe_recipes

    for name, version, desc in describe_recipes():
        click.echo(f"{name:17s} v{version}  {desc}")


recipe_option = click.option("--recipe", "recipe", cls=ConfigOption, config="generators.recipes:DEFAULT_RECIPE",
                             help="Recipe name (see `smile-synth recipes`) or a .yaml/.json file with `base:` and overrides.")
generate_option = config_option(GENERATE)
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a recipe setting, e.g. --set objects.count=[1,3] (repeatable).")


@cli.command()
@click.option("--n", type=int, required=True, help="Number of clips.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder for shards.")
@recipe_option
@set_option
@generate_option("--seed", type=int)
@generate_option("--frames", type=int)
@generate_option("--size", type=int, help="Frame side in pixels (multiple of 16).")
@click.option("--workers", type=int, default=None, help="Render processes [default: all cores].")
@generate_option("--shard-size", type=int, help="Clips per shard.")
@click.option("--rank", type=int, default=None, help="This machine's rank [default: $RANK or 0].")
@click.option("--world-size", type=int, default=None, help="Number of machines [default: $WORLD_SIZE or 1].")
@generate_option("--codec", type=RegistryChoice("smile_synth.video_io:CODECS"))
@click.option("--annotations", default=None, metavar="NAMES",
              help="Also store exact annotations per clip, comma-separated: flow (forward and backward optical flow, "
                   "validity, occlusion), tracks (point tracks on the objects) [default: none].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(n, out, recipe, overrides, workers, rank, world_size, annotations, quiet, **options) -> None:
    """Render N clips into WebDataset shards in OUT (resumable; split across ranks)."""
    from .generate import GenerateConfig
    from .generate import generate as run

    if annotations is not None:
        from generators import check_annotations

        options["annotations"] = check_annotations(annotations)
    cfg = GenerateConfig(n=n, out=out, recipe=_load_recipe(recipe, overrides),
                         workers=usable_cores() if workers is None else workers,
                         rank=_env_int("RANK", 0) if rank is None else rank,
                         world_size=_env_int("WORLD_SIZE", 1) if world_size is None else world_size, **given(options))
    cfg.validate()
    m = run(cfg, progress=not quiet)
    state = "complete" if m["complete"] else f"{m['num_shards']}/{m['expected_shards']} shards (other ranks pending)"
    click.echo(f"{out}: {m['clips']} clips, {m['bytes'] / 2**20:.1f} MiB, "
               f"{m['bytes'] / max(m['clips'], 1) / 1024:.1f} KiB/clip, {state}")


def check_picture_args(n: int, *paths: str | None) -> None:
    """--n is a count of clips; every output picture's folder exists."""
    if n < 1:
        raise UserError(f"--n {n} must be >= 1")
    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise UserError(f"folder of {p} does not exist; create it or choose another path")


@cli.command()
@click.option("--recipe", default=None, help="Render clips of this recipe (name or file).")
@set_option
@click.option("--shards", type=click.Path(exists=True), default=None, help="Or read clips from this shard folder/file.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Contact sheet .png")
@click.option("--n", type=int, default=8, show_default=True, help="Number of clips.")
@click.option("--gif", type=click.Path(dir_okay=False), default=None, help="Also write an animated .gif.")
@click.option("--overlay-masks", is_flag=True, help="Tint each object's visible mask and draw its box.")
@click.option("--flow", is_flag=True,
              help="Show each frame's exact optical flow to the next frame beside it (Middlebury colours: hue = "
                   "direction, right red, down yellow, left cyan, up blue-violet; saturation = speed, white = still, "
                   "full colour = the clip's fastest pixel; black = undefined, e.g. evolving noise or real frames; "
                   "the sheet has a wheel legend). Shards need --annotations flow.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
def preview(recipe, overrides, shards, out, n, gif, overlay_masks, flow, seed, frames, size) -> None:
    """Write a contact sheet (and optionally a GIF) of a recipe or of shards."""
    import itertools

    from .preview import animated_grid, contact_sheet, save_gif, save_png

    if (recipe is None) == (shards is None):
        raise UserError("give exactly one of --recipe NAME or --shards DIR")
    check_picture_args(n, out, gif)
    if recipe is not None:
        from generators import render_clip
        from smile_synth.clip import check_geometry

        check_geometry(frames, size, "--frames", "--size")
        r = _load_recipe(recipe, overrides)
        clips = [render_clip(r, seed, i, frames, size, annotations=("flow",) if flow else ()) for i in range(n)]
    else:
        from smile_synth.shards import iter_clips

        try:
            clips = list(itertools.islice(iter_clips(shards), n))
        except ValueError as e:
            raise UserError(f"cannot decode a clip in {shards}: {e}; run `smile-synth inspect {shards} --verify`") from None
        if not clips:
            raise UserError(f"{shards} holds no clips; generate some with `smile-synth generate`")
        if flow and any(c.flow is None for c in clips):
            raise UserError(f"{shards} holds clips without flow; generate them with `smile-synth generate "
                            "--annotations flow`, or preview a --recipe")
    save_png(contact_sheet(clips, masks=overlay_masks, flow=flow), out)
    click.echo(f"wrote {out} ({len(clips)} clips)")
    if gif:
        save_gif(animated_grid(clips, masks=overlay_masks, flow=flow), gif)
        click.echo(f"wrote {gif}")


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--verify", is_flag=True, help="Decode every sample; exit non-zero if any is corrupt.")
def inspect(path, verify) -> None:
    """Counts, sizes and histograms of a shard folder; --verify decodes everything."""
    from .inspect import inspect as run

    rep = run(path, verify=verify, progress=sys.stderr.isatty())
    for line in rep.lines():
        click.echo(line)
    if rep.shards == 0:
        raise UserError(f"{path} holds no shard-*.tar files")
    if rep.corrupt or (verify and rep.problems):   # anything reported corrupt fails, with or without --verify
        click.echo(f"{'verify' if verify else 'inspect'}: FAILED ({len(rep.corrupt)} corrupt, {len(rep.missing)} missing, "
                   f"{len(rep.failed)} failed, {len(rep.duplicates)} duplicate, {len(rep.foreign)} foreign)")
        sys.exit(1)
    if verify:
        click.echo(f"verify: OK, all {rep.clips} clips decode")


@cli.command("export-pairs")
@click.argument("shards", type=click.Path(exists=True))
@click.option("--format", "fmt", type=RegistryChoice("smile_synth.app.export_pairs:FORMATS"), default="flo",
              show_default=True,
              help="flo: FlyingChairs layout, Middlebury .flo flow (0 where not valid; masks/ holds validity and "
                   "occlusion); kitti: KITTI 2015 layout, 16-bit PNG flow with a valid channel (flow_occ, flow_noc).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (new or empty).")
@click.option("--n", type=int, default=None, help="Export the pairs of at most N clips [default: all].")
@click.option("--images", "ext", type=RegistryChoice("smile_synth.app.export_pairs:IMAGE_FORMATS"), default="png",
              show_default=True, help="Frame files: png, or ppm as FlyingChairs ships them (what RAFT's reader globs).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_pairs(shards, fmt, out, n, ext, quiet) -> None:
    """Frame pairs of SHARDS (generated with --annotations flow) with their exact flow, for optical-flow
    training: layouts in smile_synth/app/export_pairs.py and the README."""
    from .export_pairs import VAL
    from .export_pairs import export_pairs as run

    if n is not None and n < 1:
        raise UserError(f"--n {n} must be >= 1")
    done = run(shards, out, fmt, n, ext, progress=not quiet)
    val = done.split.count(VAL)
    skipped = f"; skipped {len(done.skipped)} unreadable clips (first: {done.skipped[0]})" if done.skipped else ""
    click.echo(f"wrote {len(done.pairs)} pairs of {done.clips} clips to {out} ({fmt}: {len(done.pairs) - val} "
               f"training, {val} validation; list in {Path(out) / 'pairs.txt'}){skipped}")


pretrain_option = config_option(PRETRAIN)


def source_options(f):
    """Which clips a run trains on and how their tokens are masked (shared by `pretrain` and `masks`)."""
    option = pretrain_option
    options = [
        option("--source", type=RegistryChoice("training.config:SOURCES"),
               help="Training clips: synthetic (shards or --recipe), natural videos, or a mix."),
        option("--data", help="Shard folder (synthetic) or video list / folder (natural, mixed) "
               "[natural default: the real clips shipped in pip packages]."),
        option("--recipe", help="Render synthetic clips of this recipe on the fly, no disk "
               "[default when no --data: generators.recipes.DEFAULT_RECIPE, mixed]."),
        option("--synthetic-data", help="mixed: synthetic shards instead of --recipe."),
        option("--overlay", help="natural: overlay moving objects of this recipe (SMILE stage 1), e.g. overlay."),
        option("--mix-ratio", type=float, help="mixed: share of synthetic clips."),
        option("--sampling-rate", type=int, help="natural: frame stride."),
        option("--preset", type=PRESET_CHOICE, help="Student model (training.models.PRESETS)."),
        option("--frames", type=int, help="Frames per clip [the preset's]."),
        option("--size", type=int, help="Frame side in px [the preset's]."),
        option("--mask-ratio", type=float, help="Share of tokens masked."),
        option("--traj-unmask-ratio", type=float, help="Share of object tokens left visible."),
        option("--object-threshold", type=float, help="A token is an object token when this share of its pixels is object."),
        option("--seed", type=int),
        click.option("--config", "config_file", default=None,
                     help="YAML/JSON file of settings (keys as the options, with _); options override it."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Any other setting, e.g. --set object_threshold=0.5; recipe settings "
                          "(background.*, objects.*, motion.*) apply to --recipe/--overlay, e.g. --set motion.static=true."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def pretrain_config(config_file, settings, options: dict, **fixed):
    """PretrainConfig from a YAML/JSON file, --set assignments and the given options, validated."""
    from training.config import PretrainConfig

    from generators.recipes import RECIPE_SECTIONS

    from smile_synth.config import build, load_mapping, parse_assignment, set_path

    data = load_mapping(config_file) if config_file else {}
    recipe_set = []
    for text in settings:
        keys, value = parse_assignment(text)
        if keys[0] in RECIPE_SECTIONS:          # a recipe setting: for the recipe the run renders
            recipe_set.append(text)
            continue
        set_path(data, keys, value)
    if recipe_set:
        data["recipe_set"] = [*data.get("recipe_set", ()), *recipe_set]
    data.update({k: v for k, v in options.items() if v is not None})
    data.update(fixed)
    return build(PretrainConfig, data)


@cli.command()
@source_options
@pretrain_option("--target", type=RegistryChoice("training.targets:TARGETS"), help="What the student reconstructs.")
@pretrain_option("--teacher", help="open_clip model of the teacher.")
@pretrain_option("--teacher-pretrained", help="open_clip tag, local weights file, or none (random; tests only).")
@pretrain_option("--mask", type=RegistryChoice("training.masking:MASKS", extra=("auto",)),
                 help="tube, or tube+trajectory; auto = traj when the clips carry objects.")
@pretrain_option("--multiple-sampling", is_flag=True, help="Two masks per clip per step, teacher run once.")
@pretrain_option("--steps", type=int, help="Optimizer steps.")
@click.option("--epochs", type=float, cls=ConfigOption, config="training.config:DEFAULT_EPOCHS",
              help="Or passes over the dataset (the default, SMILE's schedule, applies when neither is given).")
@pretrain_option("--epoch-clips", type=int, help="Clips per epoch when clips are rendered on the fly.")
@pretrain_option("--batch-size", type=int, help="Clips per process and step.")
@pretrain_option("--lr", type=float, help="Base lr, scaled by global batch / 256 [the preset's: 1.5e-4; tiny 1.5e-3].")
@pretrain_option("--warmup", type=float, help="Linear warmup: a share of the steps (< 1) or a number of steps.")
@pretrain_option("--clip-grad", type=float, help="Clip the gradient norm to this.")
@pretrain_option("--precision", type=RegistryChoice("training.distributed:PRECISIONS"), help="auto: bf16 on GPU, fp32 on CPU.")
@pretrain_option("--compile", "compile", is_flag=True, help="torch.compile the student (for GPUs).")
@pretrain_option("--workers", type=int, help="DataLoader workers per process.")
@pretrain_option("--render-device", help="Paint rendered clips and overlays on this torch device (cuda, cpu, ...) instead of in the workers.")
@pretrain_option("--out", help="Run folder: checkpoints, log.jsonl, encoder.pt.")
@pretrain_option("--save-every", type=int, help="Checkpoint every N steps.")
@pretrain_option("--log-every", type=int, help="Write log.jsonl every N steps.")
@pretrain_option("--keep-every", type=int, help="Also keep checkpoint-STEP.pt every N steps.")
@pretrain_option("--grad-checkpointing", is_flag=True, help="Recompute transformer blocks in backward: less memory, more time.")
@pretrain_option("--max-bad-share", type=float, help="Stop when more than this share of samples is unreadable.")
@pretrain_option("--resume", help="auto (continue OUT/checkpoint.pt if any), none, or a checkpoint path.")
@pretrain_option("--init", help="Start from these weights (e.g. stage 1's checkpoint for stage 2).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(config_file, settings, quiet, **options) -> None:
    """SMILE pretraining: masked CLIP-feature (or pixel) reconstruction with synthetic motion."""
    from training.trainer import pretrain as run

    cfg = pretrain_config(config_file, settings, options, **({"progress": False} if quiet else {}))
    info = run(cfg)
    if _env_int("RANK", 0) == 0:  # under torchrun, one summary line
        click.echo(f"{cfg.out}: {info['steps']} steps, {info['clips_seen']} clips seen; "
                   f"encoder weights in {cfg.out}/encoder.pt")


@cli.command()
@source_options
@click.option("--n", type=int, default=4, show_default=True, help="Number of clips.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Picture (.png).")
def masks(config_file, settings, n, out, **options) -> None:
    """Picture of the masks a pretraining run would use: per clip, frames with object tokens tinted,
    then the tube mask and the tube + trajectory mask (masked tokens grey)."""
    from .masks import preview_masks

    from .preview import save_png

    check_picture_args(n, out)
    cfg = pretrain_config(config_file, settings, options, steps=1, target="pixel", progress=False)
    save_png(preview_masks(cfg, n), out)
    click.echo(f"wrote {out} ({n} clips: frames with object tokens, tube mask, tube + trajectory mask)")


def probe_options(f):
    """How examples are drawn and features pooled (shared by `eval` and `compare`)."""
    option = config_option(EVAL)   # the same defaults as CompareConfig's (tests/test_cli_defaults.py)
    options = [
        option("--test-data", help="Separate test list/folder [default: k folds by source video]."),
        option("--folds", type=int, help="Folds by source video when there is no --test-data."),
        option("--windows", type=int, help="Motion tasks: window positions per video."),
        option("--clips", type=int, help="Labels task: temporal clips per video, averaged."),
        option("--crops", type=int, help="Spatial crops per clip, averaged."),
        click.option("--cache-dir", default=None,
                     help="Feature cache [$SMILE_SYNTH_CACHE or ~/.cache/smile-synth/features]; '' disables."),
        click.option("--quiet", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


TASK_CHOICE = RegistryChoice("eval.tasks:TASKS")
PROBE_TASK_CHOICE = RegistryChoice("eval.tasks:TASKS", extra=("flow",))   # + eval.flow_probe.TASK: frozen probes only
PROBE_CHOICE = RegistryChoice("eval.probes:PROBES")
eval_option = config_option(EVAL)
compare_option = config_option(COMPARE)


@cli.command("eval")
@click.option("--checkpoint", default=None, help="encoder.pt, checkpoint.pt, a run folder, or a VideoMAE/SMILE checkpoint.")
@click.option("--random-init", is_flag=True, help="No weights: the scratch baseline of --preset.")
@click.option("--preset", type=PRESET_CHOICE, default=None, help="Student model (needed for --random-init and VideoMAE files).")
@click.option("--data", default=None, help="Video list ('path label' per line) or folder (one subfolder per class); "
              "not for --task flow, which renders its own held-out clips.")
@eval_option("--task", type=PROBE_TASK_CHOICE, help="flow: per-token ridge regression of exact flow, reported as "
             "end-point error (lower is better); the others: --probe on video examples, top-1.")
@eval_option("--probe", type=PROBE_CHOICE)
@click.option("--out", required=True, help="Folder for metrics.json.")
@eval_option("--seed", type=int, help="Folds, the probe, and the random init.")
@click.option("--stride", type=int, default=None, cls=TaskStrideOption, help="Frame stride (speed: x1, x2, x4 of it).")
@probe_options
def evaluate(out, quiet, **options) -> None:
    """Probe a frozen encoder: class labels, arrow of time, playback speed or token flow; writes OUT/metrics.json."""
    from eval.evaluate import EvalConfig, summary_line
    from eval.evaluate import evaluate as run

    m = run(EvalConfig(out=out, progress=not quiet, **given(options)))
    click.echo(f"{summary_line(m)} -> {Path(out) / 'metrics.json'}")


finetune_option = config_option(FINETUNE)


@cli.command()
@finetune_option("--checkpoint", help="Weights in: encoder.pt, checkpoint.pt, a run folder, a VideoMAE/SMILE or "
                 "transformers VideoMAE checkpoint, or a fine-tuned classifier (for --eval-only).")
@finetune_option("--random-init", is_flag=True, help="No weights: the scratch baseline of --preset.")
@finetune_option("--preset", type=PRESET_CHOICE, help="Student model (for --random-init and files that do not name their model).")
@finetune_option("--frames", type=int, help="Frames per clip [the checkpoint's or preset's].")
@finetune_option("--size", type=int, help="Frame side in px [the checkpoint's or preset's].")
@finetune_option("--data", required=True, help="Video list ('path label' per line) or folder (one subfolder per class).")
@finetune_option("--test-data", help="Separate test list/folder [default: --folds by source video].")
@finetune_option("--folds", type=int, help="Folds by source video when there is no --test-data (each a whole run).")
@finetune_option("--fold", type=int, help="Run only this fold (0-based), e.g. one per machine.")
@finetune_option("--task", type=TASK_CHOICE, help="labels (the list's classes), or a label-free motion task.")
@click.option("--stride", type=int, default=None, cls=TaskStrideOption, help="Frame stride (speed: x1, x2, x4 of it).")
@finetune_option("--windows", type=int, help="Motion tasks: window positions per video.")
@finetune_option("--flip/--no-flip", "flip", default=None, help="Random horizontal flip (off for SSv2-style data).")
@finetune_option("--min-crop-scale", type=float, help="Random resized crop: smallest area share (VideoMAE: 0.08).")
@finetune_option("--epochs", type=float, help="Passes over the training videos.")
@finetune_option("--steps", type=int, help="Or optimizer steps (overrides --epochs).")
@finetune_option("--batch-size", type=int, help="Videos per process and step (each gives --repeated-aug clips).")
@finetune_option("--lr", type=float, help="Base lr; actual = lr x global batch / 256.")
@finetune_option("--min-lr", type=float)
@finetune_option("--warmup-lr", type=float)
@finetune_option("--warmup-epochs", type=float)
@finetune_option("--weight-decay", type=float)
@finetune_option("--layer-decay", type=float, help="Layer-wise lr decay (1 = none).")
@finetune_option("--drop-path", type=float)
@finetune_option("--head-dropout", type=float, help="Dropout before the head (VideoMAE's --fc_drop_rate).")
@finetune_option("--label-smoothing", type=float)
@finetune_option("--mixup", type=float, help="Mixup alpha (0 = off).")
@finetune_option("--cutmix", type=float, help="CutMix alpha (0 = off).")
@finetune_option("--mixup-prob", type=float, help="Share of batches mixed.")
@finetune_option("--mixup-switch-prob", type=float, help="Share of mixed batches that use CutMix.")
@finetune_option("--aa", help="timm RandAugment spec, or none.")
@finetune_option("--reprob", type=float, help="Random erasing probability.")
@finetune_option("--repeated-aug", type=int, help="Augmented clips per loaded video (VideoMAE's --num_sample).")
@finetune_option("--clip-grad", type=float, help="Clip the gradient norm to this.")
@finetune_option("--test-clips", type=int, help="Temporal clips per test video (labels task).")
@finetune_option("--test-crops", type=int, help="Spatial crops per test clip.")
@finetune_option("--eval-only", is_flag=True, help="Test the fine-tuned classifier given as --checkpoint; no training.")
@finetune_option("--allow-overlap", is_flag=True, help="Let --test-data share videos with --data (else an error).")
@finetune_option("--precision", type=RegistryChoice("training.distributed:PRECISIONS"), help="auto: bf16 on GPU, fp32 on CPU.")
@finetune_option("--workers", type=int, help="DataLoader workers per process.")
@finetune_option("--out", help="Run folder: checkpoint.pt, log.jsonl, classifier.safetensors, metrics.json, confusion.png "
                 "[default: runs/finetune; --eval-only: a new folder beside the tested run, RUN-eval].")
@finetune_option("--save-every", type=int, help="Checkpoint every N steps.")
@finetune_option("--log-every", type=int, help="Write log.jsonl every N steps.")
@finetune_option("--resume", help="auto (continue OUT/checkpoint.pt if any), none, or a checkpoint path.")
@finetune_option("--max-bad-share", type=float, help="Stop when more than this share of training videos is unreadable.")
@finetune_option("--seed", type=int, help="Folds, init, data order and augmentation.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def finetune(quiet, **options) -> None:
    """Fine-tune an encoder end to end on labelled video (VideoMAE's recipe), then test it: OUT/metrics.json."""
    from eval.finetune.config import FinetuneConfig
    from eval.finetune.run import finetune as run
    from eval.finetune.run import summary_line

    cfg = FinetuneConfig(**given(options), **({"progress": False} if quiet else {}))
    m = run(cfg)
    if _env_int("RANK", 0) == 0:
        click.echo(f"{summary_line(m)} -> {Path(m['config']['out']) / 'metrics.json'}")


@cli.command()
@click.option("--run", "runs", multiple=True, metavar="NAME=PATH",
              help="A pretraining output folder or checkpoint (repeatable; a name given k times = k seed replicates).")
@click.option("--scratch", is_flag=True, help="Add the random-init baseline (same geometry as the runs).")
@click.option("--data", default=None, help="Videos to evaluate on [none and no --run: the embedded default study].")
@compare_option("--task", "tasks", type=PROBE_TASK_CHOICE, multiple=True,
                help="Repeatable; flow needs no --data (a ridge probe's end-point error, lower is better).")
@compare_option("--probe", "probes", type=RegistryChoice("eval.probes:PROBES", extra=("finetune",)), multiple=True,
                help="Repeatable; finetune = end-to-end fine-tuning (`smile-synth finetune`) of every run and seed.")
@click.option("--finetune-set", "finetune_settings", multiple=True, metavar="KEY=VALUE",
              help="A fine-tuning setting for --probe finetune, as `finetune`'s options with _ (e.g. steps=300).")
@compare_option("--seeds", type=int)
@click.option("--preset", type=PRESET_CHOICE, default=None, help="Scratch's preset when no --run gives one.")
@compare_option("--steps", type=int, help="Embedded study: pretraining steps per run [its protocol's].")
@compare_option("--protocol", type=RegistryChoice("eval.compare:PROTOCOLS"),
                help="Embedded study: cpu (eval/study.py) or gpu, the study on one GPU (eval/gpu_study.py).")
@compare_option("--device", help="--protocol gpu: the torch device it runs on [cuda].")
@compare_option("--data-dir", help="--protocol gpu: the prepared data (`bash benchmarks/device_study.sh --prepare`) "
                "[prepared into OUT/data, which needs PyAV].")
@compare_option("--pilot", is_flag=True, default=None,
                help="--protocol gpu: the pilot (scratch and the pilot regime, a ladder of fine-tuning budgets) "
                     "that fixes the protocol: pilot.md, pilot.json.")
@compare_option("--dry-run", is_flag=True, default=None, help="--protocol gpu: every stage for a few steps at tiny sizes.")
@click.option("--out", required=True, help="Folder for report.md, report.csv, report.png.")
@probe_options
def compare(runs, scratch, data, tasks, probes, out, cache_dir, quiet, finetune_settings, **options) -> None:
    """Pretrained encoders (and scratch) side by side over seeds; with no --run/--data, the embedded study."""
    from eval.compare import CompareConfig, parse_run
    from eval.compare import compare as run

    if cache_dir is None and not runs and not data:   # the embedded study keeps its features beside its report
        cache_dir = str(Path(out) / "features")
    from smile_synth.config import parse_assignment

    settings = {}
    for text in finetune_settings:
        keys, value = parse_assignment(text)
        settings[".".join(keys)] = value
    if options.get("protocol") == "gpu" and options.get("seeds") is None:
        from eval.gpu_study import GpuProtocol
        options["seeds"] = GpuProtocol.seeds      # the GPU study's own default number of seeds
    cfg = CompareConfig(runs=tuple(parse_run(r) for r in runs), scratch=scratch, data=data, out=out, cache_dir=cache_dir,
                        finetune_settings=settings,
                        progress=not quiet, **({"tasks": tasks} if tasks else {}), **({"probes": probes} if probes else {}),
                        **given(options))
    folder = run(cfg)
    if cfg.protocol == "gpu":
        report = folder / ("pilot.md" if cfg.pilot else "report.md")
        click.echo(f"wrote {report}" + ("" if cfg.pilot else ", results.json, report.png and loss.png"))
    else:
        report = folder / "report.md"
        click.echo(f"wrote {report}, report.csv and report.png")
    if not quiet:
        click.echo(report.read_text())


from .export import export_command  # noqa: E402 - light (click only); its work imports when run
cli.add_command(export_command)


def main() -> None:
    cli(prog_name="smile-synth")


if __name__ == "__main__":
    main()
