"""The GPU study's evaluations on one device: the CPU study's fine-tuning and probes (eval/study.py's
Protocol and evaluations), with every clip held on the device.

DeviceEvaluations(ROOT, preset, device) loads ROOT's decoded scenes (eval/device_data.py), regenerates the
direction task in memory (eval/direction.py's clips, as write_direction_set draws them, never encoded to
mp4) and builds every evaluation's examples once (eval/tasks.py) as frame-index tensors on the device.
`.evaluate(weights, seed)` then, per call:

- fine-tunes a classifier (eval/finetune's model and recipe: AdamW with layer decay, warmup + cosine,
  label smoothing; the CPU study's StepBatches order and repeated augmentation) on each of `finetune`,
  every batch cropped on the device (random resized crop and flip, eval/device_clips.py), bf16 autocast on
  CUDA, no host copy per step; the test softmax is averaged over the test clips;
- probes the frozen encoder (mean-pooled tokens, as eval/features.py) on each of `probe_evaluations`,
  features computed on the device, linear and kNN probes by eval/probes.py on the host.

Splits as the CPU study: the real scenes in folds by scene drawn per seed (fine-tuning tests fold 0 of the
folds over scenes; the probes pool all folds over examples); the direction task's own train/test.
Rows: {"task", "probe", "seed", "top1", "chance"}, as eval/study.py writes them.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smile_synth.errors import UserError
from training.models import StudentConfig, matching_preset, student_config
from training.targets import normalize, to_unit_video

from .device_clips import (
    Examples,
    FrameStore,
    crop_clips,
    frame_store,
    random_boxes,
    task_example_set,
    window_choices,
)
from .device_data import device_data_size, load_eval_scenes
from .direction import DIRECTIONS, direction_clip, write_direction_set
from .finetune.config import FinetuneConfig
from .finetune.recipe import CROP_RATIO, StepBatches, build_recipe, schedule
from .probes import PROBES, probe_metrics, topk_accuracy
from .splits import check_disjoint, group_folds
from .study import Protocol, evaluations
from .tasks import TASKS

log = logging.getLogger(__name__)

_CPU = Protocol()                       # the CPU study's protocol: every default not scaled for the GPU
_CPU_FINETUNE = _CPU.finetune_settings
_DIRECTION_SET = inspect.signature(write_direction_set).parameters    # its clip length and seed
# the CPU study's evaluation definitions (task, stride, flip); the paths it would read are not used here
EVALUATIONS = {name: ev for name, (ev, _) in evaluations(Path("eval"), (Path("train"), Path("test"))).items()}


@dataclass(frozen=True)
class DeviceEvalSettings:
    """What the device evaluations fix; defaults are the CPU study's Protocol, the budget scaled for a GPU."""
    finetune_steps: int = 300               # x finetune_batch x repeated_aug = 19,200 training clips: the budget
    finetune_batch: int = 32                # at which scratch left chance on speed in issue 21's CPU pilot
    repeated_aug: int = _CPU_FINETUNE["repeated_aug"]
    lr: float = _CPU_FINETUNE["lr"]         # base lr, x finetune_batch / 256
    warmup_epochs: float = _CPU_FINETUNE["warmup_epochs"]
    layer_decay: float = _CPU_FINETUNE["layer_decay"]
    label_smoothing: float = _CPU_FINETUNE["label_smoothing"]
    min_crop_scale: float = _CPU_FINETUNE["min_crop_scale"]
    test_clips: int = _CPU_FINETUNE["test_clips"]
    finetune: tuple[str, ...] = _CPU.finetune
    probes: tuple[str, ...] = _CPU.probes
    probe_evaluations: tuple[str, ...] = _CPU.probe_evaluations
    folds: int = _CPU.folds
    windows: int = _CPU.windows
    direction_clips: tuple[int, int] = (256, 64)    # per direction: training, test (CPU study: 128, 32)
    view_batch: int = 256                   # clips per forward pass when embedding or testing

    def recipe(self, preset: str | None) -> FinetuneConfig:
        """The fine-tuning recipe as eval/finetune's config (for its schedule and build_recipe)."""
        return FinetuneConfig(**{**_CPU_FINETUNE, "steps": self.finetune_steps, "batch_size": self.finetune_batch,
                                 "repeated_aug": self.repeated_aug, "lr": self.lr, "warmup_epochs": self.warmup_epochs,
                                 "layer_decay": self.layer_decay, "label_smoothing": self.label_smoothing,
                                 "min_crop_scale": self.min_crop_scale, "test_clips": self.test_clips},
                              data="(device)", random_init=True, preset=preset or "micro", folds=self.folds)

    def validate(self) -> DeviceEvalSettings:
        """self, or one UserError naming the bad setting."""
        try:
            self.recipe(None).validate()          # the recipe's bounds (steps, batch, lr, shares, folds)
        except UserError as e:
            raise UserError(f"device evaluation setting: {e}") from None
        for name, known in (("finetune", EVALUATIONS), ("probe_evaluations", EVALUATIONS), ("probes", PROBES)):
            bad = [v for v in getattr(self, name) if v not in known]
            if bad:
                raise UserError(f"device evaluation setting {name}: {bad[0]!r} is not one of {', '.join(known)}")
        for name in ("windows", "view_batch"):
            if getattr(self, name) < 1:
                raise UserError(f"device evaluation setting {name} must be at least 1, not {getattr(self, name)}")
        if len(self.direction_clips) != 2 or min(self.direction_clips) < 1:
            raise UserError(f"device evaluation setting direction_clips {self.direction_clips} must be two counts "
                            "of at least 1 (training, test clips per direction)")
        return self


def dry_run_settings(settings: DeviceEvalSettings = DeviceEvalSettings()) -> DeviceEvalSettings:
    """`settings` at a few steps and clips, for dry runs and tests on CPU."""
    return dataclasses.replace(settings, finetune_steps=2, finetune_batch=4, repeated_aug=1, windows=1,
                               direction_clips=(3, 2), view_batch=64)


@dataclass
class TaskData:
    """One evaluation's clips on the device."""
    name: str
    task: str
    flip: bool
    train_store: FrameStore             # what fine-tuning crops (real scenes: the wider decode)
    view_store: FrameStore              # size x size views of the same videos
    groups: np.ndarray                  # str (V,): each video's fold group
    train: Examples                     # fine-tuning entries over train_store (P window choices each)
    probe: Examples                     # one-clip examples over view_store
    test: Examples                      # test_clips-view examples: over test_store, else (folds) view_store
    test_store: FrameStore | None = None     # a separate test split (the direction task); None: folds by scene
    probe_test: Examples | None = None


@dataclass
class ProbeFeatures:
    """What probe_metrics reads of a feature set."""
    features: np.ndarray                # float32 (N, C)
    labels: np.ndarray                  # int64 (N,)
    items: np.ndarray                   # int64 (N,) video of each example
    groups: np.ndarray                  # str (N,)


def train_steps(model: torch.nn.Module, optimizer, scheduler, scaler, criterion, video, labels: torch.Tensor,
                amp: torch.dtype | None) -> torch.Tensor:
    """The fine-tuning loop: for each step, its clips video(step) and labels[step] (int64 (steps, C)),
    lr from the scheduler, forward under autocast `amp`, optimizer_step. No host sync: the losses come back
    as a device tensor float32 (steps,)."""
    from training.engine import optimizer_step

    device = labels.device
    losses = torch.zeros(len(labels), device=device)
    model.train()
    for step in range(len(labels)):
        scheduler.step_update(step)
        clips = video(step)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(clips)
        loss = criterion(logits.float(), labels[step])
        optimizer_step(optimizer, scaler, loss, model, None)
        losses[step] = loss.detach()
    return losses


class DeviceEvaluations:
    """The study's evaluations of one student geometry on `device` (see the module doc)."""

    def __init__(self, root: str | Path, preset: str | StudentConfig, device: str | torch.device,
                 settings: DeviceEvalSettings = DeviceEvalSettings()):
        from training.distributed import autocast_dtype

        self.settings = settings.validate()
        self.student = student_config(preset) if isinstance(preset, str) else preset.validate()
        self.preset = preset if isinstance(preset, str) else matching_preset(preset)
        self.device = torch.device(device)
        self.amp = autocast_dtype("auto", self.device)            # bf16 on CUDA, fp32 elsewhere
        size = device_data_size(root)
        if size != self.student.size:
            raise UserError(f"{root} holds clips of {size} px; the {self.preset or 'given'} student takes "
                            f"{self.student.size} px: write the data with size={self.student.size}")
        scenes = load_eval_scenes(root)
        self.scene_groups = np.array([s.group for s in scenes])
        self.real = (frame_store([s.train for s in scenes], self.device),
                     frame_store([s.test for s in scenes], self.device))
        self._data: dict[tuple, dict[str, TaskData]] = {}
        self._direction: dict[tuple, tuple] = {}
        self.task_data(self.settings)
        self.seconds: dict[str, float] = {}          # the last evaluate call's time per part

    # ---- examples, built once per example-defining settings ------------------------------------

    def task_data(self, s: DeviceEvalSettings) -> dict[str, TaskData]:
        """name -> TaskData of every evaluation `s` uses (cached by what defines the examples)."""
        key = (s.windows, s.test_clips, tuple(s.direction_clips))
        if key not in self._data:
            names = dict.fromkeys((*s.finetune, *s.probe_evaluations))
            self._data[key] = {name: self._build(name, s) for name in names}
        return self._data[key]

    def _build(self, name: str, s: DeviceEvalSettings) -> TaskData:
        ev, T = EVALUATIONS[name], self.student.frames
        stride = ev.stride or TASKS[ev.task].default_stride
        if ev.task != "labels":                                    # the real scenes, in folds by scene
            train_store, views = self.real
            probe = task_example_set(ev.task, views.lengths, None, T, stride, s.windows, 1)
            test = task_example_set(ev.task, views.lengths, None, T, stride, s.windows, s.test_clips)
            return TaskData(name, ev.task, ev.flip, train_store, views, self.scene_groups, probe, probe, test)
        (train_videos, train_labels), (test_videos, test_labels) = self.direction_set(s.direction_clips)
        store, test_store = frame_store(train_videos, self.device), frame_store(test_videos, self.device)
        groups = np.array([f"train/{i}" for i in range(len(train_videos))])      # every clip its own group
        return TaskData(
            name, ev.task, ev.flip, store, store, groups,
            train=window_choices(store.lengths, train_labels, T, stride),
            probe=task_example_set(ev.task, store.lengths, train_labels, T, stride, s.windows, 1),
            test=task_example_set(ev.task, test_store.lengths, test_labels, T, stride, s.windows, s.test_clips),
            test_store=test_store,
            probe_test=task_example_set(ev.task, test_store.lengths, test_labels, T, stride, s.windows, 1))

    def direction_set(self, per_class: tuple[int, int]) -> tuple[tuple[list[np.ndarray], np.ndarray], ...]:
        """((train clips, labels), (test clips, labels)): write_direction_set's clips at the student's size,
        drawn from the same seeds, as uint8 (frames, size, size, 3) arrays."""
        key = tuple(per_class)
        if key not in self._direction:
            frames, seed = _DIRECTION_SET["frames"].default, _DIRECTION_SET["seed"].default
            splits = []
            for stream, n in enumerate(per_class):
                labels = np.repeat(np.arange(len(DIRECTIONS)), n)
                clips = [direction_clip(np.random.default_rng([seed, stream, int(label), i]), int(label), frames,
                                        self.student.size) for label in range(len(DIRECTIONS)) for i in range(n)]
                splits.append((clips, labels))
            self._direction[key] = tuple(splits)
        return self._direction[key]

    # ---- one model ----------------------------------------------------------------------------

    def evaluate(self, weights: str | None, seed: int, settings: DeviceEvalSettings | None = None) -> list[dict]:
        """Rows of every evaluation of `weights` (a pretraining run folder or weights file; None: a random
        init of the preset, seeded by `seed`) with `seed`'s splits and draws."""
        s = self.settings if settings is None else settings.validate()
        data = self.task_data(s)
        t = time.perf_counter()
        weights_in = None if weights is None else self._checkpoint(weights)
        rows = [self._finetune_row(data[name], weights_in, seed, s) for name in s.finetune]
        t_probe = time.perf_counter()
        encoder = self._encoder(weights, seed)
        for name in s.probe_evaluations:
            rows += self._probe_rows(encoder, data[name], seed, s)
        self.seconds = {"finetune": t_probe - t, "probes": time.perf_counter() - t_probe}
        return rows

    def _checkpoint(self, weights: str) -> tuple[Path, dict]:
        """(weights file, its contents) of a run folder or file, checked against this geometry."""
        from training.checkpoint import checkpoint_student, read_checkpoint, resolve_weights_file

        path = resolve_weights_file(weights)
        ckpt = read_checkpoint(path)
        self._check_geometry(checkpoint_student(ckpt, path, self.preset), weights)
        return path, ckpt

    def _check_geometry(self, cfg: StudentConfig, weights: str) -> None:
        if (cfg.frames, cfg.size) != (self.student.frames, self.student.size):
            raise UserError(f"{weights} takes {cfg.frames} frames of {cfg.size} px; these evaluations were built for "
                            f"{self.student.frames} frames of {self.student.size} px (preset {self.preset})")

    def _encoder(self, weights: str | None, seed: int) -> torch.nn.Module:
        from .encoders import encoder_source

        _, cfg, _, load = encoder_source(weights, self.preset, seed, like=self.student)
        if weights is not None:
            self._check_geometry(cfg, weights)
        return load().to(self.device).eval()

    @torch.no_grad()
    def _views_forward(self, fn, store: FrameStore, ex: Examples, batch: int) -> torch.Tensor:
        """float32 (N, P, C): fn((B, 3, T, S, S) normalized) -> (B, C) on every clip of every example."""
        index = ex.on(store)
        N, P, T = index.shape
        flat, out = index.reshape(N * P, T), []
        for i in range(0, N * P, batch):
            video = normalize(to_unit_video(store.frames[flat[i:i + batch]]))
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                out.append(fn(video).float())
        return torch.cat(out).reshape(N, P, -1)

    # ---- fine-tuning --------------------------------------------------------------------------

    def _split(self, d: TaskData, seed: int, folds: int) -> tuple[Examples, Examples, FrameStore]:
        """(training entries, test examples, the test examples' store): the given test split, or fold 0 of
        `folds` over the videos by group (eval/finetune/run.py's make_splits, unlabelled videos)."""
        if d.test_store is not None:
            return d.train, d.test, d.test_store
        fold = group_folds(d.groups, np.zeros(len(d.groups), np.int64), folds, seed)
        if fold.max() + 1 < folds:
            log.warning("%s: %d scenes make only %d folds", d.name, len(set(d.groups)), fold.max() + 1)
        check_disjoint(d.groups, fold != 0, fold == 0)
        tested = fold[d.test.videos] == 0
        return d.train.subset(fold[d.train.videos] != 0), d.test.subset(tested), d.view_store

    def _finetune_row(self, d: TaskData, weights_in: tuple[Path, dict] | None, seed: int,
                      s: DeviceEvalSettings) -> dict:
        from .finetune.model import VideoClassifier, load_into_classifier

        train, test, test_store = self._split(d, seed, s.folds)
        names = TASKS[d.task].class_names
        n_classes = len(names) if names else int(max(train.labels.max(), test.labels.max())) + 1
        cfg = s.recipe(self.preset)
        torch.manual_seed(seed)                                  # the classifier's init, as run.py's run_split
        model = VideoClassifier(dataclasses.replace(self.student, drop_path=cfg.drop_path), n_classes, cfg.head_dropout)
        if weights_in is not None:
            load_into_classifier(model, weights_in[0], ckpt=weights_in[1])
        model.to(self.device)
        steps, warmup, peak = schedule(cfg, len(train), 1)
        optimizer, scheduler, _, criterion = build_recipe(cfg, model, steps, warmup, peak, n_classes)  # no mixup
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp is torch.float16)
        video, labels = self._training_clips(d, train, steps, seed, s)
        losses = train_steps(model, optimizer, scheduler, scaler, criterion, video, labels, self.amp)
        model.eval()
        probs = self._views_forward(model, test_store, test, s.view_batch).softmax(-1).mean(1).cpu().numpy()
        finite = bool(torch.isfinite(losses).all()) and bool(np.isfinite(probs).all())
        if not finite:      # a diverged run predicts nothing: every test example counts as wrong, never right
            log.warning("fine-tuning %s (seed %d) diverged (non-finite loss or output); its test counts as wrong",
                        d.name, seed)
            probs = np.zeros_like(probs)
        counts = np.bincount(test.labels, minlength=n_classes)
        return {"task": d.name, "probe": "finetune", "seed": seed, "top1": topk_accuracy(probs, test.labels, 1),
                "chance": float(counts.max() / counts.sum())}

    def _training_clips(self, d: TaskData, train: Examples, steps: int, seed: int, s: DeviceEvalSettings):
        """(video(step) -> float (C, 3, T, S, S) normalized clips of that step, labels int64 (steps, C)),
        every draw made up front on the device: StepBatches' entry order, each entry repeated_aug times, a
        window, a crop box and a flip per clip."""
        order = np.array([[i for _, _, i in batch] for batch in StepBatches(len(train), s.finetune_batch, steps, 0, seed)])
        entries = torch.as_tensor(np.repeat(order.reshape(-1), s.repeated_aug), device=self.device)   # (steps * C,)
        g = torch.Generator(device=self.device).manual_seed(seed)
        index = train.on(d.train_store)                                              # (N, P, T)
        P = index.shape[1]
        window = torch.randint(0, P, (len(entries),), generator=g, device=self.device)
        frames = index[entries, window]                                             # (steps * C, T)
        hw = d.train_store.hw[torch.as_tensor(train.videos, device=self.device)[entries]]
        boxes = random_boxes(hw, (s.min_crop_scale, 1.0), CROP_RATIO, g)
        flip = (torch.rand(len(entries), generator=g, device=self.device) < 0.5) & d.flip
        labels = torch.as_tensor(train.labels, device=self.device)[entries].reshape(steps, -1)
        C, size = s.finetune_batch * s.repeated_aug, self.student.size

        def video(step: int) -> torch.Tensor:
            part = slice(step * C, (step + 1) * C)
            return normalize(crop_clips(d.train_store.frames, frames[part], boxes[part], flip[part], size))
        return video, labels

    # ---- probes -------------------------------------------------------------------------------

    def _probe_rows(self, encoder: torch.nn.Module, d: TaskData, seed: int, s: DeviceEvalSettings) -> list[dict]:
        def features(store: FrameStore, ex: Examples, groups: np.ndarray) -> ProbeFeatures:
            x = self._views_forward(lambda v: encoder(v).mean(1), store, ex, s.view_batch).mean(1)
            return ProbeFeatures(x.cpu().numpy(), ex.labels, ex.videos, groups[ex.videos])

        train = features(d.view_store, d.probe, d.groups)
        test = None
        if d.test_store is not None:
            test = features(d.test_store, d.probe_test, np.array([f"test/{i}" for i in range(len(d.test_store.lengths))]))
        rows = []
        for probe in s.probes:
            m = probe_metrics(train, test, d.task, probe, seed, s.folds)
            rows.append({"task": d.name, "probe": probe, "seed": seed, "top1": m["top1"], "chance": m["chance"]})
        return rows
