"""`smile-synth finetune`, top to bottom: data and splits -> per split: classifier (weights in), recipe
(AdamW with layer decay, warmup + cosine, mixup), resume -> the loop (engine.py) -> multi-view test ->
metrics.json and confusion.png.

Splits: --test-data, or --folds K by source video (each fold a whole run in OUT/fold-K, its predictions
pooled; --fold k runs one). Runs under torchrun as DDP (each rank its share of every batch and of the
test videos).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from smile_synth.atomic import ensure_writable_folder, remove_stale_temporaries, write_json_atomic
from smile_synth.config import check_fits_in_memory, to_dict
from smile_synth.errors import UserError
from smile_synth.locks import run_folder
from smile_synth.video import VideoItem, by_class_name, folder_classes
from training.checkpoint import (
    CHECKPOINT,
    CLASSIFIER_SAFETENSORS,
    ENCODER,
    checkpoint_classes,
    checkpoint_student,
    read_checkpoint,
    resolve_weights_file,
    restore_training_state,
    resume_path,
    save_atomic,
    save_safetensors,
)
from training.distributed import Dist, autocast_dtype, distributed_run
from training.engine import LOG_FILE
from training.models import StudentConfig, count_parameters

from ..evaluate import labelled_items
from ..features import ExampleSpec
from ..probes import topk_accuracy
from ..splits import check_disjoint, group_folds, source_group
from ..tasks import TASKS
from .config import FinetuneConfig, evaluated_run
from .data import ClipAugment, TrainClips, collate, train_entries
from .engine import Loop, test_examples, test_views, train_loop
from .model import VideoClassifier, load_into_classifier
from .recipe import StepBatches, build_recipe, schedule

log = logging.getLogger(__name__)
METRICS = "metrics.json"
CONFUSION = "confusion.png"
# settings a resumed run must share with its checkpoint
RESUME_FIXED = ("task", "data", "batch_size", "repeated_aug", "seed", "frames", "size", "stride", "folds")


@dataclass
class Split:
    name: str                      # "" (given test list / eval-only) or "fold-K"
    out: Path
    train: list[VideoItem]
    test: list[VideoItem]
    folds: int = 0                 # folds by source video the data makes (0: no folds)


# ---- the command --------------------------------------------------------------------------------

def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune (or with eval_only, test) into cfg.out, holding its run-folder lock (rank 0; a second run
    into the folder stops with one line; --fold K runs lock only their fold); returns the metrics (also
    OUT/metrics.json)."""
    cfg = cfg.validate()
    check_eval_out(cfg)
    fold = f"fold-{cfg.fold}" if cfg.fold is not None and cfg.test_data is None and not cfg.eval_only else None
    with distributed_run() as d:
        if d.main:
            ensure_writable_folder(cfg.out)
        with run_folder(cfg.out, "finetune", fold) if d.main else nullcontext():
            return _finetune(cfg, d)


def check_eval_out(cfg: FinetuneConfig) -> None:
    """--eval-only never writes into a training run: not the run it tests, nor any folder holding a run's
    checkpoint or classifier (one UserError)."""
    if not cfg.eval_only:
        return
    out, run = Path(cfg.out), evaluated_run(cfg.checkpoint)
    holds_run = any((out / name).is_file() for name in (CHECKPOINT, CLASSIFIER_SAFETENSORS, ENCODER)) or \
        any(out.glob(f"fold-*/{CLASSIFIER_SAFETENSORS}"))
    if out.resolve() == run.resolve() or holds_run:
        raise UserError(f"--eval-only would write its metrics.json and confusion.png into {out}, which holds a "
                        f"run's results; give another --out (without --out it writes to {cfg.default_out})")


def _finetune(cfg: FinetuneConfig, d: Dist) -> dict:
    out = Path(cfg.out)
    student, source, ckpt = classifier_student(cfg)
    check_memory(cfg, student)
    items = labelled_items(cfg.data, cfg.task)
    # a test set may hold a single class; the classifier's classes come from --data (or the checkpoint)
    test_items = labelled_items(cfg.test_data, cfg.task, "--test-data", min_classes=1) if cfg.test_data else None
    classes = class_names(cfg, items, test_items, source)
    if TASKS[cfg.task].needs_labels:        # folders of classes: the same class name, the same index everywhere
        items = by_class_name(items, cfg.data, classes, "--data")
        test_items = by_class_name(test_items, cfg.test_data, classes, "--test-data") if test_items else None
    if test_items is not None and not cfg.eval_only:
        check_train_test(cfg, items, test_items)
    results = [run_split(cfg, d, split, student, classes, source, ckpt) for split in make_splits(cfg, items, test_items)]
    metrics = metrics_of(cfg, results, classes, student, source)
    if d.main:
        write_json_atomic(out / METRICS, metrics)
        from smile_synth.plots import confusion_picture
        confusion_picture(metrics["confusion"], classes, out / CONFUSION,
                          f"{cfg.task}: top-1 {100 * metrics['top1']:.1f}% ({metrics['split']})")
    return metrics


def classifier_student(cfg: FinetuneConfig) -> tuple[StudentConfig, dict, dict | None]:
    """The classifier's geometry (the checkpoint's or the preset's, with --frames/--size and drop path),
    what the weights file says of itself ({"path", "summary", "classes"}; {} for random init), and its
    contents (read once, loaded into every split's model; None for random init)."""
    if cfg.random_init:
        from training.models import student_config
        base, source, ckpt = student_config(cfg.preset), {}, None
    else:
        folds = sorted(Path(cfg.checkpoint).glob("fold-*/" + CLASSIFIER_SAFETENSORS))
        path = resolve_weights_file(cfg.checkpoint)
        if folds and not path.is_file():
            raise UserError(f"{cfg.checkpoint} is a {len(folds)}-fold fine-tuning run; give one fold's folder, "
                            f"e.g. --checkpoint {folds[0].parent}")
        ckpt = read_checkpoint(path)
        base = checkpoint_student(ckpt, path, cfg.preset)
        source = {"path": str(path), "summary": dict(ckpt.get("summary") or {}),
                  "classes": checkpoint_classes(ckpt)}
    overrides = {k: v for k, v in (("frames", cfg.frames), ("size", cfg.size)) if v is not None}
    return dataclasses.replace(base, drop_path=cfg.drop_path, **overrides).validate(), source, ckpt


def check_memory(cfg: FinetuneConfig, s: StudentConfig) -> None:
    """One UserError when a training step's clips, or one test video's views, cannot fit in memory."""
    clip = 3 * s.frames * s.size ** 2
    if not cfg.eval_only:
        check_fits_in_memory(f"one step's batch of {cfg.batch_size} x {cfg.repeated_aug} clips of {s.frames} frames "
                             f"x {s.size} px", cfg.batch_size * cfg.repeated_aug * clip * 4,
                             "lower --batch-size, --repeated-aug, --frames or --size")
    task = TASKS[cfg.task]
    examples = 1 if task.needs_labels else cfg.windows * len(task.class_names)
    views = examples * (cfg.test_clips if task.needs_labels else 1) * cfg.test_crops
    check_fits_in_memory(f"one test video's {views} views of {s.frames} frames x {s.size} px", views * clip,
                         "lower --test-clips, --test-crops, --windows, --frames or --size")


def check_train_test(cfg: FinetuneConfig, items: list[VideoItem], test_items: list[VideoItem]) -> None:
    """Given lists: no video in both (unless --allow-overlap), and no test label the training data lacks
    (the classifier could never predict it). One UserError each."""
    train_paths = {Path(it.path).resolve() for it in items}
    shared = [it.path for it in test_items if Path(it.path).resolve() in train_paths]
    if shared and not cfg.allow_overlap:
        raise UserError(f"{len(shared)} of the {len(test_items)} --test-data videos are also in --data (first: "
                        f"{shared[0]}); a test on training videos says nothing of new ones: remove them from one "
                        "list, or pass --allow-overlap")
    if TASKS[cfg.task].needs_labels:
        unseen = sorted({it.label for it in test_items} - {it.label for it in items})
        if unseen:
            raise UserError(f"--test-data {cfg.test_data} has labels that no --data video has "
                            f"({', '.join(map(str, unseen[:5]))}{', ...' if len(unseen) > 5 else ''}); the "
                            "classifier cannot learn them: add training videos of those classes, or remove them "
                            "from the test list")


def class_names(cfg: FinetuneConfig, items: list[VideoItem], test_items: list[VideoItem] | None, source: dict) -> list[str]:
    """The classes: the task's (motion tasks), a classifier checkpoint's (--eval-only), the subfolder
    names of a folder of classes, else the label numbers of the lists."""
    task = TASKS[cfg.task]
    if task.class_names:
        return list(task.class_names)
    n = 1 + max(it.label for it in items + (test_items or []))
    known = source.get("classes")
    if cfg.eval_only and known:
        if len(known) < n and not Path(cfg.data).is_dir():
            raise UserError(f"{cfg.checkpoint} classifies {len(known)} classes; the data has labels up to {n - 1}")
        return list(known)
    return folder_classes(items, cfg.data) or [str(i) for i in range(n)]


def make_splits(cfg: FinetuneConfig, items: list[VideoItem], test_items: list[VideoItem] | None) -> list[Split]:
    """The train/test splits: --test-data; --eval-only without it tests all of --data; else folds by source video."""
    out = Path(cfg.out)
    if cfg.eval_only:
        return [Split("", out, [], test_items or items)]
    if test_items is not None:
        return [Split("", out, items, test_items)]
    groups = np.array([source_group(it.path) for it in items])
    if len(set(groups)) < 2:
        raise UserError(f"--data {cfg.data}: all videos come from one source video; a split by video needs at least 2 "
                        "(add videos, or give --test-data)")
    labels = np.array([it.label or 0 for it in items])
    fold = group_folds(groups, labels, cfg.folds, cfg.seed)
    k = int(fold.max()) + 1
    if k < cfg.folds:
        log.warning("--folds %d: the data's %d source videos make only %d folds; running %d-fold", cfg.folds,
                    len(set(groups)), k, k)
    chosen = range(k) if cfg.fold is None else [cfg.fold]
    splits = []
    for f in chosen:
        if f >= k:
            raise UserError(f"--fold {f}: the data's {len(set(groups))} source videos make only {k} folds")
        check_disjoint(groups, fold != f, fold == f)
        splits.append(Split(f"fold-{f}", out / f"fold-{f}", [it for it, g in zip(items, fold) if g != f],
                            [it for it, g in zip(items, fold) if g == f], k))
    return splits


# ---- one split ----------------------------------------------------------------------------------

def run_split(cfg: FinetuneConfig, d: Dist, split: Split, s: StudentConfig, classes: list[str], source: dict,
              ckpt: dict | None) -> dict:
    """Train (unless eval-only) and test one split; returns its probabilities, labels and counts."""
    if d.main:
        ensure_writable_folder(split.out)
        remove_stale_temporaries(split.out)
    torch.manual_seed(cfg.seed)
    model = VideoClassifier(s, len(classes), cfg.head_dropout).to(d.device)
    amp = autocast_dtype(cfg.precision, d.device)
    stride = cfg.sampling_stride
    n_train, skipped, steps = 0, {}, 0
    if cfg.checkpoint is not None and not resumable(split.out, cfg):
        info = load_into_classifier(model, cfg.checkpoint, strict_head=cfg.eval_only, ckpt=ckpt)
        if cfg.eval_only and not info["classifier"]:
            raise UserError(f"--eval-only needs a fine-tuned classifier; {cfg.checkpoint} holds a pretraining encoder "
                            "(fine-tune it first, without --eval-only)")
    if not cfg.eval_only:
        entries, skipped = train_entries(split.train, cfg.task, s.frames, stride, cfg.windows)
        if not entries:
            raise UserError(f"--data {cfg.data}: none of the {len(split.train)} training videos of {split.name or 'the split'} "
                            "can be used (unreadable or too short); see the warnings above")
        if len(skipped) > cfg.max_bad_share * len(split.train):
            raise UserError(f"--data {cfg.data}: {len(skipped)} of the {len(split.train)} training videos"
                            f"{' of ' + split.name if split.name else ''} are unreadable or too short (more than "
                            f"--max-bad-share {cfg.max_bad_share}; first: {first_skipped(skipped)}); fix or "
                            "remove them, or raise --max-bad-share")
        n_train, steps = len(entries), train(cfg, d, split, model, entries, s, amp, source, classes)
    spec = ExampleSpec(cfg.task, s.frames, s.size, stride, cfg.windows, cfg.test_clips, cfg.test_crops)
    examples, test_skipped = test_examples(split.test, cfg.task, s.frames, stride, cfg.windows, cfg.test_clips)
    probs, labels, view_skipped = test_views(model, split.test, examples, spec, d, amp, progress=cfg.progress)
    skipped = {**skipped, **test_skipped, **view_skipped}
    result = {"split": split.name, "folds": split.folds, "probs": probs, "labels": labels, "n_train_clips": n_train, "steps": steps,
              "n_train_videos": len(split.train), "clips_seen": steps * cfg.batch_size * cfg.repeated_aug * d.world,
              "skipped": skipped, "n_test_videos": len(split.test)}
    if split.name and d.main:
        write_json_atomic(split.out / METRICS, metrics_of(cfg, [result], classes, s, source))
    return result


def first_skipped(skipped: dict[str, str]) -> str:
    """'PATH: why' of the first skipped video (the why may already name the path)."""
    path, why = next(iter(skipped.items()))
    return why if path in why else f"{path}: {why}"


def train_loader(cfg: FinetuneConfig, d: Dist, split: Split, entries, s: StudentConfig, steps: int, start: int):
    """This rank's batches of steps [start, steps), made by cfg.workers DataLoader workers."""
    from torch.utils.data import DataLoader

    dataset = TrainClips(split.train, entries, s.frames, cfg.sampling_stride, s.size,
                         ClipAugment(s.size, cfg.augment_spec, cfg.flip, cfg.reprob, cfg.min_crop_scale), cfg.repeated_aug, cfg.seed)
    sampler = StepBatches(len(entries), cfg.batch_size, steps, start, cfg.seed, d.rank, d.world)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.workers,
                      worker_init_fn=_quiet_worker, pin_memory=d.device.type == "cuda",
                      prefetch_factor=2 if cfg.workers else None)


def train(cfg: FinetuneConfig, d: Dist, split: Split, model: VideoClassifier, entries, s: StudentConfig,
          amp, source: dict, classes: list[str]) -> int:
    """The recipe and the loop for one split; writes OUT/classifier.safetensors. Returns the steps run."""
    steps, warmup, peak = schedule(cfg, len(entries), d.world)
    optimizer, scheduler, mixup, criterion = build_recipe(cfg, model, steps, warmup, peak, len(classes))
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp is torch.float16)
    start = resume(cfg, split.out, model, optimizer, scaler, steps, d)

    def save(step: int) -> None:
        if d.main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                         "step": step, "config": to_dict(cfg), "student": asdict(s), "classes": classes,
                         "split": split.name}, split.out / CHECKPOINT)

    if start < steps:
        loader = train_loader(cfg, d, split, entries, s, steps, start)
        wrapped = model if d.world == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
        loop = Loop(wrapped, model, optimizer, scheduler, scaler, mixup, criterion, amp, d, start, steps, cfg.seed,
                    cfg.clip_grad, cfg.batch_size * cfg.repeated_aug * d.world, cfg.log_every, cfg.save_every,
                    cfg.max_bad_share, split.out, save, cfg.progress)
        if d.main and cfg.progress:
            print(describe(cfg, split, model, len(entries), start, steps, warmup, peak, d), file=sys.stderr, flush=True)
        train_loop(loop, loader)
        del loader
        save(steps)
    if d.main:
        write_classifier(cfg, split, model, s, source, classes, steps)
    return steps


def write_classifier(cfg: FinetuneConfig, split: Split, model: VideoClassifier, s: StudentConfig, source: dict,
                     classes: list[str], steps: int) -> None:
    """OUT/classifier.safetensors (geometry and classes in its header) and OUT/loss.png of a trained split."""
    from smile_synth.plots import loss_curve

    if (split.out / LOG_FILE).is_file():
        loss_curve(split.out / LOG_FILE, split.out / "loss.png", f"finetune {cfg.task}{' ' + split.name if split.name else ''}")
    save_safetensors(model.state_dict(), split.out / CLASSIFIER_SAFETENSORS, student=asdict(s),
                     summary={**source.get("summary", {}),
                              "finetune": {"task": cfg.task, "data": cfg.data, "steps": steps, "split": split.name}},
                     classifier={"num_classes": len(classes), "class_names": classes})


def _quiet_worker(_worker_id: int) -> None:
    import cv2
    cv2.setNumThreads(1)     # the workers share the cores with the training process


def resumable(out: Path, cfg: FinetuneConfig) -> bool:
    return cfg.resume == "auto" and (out / CHECKPOINT).is_file() and not cfg.eval_only


def resume(cfg: FinetuneConfig, out: Path, model, optimizer, scaler, steps: int, d: Dist) -> int:
    """Continue OUT/checkpoint.pt (--resume auto) or a given checkpoint; returns the step to start at."""
    path = resume_path(cfg.resume, out)
    if path is None:
        return 0
    start = restore_training_state(path, cfg, RESUME_FIXED, model, optimizer, scaler, steps,
                                   kind="fine-tuning", start_option="--checkpoint")
    if d.main and start:
        log.warning("resuming %s at step %d", path, start)
    return start


def describe(cfg, split, model, n_entries, start, steps, warmup, peak, d) -> str:
    params = count_parameters(model) / 1e6
    init = "random init" if cfg.random_init else cfg.checkpoint
    return (f"finetune{' ' + split.name if split.name else ''}: {params:.1f}M-param classifier from {init}, {cfg.task} "
            f"({model.num_classes} classes), {n_entries} training examples, steps {start}->{steps} (warmup {warmup}) x "
            f"{cfg.batch_size * d.world} videos x {cfg.repeated_aug} clips, peak lr {peak:.2e}, layer decay {cfg.layer_decay}")


# ---- metrics ------------------------------------------------------------------------------------

def metrics_of(cfg: FinetuneConfig, results: list[dict], classes: list[str], s: StudentConfig, source: dict) -> dict:
    """top-1, top-5 (more than 5 classes), per-class accuracy and the confusion matrix of pooled test predictions."""
    labels = np.concatenate([r["labels"] for r in results])
    if len(labels) == 0:
        raise UserError(f"no test clip could be read ({sum(len(r['skipped']) for r in results)} videos skipped); "
                        "see the warnings above")
    probs = np.concatenate([r["probs"] for r in results if len(r["labels"])])
    n = len(classes)
    pred = probs.argmax(1)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    counts = np.bincount(labels, minlength=n)
    skipped = {k: v for r in results for k, v in r["skipped"].items()}
    views = {"clips": cfg.test_clips if cfg.task == "labels" else 1, "crops": cfg.test_crops}
    split = ("given train/test lists" if cfg.test_data else "eval-only on --data") if not results[0]["split"] else \
        f"{results[0]['folds']}-fold by source video" + (f" (fold {cfg.fold} only)" if cfg.fold is not None else "")
    return {
        "task": cfg.task, "probe": "finetune", "seed": cfg.seed, "split": split,
        "top1": topk_accuracy(probs, labels, 1), "top5": topk_accuracy(probs, labels, 5) if n > 5 else None,
        "chance": float(counts.max() / counts.sum()),
        "per_class_accuracy": {c: (float(confusion[i, i] / counts[i]) if counts[i] else None) for i, c in enumerate(classes)},
        "per_fold_top1": [topk_accuracy(r["probs"], r["labels"], 1) for r in results if len(r["labels"])],
        "classes": classes, "confusion": confusion.tolist(),
        # training examples (labels task: videos, a fresh window each epoch; motion tasks: windows x labels) per split
        "n_train_clips": int(sum(r["n_train_clips"] for r in results) / len(results)), "n_test_clips": int(len(labels)),
        "n_train_videos": int(sum(r["n_train_videos"] for r in results) / len(results)),
        "train_clips_seen": [r["clips_seen"] for r in results],
        "n_videos": int(sum(r["n_test_videos"] for r in results)), "views": views,
        "skipped_videos": len(skipped), "skipped": skipped, "steps": [r["steps"] for r in results],
        "encoder": {"checkpoint": cfg.checkpoint, "random_init": cfg.random_init, "frames": s.frames, "size": s.size,
                    "dim": s.dim, "depth": s.depth, "pretraining": source.get("summary", {})},
        "config": to_dict(cfg),
    }


def summary_line(m: dict) -> str:
    top5 = f", top-5 {100 * m['top5']:.1f}%" if m.get("top5") is not None else ""
    skipped = f"; {m['skipped_videos']} videos skipped" if m.get("skipped_videos") else ""
    views = f"{m['views']['clips']}x{m['views']['crops']} views"
    trained = f", {m['n_train_clips']} training clips" if m["n_train_clips"] else ""
    return (f"{m['task']} / finetune: top-1 {100 * m['top1']:.1f}%{top5} (chance {100 * m['chance']:.1f}%) on "
            f"{m['n_test_clips']} test clips ({views}){trained}, {m['split']}, seed {m['seed']}{skipped}")
