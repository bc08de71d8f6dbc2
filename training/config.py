"""PretrainConfig: every setting of a pretraining run, validated once at the edge (CLI / YAML)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from generators.recipes import DEFAULT_RECIPE, get_recipe
from smile_synth.config import AT_LEAST_1, MAX_FRAMES, MAX_SIZE, MAX_WORKERS, POSITIVE, SHARE, Bounds, check_bounds
from smile_synth.errors import UserError

from .distributed import PRECISIONS
from .masking import mask_choices, resolve_mask_kind
from .targets import TARGETS

SOURCES = ("synthetic", "natural", "mixed")
# base lr (scaled by batch / 256): VideoMAE's for the real models; the CPU demo model learns in a few
# hundred steps only with a larger one
# SMILE's (and VideoMAE's) K400 pretraining budget: 400 epochs, warmup 5% of the steps
DEFAULT_EPOCHS = 400
DEFAULT_BASE_LR = {"micro": 1.5e-3, "micro8": 1.5e-3, "tiny": 1.5e-3, "small": 1.5e-4, "base": 1.5e-4, "large": 1.5e-4}

# what each number may be (nan and inf never are); sizes whose product must fit in memory are checked by the trainer
BOUNDS = {
    "steps": AT_LEAST_1, "epoch_clips": AT_LEAST_1, "batch_size": AT_LEAST_1, "save_every": AT_LEAST_1,
    "keep_every": AT_LEAST_1, "log_every": AT_LEAST_1, "sampling_rate": AT_LEAST_1,
    "workers": Bounds(0, MAX_WORKERS), "frames": Bounds(2, MAX_FRAMES), "size": Bounds(16, MAX_SIZE),
    "epochs": POSITIVE, "mask_ratio": Bounds(0, 1, open_low=True, open_high=True),
    "traj_unmask_ratio": SHARE, "mix_ratio": SHARE, "max_bad_share": SHARE,
    "object_threshold": Bounds(0, 1, open_low=True), "drop_path": Bounds(0, 1, open_high=True),
    "lr": POSITIVE, "warmup": Bounds(0), "weight_decay": Bounds(0), "clip_grad": POSITIVE,
}


def check_render_device(name: str, option: str = "--render-device", hint: str = " or leave it out") -> torch.device:
    """The torch device `name` (given as `option`), or one line saying why it cannot be used here (ending
    in `hint` where it suggests cpu instead)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{option} {name!r} is not a torch device; use cuda, cuda:N or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {name}: no CUDA device is available here; use {option} cpu{hint}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{option} {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option} {name}: MPS is not available here; use {option} cpu{hint}")
    return device


@dataclass(frozen=True)
class PretrainConfig:
    # data
    source: str = "synthetic"            # synthetic | natural | mixed
    data: str | None = None              # shards (synthetic) or video list / folder (natural, mixed); None = embedded / --recipe
    recipe: str | None = None            # render synthetic clips on the fly (synthetic, mixed); None = DEFAULT_RECIPE unless shards
    synthetic_data: str | None = None    # mixed: synthetic shards instead of --recipe
    overlay: str | None = None           # natural: recipe of objects overlaid on the clips (SMILE stage 1)
    recipe_set: tuple[str, ...] = ()     # recipe settings KEY=VALUE for --recipe and --overlay, e.g. motion.static=true
    mix_ratio: float = 0.5               # mixed: share of synthetic clips
    sampling_rate: int = 4               # natural: frame stride
    max_bad_share: float = 0.1           # stop when more than this share of samples is unreadable
    # model
    preset: str = "tiny"
    frames: int | None = None            # None = the preset's
    size: int | None = None
    drop_path: float = 0.0
    # target
    target: str = "clip"
    teacher: str = "ViT-B-16"
    teacher_pretrained: str = "openai"
    # masking
    mask: str = "auto"                   # auto = traj when clips carry objects, else tube
    mask_ratio: float = 0.8
    traj_unmask_ratio: float = 0.1
    object_threshold: float = 0.25       # token is an object token when this share of its pixels is object
    multiple_sampling: bool = False
    # optimisation
    steps: int | None = None
    epochs: float | None = None          # neither --steps nor --epochs: DEFAULT_EPOCHS (SMILE's schedule)
    epoch_clips: int = 240_000           # clips per epoch for clips rendered on the fly (one Kinetics-400 epoch)
    batch_size: int = 8                  # per process
    lr: float | None = None              # base lr; actual = lr x global batch / 256; None = the preset's
    warmup: float = 0.05                 # share of steps (< 1) or a number of steps (>= 1)
    weight_decay: float = 0.05
    clip_grad: float | None = None
    precision: str = "auto"              # auto = bf16 autocast on GPU, fp32 on CPU
    compile: bool = False                # torch.compile the student (worth it on GPUs; minutes of compile on CPU)
    grad_checkpointing: bool = False     # recompute blocks in backward (ViT-S b8 CPU: +26% time, RSS 3.15 -> 2.05 GiB)
    # run
    workers: int = 2
    render_device: str | None = None     # render synthetic clips and overlays on this torch device (cuda, cpu, ...); None = numpy in the workers
    out: str = "runs/pretrain"
    save_every: int = 1000
    keep_every: int | None = None        # also keep checkpoint-STEP.pt every this many steps (e.g. for stage 2)
    log_every: int = 10
    resume: str | None = "auto"          # auto = continue from OUT/checkpoint.pt if present; none; or a path
    init: str | None = None              # start from these weights (stage 2 from stage 1)
    seed: int = 0
    progress: bool = True

    def validate(self) -> PretrainConfig:
        def choice(name, value, allowed):
            if value not in allowed:
                raise UserError(f"--{name.replace('_', '-')} {value!r} is not one of {', '.join(allowed)}")
        choice("source", self.source, SOURCES)
        choice("target", self.target, tuple(TARGETS))
        choice("mask", self.mask, mask_choices())
        choice("precision", self.precision, PRECISIONS)
        if self.source == "synthetic" and self.data is not None and self.recipe is not None:
            raise UserError("--source synthetic takes --data SHARDS or --recipe NAME (render on the fly), not both")
        if self.source == "natural" and (self.recipe or self.synthetic_data):
            raise UserError("--source natural takes no --recipe/--synthetic-data; use --overlay RECIPE to add objects, or --source mixed")
        if self.source == "mixed" and self.recipe is not None and self.synthetic_data is not None:
            raise UserError("--source mixed takes --recipe NAME or --synthetic-data SHARDS for its synthetic part, not both")
        if self.overlay and self.source == "synthetic":
            raise UserError("--overlay adds objects onto natural clips; synthetic clips carry their own objects")
        if self.recipe_set:
            if not self.rendered_recipes:
                raise UserError(f"recipe setting {self.recipe_set[0]!r} needs clips rendered from a recipe "
                                "(--recipe, or --overlay on natural clips)")
            for name in self.rendered_recipes:
                get_recipe(name, self.recipe_set)                # a bad key or value fails here, in one line
        if self.steps is not None and self.epochs is not None:
            raise UserError("give --steps N or --epochs E, not both")
        check_bounds(self, BOUNDS)
        if self.render_device is not None:
            if not self.rendered_recipes:
                raise UserError("--render-device renders clips from a recipe (--recipe, or --overlay on natural clips); "
                                "this run reads all its clips from files: leave --render-device out")
            check_render_device(self.render_device)
        if self.preset not in DEFAULT_BASE_LR:
            raise UserError(f"unknown --preset {self.preset!r}; choose one of {', '.join(DEFAULT_BASE_LR)}")
        return self

    @property
    def synthetic_recipe(self) -> str:
        return self.recipe or DEFAULT_RECIPE

    @property
    def rendered_recipe(self) -> str | None:
        """The recipe this run's synthetic clips are rendered from on the fly; None when it has no
        synthetic clips or reads them from shards."""
        shards = self.data if self.source == "synthetic" else self.synthetic_data
        return self.synthetic_recipe if self.source != "natural" and shards is None else None

    @property
    def rendered_recipes(self) -> tuple[str, ...]:
        """The recipes this run renders clips or overlays from (none when all clips come from shards/videos)."""
        return tuple(r for r in (self.rendered_recipe, self.overlay) if r)

    @property
    def has_objects(self) -> bool:
        return self.source != "natural" or self.overlay is not None

    @property
    def mask_kind(self) -> str:
        return resolve_mask_kind(self.mask, self.has_objects)

    @property
    def schedule_epochs(self) -> float:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_BASE_LR[self.preset]
