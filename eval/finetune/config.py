"""FinetuneConfig: every setting of `smile-synth finetune`, validated once at the edge.

Defaults are VideoMAE's fine-tuning recipe (run_class_finetuning.py with its Kinetics settings):
AdamW (0.9, 0.999), lr = base lr x global batch / 256 with base lr 1e-3, layer decay 0.75, weight
decay 0.05, drop path 0.1, 5 warmup epochs then cosine to 1e-6, label smoothing 0.1, mixup 0.8 /
cutmix 1.0, RandAugment rand-m7-n4-mstd0.5-inc1, random erasing 0.25, repeated augmentation 2, and
5 clips x 3 crops at test. The README lists the small-dataset values (UCF101, HMDB51).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from smile_synth.config import AT_LEAST_1, MAX_FRAMES, MAX_SIZE, MAX_WORKERS, POSITIVE, SHARE, Bounds, check_bounds
from smile_synth.errors import UserError
from training.distributed import PRECISIONS

DEFAULT_OUT = "runs/finetune"
EVAL_SUFFIX = "-eval"      # --eval-only's default --out: the tested run's folder + this
BELOW_1 = Bounds(0, 1, open_high=True)
# what each number may be (nan and inf never are); sizes whose product must fit in memory are checked in run.py
BOUNDS = {
    "folds": Bounds(2), "fold": Bounds(0), "batch_size": AT_LEAST_1, "repeated_aug": AT_LEAST_1, "test_clips": AT_LEAST_1,
    "test_crops": AT_LEAST_1, "windows": AT_LEAST_1, "save_every": AT_LEAST_1, "log_every": AT_LEAST_1,
    "steps": AT_LEAST_1, "stride": AT_LEAST_1, "workers": Bounds(0, MAX_WORKERS),
    "frames": Bounds(2, MAX_FRAMES), "size": Bounds(8, MAX_SIZE),
    "epochs": POSITIVE, "lr": POSITIVE, "clip_grad": POSITIVE,
    "min_lr": Bounds(0), "warmup_lr": Bounds(0), "warmup_epochs": Bounds(0), "weight_decay": Bounds(0),
    "mixup": Bounds(0), "cutmix": Bounds(0),
    "layer_decay": SHARE, "mixup_prob": SHARE, "mixup_switch_prob": SHARE, "reprob": SHARE, "max_bad_share": SHARE,
    "drop_path": BELOW_1, "head_dropout": BELOW_1, "label_smoothing": BELOW_1,
    "min_crop_scale": Bounds(0, 1, open_low=True),
}


@dataclass(frozen=True)
class FinetuneConfig:
    # weights in
    checkpoint: str | None = None        # ours (encoder.pt, checkpoint.pt, run folder) or VideoMAE/SMILE's
    random_init: bool = False            # the scratch baseline of --preset
    preset: str | None = None            # needed for --random-init and files that do not name their model
    frames: int | None = None            # None = the checkpoint's (or the preset's)
    size: int | None = None
    # data
    data: str | None = None              # video list ('path label') or folder (one subfolder per class)
    test_data: str | None = None         # separate test list; else --folds by source video
    folds: int = 3                       # each fold is a whole fine-tuning run
    fold: int | None = None              # run only this fold (0-based): one fold per machine
    task: str = "labels"                 # labels | arrow-of-time | speed (eval/tasks.py)
    stride: int | None = None            # frame stride; None = the task's default (labels: 4, VideoMAE's)
    windows: int = 8                     # motion tasks: window positions per video
    flip: bool = True                    # random horizontal flip (off for SSv2-style left/right classes)
    min_crop_scale: float = 0.08         # random resized crop's smallest area share (VideoMAE's 0.08)
    # recipe
    epochs: float = 100                  # passes over the training videos
    steps: int | None = None             # or a number of optimizer steps (overrides --epochs)
    batch_size: int = 8                  # videos per process and step (x repeated_aug clips)
    lr: float = 1e-3                     # base lr; actual = lr x global batch / 256
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_epochs: float = 5
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    head_dropout: float = 0.0
    label_smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    aa: str | None = "rand-m7-n4-mstd0.5-inc1"   # timm RandAugment spec; none/None disables
    reprob: float = 0.25                 # random erasing probability
    repeated_aug: int = 2                # augmented clips per loaded video (VideoMAE's --num_sample)
    clip_grad: float | None = None
    # test
    test_clips: int = 5                  # temporal clips per test video (labels task; SSv2-style data: 2)
    test_crops: int = 3                  # spatial crops per clip
    eval_only: bool = False              # test --checkpoint (a fine-tuned classifier) without training
    allow_overlap: bool = False          # let --test-data share videos with --data (else one error line)
    # run
    precision: str = "auto"              # auto = bf16 autocast on GPU, fp32 on CPU
    workers: int = 2
    out: str | None = None               # None: DEFAULT_OUT; --eval-only: the tested run's folder + EVAL_SUFFIX
    save_every: int = 500                # checkpoint every N steps (and at the end)
    log_every: int = 10
    resume: str | None = "auto"          # auto = continue OUT/checkpoint.pt if present; none; or a path
    max_bad_share: float = 0.1           # stop when more than this share of training samples is unreadable
    seed: int = 0
    progress: bool = True

    def validate(self) -> FinetuneConfig:
        from training.models import PRESETS

        from ..tasks import TASKS
        if self.data is None:
            raise UserError("give --data: a video list ('path label' per line) or a folder with one subfolder per class")
        if self.task not in TASKS:
            raise UserError(f"--task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if (self.checkpoint is None) == (not self.random_init):
            raise UserError("give --checkpoint PATH or --random-init (with --preset), not both or neither")
        if self.random_init and self.preset is None:
            raise UserError("--random-init needs --preset (" + ", ".join(PRESETS) + ")")
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"unknown --preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.eval_only and self.checkpoint is None:
            raise UserError("--eval-only tests a fine-tuned classifier: give it as --checkpoint")
        check_bounds(self, BOUNDS)
        if self.fold is not None and self.fold >= self.folds:
            raise UserError(f"--fold {self.fold} must be below --folds {self.folds}")
        if self.mixes and not self.eval_only and self.batch_size * self.repeated_aug < 2:
            raise UserError("mixup/cutmix pair the clips of a batch: --batch-size x --repeated-aug must be >= 2 "
                            "(or --mixup-prob 0)")
        if self.augment_spec is not None:
            check_rand_augment(self.augment_spec)
        return self if self.out is not None else dataclasses.replace(self, out=self.default_out)

    @property
    def default_out(self) -> str:
        """--out when not given: runs/finetune, or for --eval-only a new folder beside the run it tests
        (RUN-eval), so testing never writes into that run."""
        if not self.eval_only:
            return DEFAULT_OUT
        return f"{evaluated_run(self.checkpoint)}{EVAL_SUFFIX}"

    @property
    def sampling_stride(self) -> int:
        from ..tasks import TASKS
        return self.stride or TASKS[self.task].default_stride

    @property
    def augment_spec(self) -> str | None:
        return None if self.aa in (None, "", "none", "None") else self.aa

    @property
    def mixes(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


def evaluated_run(checkpoint: str) -> Path:
    """The run folder --eval-only tests: the --checkpoint folder, or the folder of one of a run's own files
    (classifier.safetensors, checkpoint.pt, ...); any other weights file stands for itself (suffix dropped)."""
    from training.checkpoint import RUN_FILES
    path = Path(checkpoint)
    run = path if path.is_dir() else path.parent if path.name in RUN_FILES else path.with_suffix("")
    return run if run.name else run.resolve()     # "." -> the current folder's own name


def check_rand_augment(spec: str) -> None:
    """One UserError line when timm cannot parse the RandAugment spec."""
    from timm.data.auto_augment import rand_augment_transform
    try:
        rand_augment_transform(spec, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except Exception as e:  # noqa: BLE001 - timm raises AssertionError/ValueError/KeyError for bad specs
        raise UserError(f"--aa {spec!r} is not a timm RandAugment spec ({type(e).__name__}); use e.g. "
                        "rand-m7-n4-mstd0.5-inc1, or none") from None
