"""`smile-synth eval`: a frozen encoder, a probe, a task -> metrics.json.

encoder (checkpoint or random init) -> examples of the task -> cached features -> split by source
video (given train/test lists, or k folds) -> probe -> top-1 / top-5. The `flow` task (eval/flow_probe.py)
renders its own held-out clips instead (no --data) and reports the end-point error of a per-token ridge probe.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from smile_synth.config import Bounds, check_bounds
from smile_synth.errors import UserError
from smile_synth.video import VideoItem, by_class_name, folder_classes, read_video_list

from .encoders import encoder_source  # noqa: F401 - moved to eval/encoders.py (no PyAV); callers import it from here
from .features import ExampleSpec, FeatureSet, cached_extract
from .flow_probe import TASK as FLOW_TASK
from .flow_probe import flow_metrics
from .flow_probe import summary_line as flow_summary_line
from .probes import PROBES, probe_metrics  # noqa: F401 - probe_metrics: moved to eval/probes.py, likewise
from .tasks import TASKS


def default_cache_dir() -> Path:
    root = os.environ.get("SMILE_SYNTH_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / ("features" if os.environ.get("SMILE_SYNTH_CACHE") else "smile-synth/features")


def check_counts(cfg, names: tuple[str, ...]) -> None:
    """One-line UserError for a count option below its minimum (2 for folds, else 1); None is unset."""
    check_bounds(cfg, {name: Bounds(2 if name == "folds" else 1) for name in names})


@dataclass(frozen=True)
class EvalConfig:
    data: str | None = None              # videos; None only for --task flow (it renders its own clips)
    checkpoint: str | None = None        # None with random_init = the scratch baseline
    random_init: bool = False
    preset: str | None = None            # needed for VideoMAE checkpoints and --random-init
    test_data: str | None = None         # separate test list; else k-fold by source video
    task: str = "labels"
    probe: str = "linear"
    out: str | None = None
    seed: int = 0                        # folds, the probe's inner CV, the random init
    folds: int = 5
    stride: int | None = None            # None = the task's default_stride (eval/tasks.py)
    windows: int = 8
    clips: int = 2
    crops: int = 3
    cache_dir: str | None = None         # None = default_cache_dir(); "" disables
    progress: bool = True

    def validate(self) -> EvalConfig:
        if self.task not in TASKS and self.task != FLOW_TASK:
            raise UserError(f"--task {self.task!r} is not one of {', '.join((FLOW_TASK, *TASKS))}")
        if self.data is None and self.task != FLOW_TASK:
            raise UserError(f"--task {self.task} needs --data (a video list or folder); only --task {FLOW_TASK} "
                            "makes its own clips")
        if self.task == FLOW_TASK and (self.data or self.test_data):
            raise UserError(f"--task {FLOW_TASK} renders its own held-out clips; leave out --data and --test-data")
        if self.probe not in PROBES:
            raise UserError(f"--probe {self.probe!r} is not one of {', '.join(PROBES)}")
        if (self.checkpoint is None) == (not self.random_init):
            raise UserError("give --checkpoint PATH or --random-init (with --preset), not both or neither")
        from training.models import PRESETS
        if self.random_init and self.preset is None:
            raise UserError(f"--random-init needs --preset ({', '.join(PRESETS)})")
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise UserError(f"unknown --preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        check_counts(self, ("folds", "windows", "clips", "crops", "stride"))
        return self

    @property
    def sampling_stride(self) -> int:
        return self.stride or TASKS[self.task].default_stride


# ---------------------------------------------------------------------------------------- encoder

# ------------------------------------------------------------------------------------------ data

def labelled_items(data: str, task: str, what: str = "--data", min_classes: int = 2) -> list[VideoItem]:
    items = read_video_list(data)
    if TASKS[task].needs_labels:
        missing = sum(it.label is None for it in items)
        if missing:
            raise UserError(f"{what} {data}: {missing} of {len(items)} videos have no label; --task labels needs "
                            "'path label' lines or one subfolder per class (or use --task arrow-of-time / speed)")
        classes = {it.label for it in items}
        if len(classes) < min_classes:
            raise UserError(f"{what} {data} has {len(classes)} class; --task labels needs at least {min_classes}")
        if min(classes) < 0:
            raise UserError(f"{what} {data}: labels must be class indices >= 0 (found {min(classes)})")
    return items


def features(cfg: EvalConfig, encoder_id, spec: ExampleSpec, load, items: list[VideoItem], data: str,
             what: str) -> FeatureSet:
    """Cached features of `items` (read from `data`, named `what` in messages)."""
    cache = default_cache_dir() if cfg.cache_dir is None else (Path(cfg.cache_dir) if cfg.cache_dir else None)
    fs, _ = cached_extract(encoder_id, load, items, spec, cache, cfg.progress)
    if len(fs.labels) == 0:
        raise UserError(f"{what} {data}: none of its {len(items)} videos could be used ({len(fs.skipped)} unreadable "
                        f"or shorter than the {spec.task} task needs); see the warnings above")
    return fs


# ----------------------------------------------------------------------------------------- probing

def split_features(cfg: EvalConfig, encoder_id, s, load) -> tuple[FeatureSet, FeatureSet | None]:
    """Features of --data and (if given) --test-data for cfg.task, with the encoder geometry `s`."""
    spec = ExampleSpec(cfg.task, s.frames, s.size, cfg.sampling_stride, cfg.windows, cfg.clips, cfg.crops)
    items = labelled_items(cfg.data, cfg.task)
    train = features(cfg, encoder_id, spec, load, items, cfg.data, "--data")
    if not cfg.test_data:
        return train, None
    # a test folder of classes is labelled by --data's class names (it may lack some: its own numbering would shift)
    classes = folder_classes(items, cfg.data) if TASKS[cfg.task].needs_labels else None
    test_items = labelled_items(cfg.test_data, cfg.task, "--test-data", min_classes=1 if classes else 2)
    if classes:
        test_items = by_class_name(test_items, cfg.test_data, classes, "--test-data")
    return train, features(cfg, encoder_id, spec, load, test_items, cfg.test_data, "--test-data")


def evaluate(cfg: EvalConfig) -> dict:
    """Run one evaluation; writes OUT/metrics.json when cfg.out is set. Returns the metrics."""
    cfg = cfg.validate()
    encoder_id, s, summary, load = encoder_source(cfg.checkpoint, cfg.preset, cfg.seed)
    if cfg.task == FLOW_TASK:
        metrics = flow_metrics(load, s, cfg.seed)
    else:
        train, test = split_features(cfg, encoder_id, s, load)
        metrics = probe_metrics(train, test, cfg.task, cfg.probe, cfg.seed, cfg.folds)
        skipped = {**train.skipped, **(test.skipped if test is not None else {})}
        metrics.update({"skipped_videos": len(skipped), "skipped": skipped})
    metrics.update({
        "encoder": {"checkpoint": cfg.checkpoint, "random_init": cfg.random_init, "frames": s.frames,
                    "size": s.size, "dim": s.dim, "depth": s.depth, "pretraining": summary},
        "config": asdict(cfg),
    })
    if cfg.out:
        from smile_synth.atomic import write_json_atomic
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summary_line(m: dict) -> str:
    if m["task"] == FLOW_TASK:
        return flow_summary_line(m)
    top5 = f", top-5 {100 * m['top5']:.1f}%" if m.get("top5") is not None else ""
    skipped = f"; {m['skipped_videos']} videos skipped" if m.get("skipped_videos") else ""
    return (f"{m['task']} / {m['probe']}: top-1 {100 * m['top1']:.1f}%{top5} (chance {100 * m['chance']:.1f}%) "
            f"on {m['n_test_clips']} test clips from {m['n_videos']} videos, {m['split']}, seed {m['seed']}{skipped}")
