"""The embedded smoke-scale study: `smile-synth compare --out DIR` with no runs and no data.

regimes x seeds -> pretrain the micro student (HOG targets, one run per seed, checkpoints kept at
each budget) -> fine-tune every final encoder and scratch on each fine-tuning evaluation -> frozen
probes on every evaluation at every budget -> results.json, report.md, report.png, loss.png, dose.png.

The protocol (PROTOCOL: student, target, budgets, fine-tuning recipe, evaluations) was fixed before
the regimes were compared, from runs of scratch and the pilot regime (moving-black) only; the README
says which choices were made that way. Nothing here looks at the regimes' results to choose anything.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from smile_synth.errors import REASON_CHARS, one_line

log = logging.getLogger(__name__)

SCRATCH = "scratch"
PILOT = "moving-black"


@dataclass(frozen=True)
class Regime:
    """A way to pretrain: PretrainConfig settings (None = no pretraining, the scratch baseline)."""
    name: str
    settings: dict | None
    about: str


@dataclass(frozen=True)
class Evaluation:
    """One column of the report: a task on a dataset (`data`: the embedded real evaluation scenes, split
    in folds by scene, or the direction task's training folder, whose test folder comes beside it)."""
    name: str
    task: str
    data: str
    stride: int | None = None
    flip: bool = True


@dataclass(frozen=True)
class Protocol:
    """Everything the study fixes; the defaults are what the README reports."""
    preset: str = "micro"
    target: str = "hog"
    pretrain_steps: int = 160                    # x batch 32 = 5,120 clips at the full budget
    batch_size: int = 32
    lr: float = 1.5e-2                           # base lr (x batch / 256)
    budgets: int = 4                             # a checkpoint every 1/4 of the steps; probed at 1/4 and at the end
    finetune: tuple[str, ...] = ("speed", "direction")
    probes: tuple[str, ...] = ("linear", "knn")
    probe_evaluations: tuple[str, ...] = ("arrow-of-time", "speed", "direction")
    finetune_settings: dict = field(default_factory=lambda: {
        "steps": 80, "batch_size": 16, "repeated_aug": 2, "lr": 1.6e-2, "warmup_epochs": 1, "layer_decay": 0.75,
        "mixup": 0.0, "cutmix": 0.0, "aa": None, "reprob": 0.0, "drop_path": 0.0, "label_smoothing": 0.1,
        "min_crop_scale": 0.5, "test_clips": 2, "test_crops": 1, "workers": 1})
    folds: int = 2                               # real scenes: folds by scene (probes pool them; fine-tuning runs fold 0)
    windows: int = 24                            # window positions per real video (motion tasks)
    direction_clips: tuple[int, int] = (128, 32)  # per direction: training, test


def regimes(pretrain_dir: Path) -> tuple[Regime, ...]:
    """The six regimes of the study, scratch first."""
    natural = {"source": "natural", "data": str(pretrain_dir)}
    return (
        Regime(SCRATCH, None, "no pretraining (random init)"),
        Regime("static", {"source": "synthetic", "recipe": "black+objects", "recipe_set": ("motion.static=true",)},
               "black+objects held still: the same objects, no motion (the control)"),
        Regime(PILOT, {"source": "synthetic", "recipe": "black+objects"}, "objects moving over black"),
        Regime("moving-noise", {"source": "synthetic", "recipe": "noise+objects"}, "objects moving over noise"),
        Regime("natural", natural, "the embedded real clips' pretraining parts"),
        Regime("natural+objects", {**natural, "overlay": "overlay"}, "the same with moving objects overlaid (SMILE stage 1)"),
    )


def evaluations(real: Path, direction: tuple[Path, Path]) -> dict[str, tuple[Evaluation, str | None]]:
    """name -> (Evaluation, its test folder or None for folds by scene)."""
    return {
        "arrow-of-time": (Evaluation("arrow-of-time", "arrow-of-time", str(real)), None),
        "speed": (Evaluation("speed", "speed", str(real)), None),
        "direction": (Evaluation("direction", "labels", str(direction[0]), stride=1, flip=False), str(direction[1])),
    }


# ------------------------------------------------------------------------------------------ running

def _echo(progress: bool, text: str) -> None:
    if progress:
        import sys
        print(text, file=sys.stderr, flush=True)


def pretrain_regime(protocol: Protocol, regime: Regime, seed: int, out: Path, progress: bool) -> Path:
    """Pretrain `regime` with `seed` into `out` (skipped when finished), keeping a checkpoint at every budget."""
    from training.config import PretrainConfig
    from training.trainer import pretrain

    if not ((out / "encoder.pt").is_file() and (out / "run.json").is_file()):
        pretrain(PretrainConfig(**regime.settings, preset=protocol.preset, target=protocol.target,
                                steps=protocol.pretrain_steps, batch_size=protocol.batch_size, lr=protocol.lr,
                                keep_every=protocol.pretrain_steps // protocol.budgets, workers=1, seed=seed,
                                progress=progress, out=str(out)).validate())
    return out


def budget_weights(protocol: Protocol, run: Path | None) -> list[tuple[float, str | None]]:
    """(share of the pretraining budget, weights) at 1/budgets and the whole run; scratch: (0, None).
    With scratch as every regime's 0, each regime is measured at 3 budgets."""
    if run is None:
        return [(0.0, None)]
    every = protocol.pretrain_steps // protocol.budgets
    return [(1 / protocol.budgets, str(run / f"checkpoint-{every:07d}.pt")), (1.0, str(run))]


def finetune_row(protocol: Protocol, ev: Evaluation, test: str | None, weights: str | None, seed: int,
                 out: Path) -> dict:
    """Fine-tune `weights` (None: a random init of the protocol's preset) on one evaluation; its metrics
    row. A finished fine-tuning (metrics.json) is read back, not redone (a broken one is: see finished_metrics)."""
    from .finetune.config import FinetuneConfig
    from .finetune.run import finetune

    m = finished_metrics(out / "metrics.json")
    if m is None:
        # the real scenes: fold 0 of the folds by scene; a task with its own test split needs none
        folds = {"folds": protocol.folds, "fold": 0} if test is None else {}
        weights_in = {"checkpoint": weights} if weights else {"random_init": True, "preset": protocol.preset}
        settings = {**folds, **protocol.finetune_settings, **weights_in}     # --finetune-set may name folds too
        m = finetune(FinetuneConfig(**settings, data=ev.data, test_data=test, task=ev.task, stride=ev.stride,
                                    flip=ev.flip, windows=protocol.windows, seed=seed, progress=False, out=str(out)))
    return {"task": ev.name, "probe": "finetune", "seed": seed, "top1": m["top1"], "chance": m["chance"]}


def finished_metrics(path: Path) -> dict | None:
    """The metrics.json of a finished fine-tuning, or None when there is none. A file that is not JSON or
    lacks a numeric top1/chance (cut short, emptied, edited) is None too, with a warning naming it: that
    fine-tuning is redone (it resumes from its checkpoint.pt, so only the test runs again)."""
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
        why = "it lacks a numeric top1 or chance"
        if isinstance(m, dict) and all(isinstance(m.get(k), (int, float)) for k in ("top1", "chance")):
            return m
    except (OSError, ValueError) as e:
        why = f"not JSON: {one_line(e, REASON_CHARS)}"
    log.warning("study: %s is unreadable (%s); fine-tuning that run again", path, why)
    return None


def probe_rows(protocol: Protocol, ev: Evaluation, test: str | None, weights: str | None, seed: int,
               cache: Path) -> list[dict]:
    """Frozen-feature probes of `weights` on one evaluation (features cached under `cache`)."""
    from .evaluate import EvalConfig, encoder_source, probe_metrics, split_features

    eid, s, _, load = encoder_source(weights, protocol.preset, seed)
    cfg = EvalConfig(data=ev.data, test_data=test, checkpoint=weights, random_init=weights is None,
                     preset=protocol.preset, task=ev.task, seed=seed, folds=protocol.folds, stride=ev.stride,
                     windows=protocol.windows, clips=1, crops=1, cache_dir=str(cache), progress=False)
    train, tested = split_features(cfg.validate(), eid, s, load)
    rows = []
    for probe in protocol.probes:
        m = probe_metrics(train, tested, ev.task, probe, seed, protocol.folds)
        rows.append({"task": ev.name, "probe": probe, "seed": seed, "top1": m["top1"], "chance": m["chance"]})
    return rows


def run_study(out: str | Path, seeds: int = 3, protocol: Protocol = Protocol(), progress: bool = True) -> Path:
    """Run the whole study into OUT (resumable: finished pretraining and fine-tuning are kept); returns OUT."""
    from .direction import write_direction_set
    from .embedded import prepare_embedded_data

    out = Path(out)
    t0 = time.time()
    pretrain_dir, real = prepare_embedded_data(out / "data")
    direction = write_direction_set(out / "data" / "direction", *protocol.direction_clips)
    evals = evaluations(real, direction)
    plan = regimes(pretrain_dir)
    runs: dict[tuple[str, int], Path | None] = {}
    for seed in range(seeds):
        for regime in plan:
            if regime.settings is None:
                runs[regime.name, seed] = None
                continue
            _echo(progress, f"pretraining {regime.name}, seed {seed} ({protocol.pretrain_steps} steps)")
            runs[regime.name, seed] = pretrain_regime(protocol, regime, seed, out / "runs" / f"{regime.name}-seed{seed}",
                                                      progress)
    t_pretrain = time.time() - t0
    rows = []
    for regime in plan:
        for seed in range(seeds):
            run = runs[regime.name, seed]
            for share, weights in budget_weights(protocol, run):
                clips = round(share * protocol.pretrain_steps * protocol.batch_size)
                tag = {"run": regime.name, "budget": share, "clips_seen": clips}
                if share in (0.0, 1.0):
                    for name in protocol.finetune:
                        ev, test = evals[name]
                        _echo(progress, f"  fine-tuning {regime.name} seed {seed} on {name}")
                        row = finetune_row(protocol, ev, test, weights, seed,
                                           out / "finetune" / f"{regime.name}-seed{seed}" / name)
                        rows.append({**row, **tag})
                for name in protocol.probe_evaluations:
                    ev, test = evals[name]
                    rows += [{**r, **tag} for r in probe_rows(protocol, ev, test, weights, seed, out / "features")]
                _echo(progress, f"  {regime.name} seed {seed} at {clips} clips: "
                      + ", ".join(f"{r['task']}/{r['probe']} {100 * r['top1']:.1f}%" for r in rows
                                  if r["run"] == regime.name and r["seed"] == seed and r["budget"] == share))
    minutes = (time.time() - t0) / 60
    from .study_report import write_study_report
    return write_study_report(out, rows, plan, runs, protocol, seeds,
                              {"minutes": minutes, "pretrain_minutes": t_pretrain / 60})
