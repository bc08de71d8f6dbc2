"""`smile-synth compare`: several pretrained encoders (and scratch) side by side, over seeds.

runs (NAME=PATH; a name given k times = k replicates) + scratch -> per seed i: replicate i mod k (or
random init with seed i) -> features per task (cached) -> each probe with seed i -> report.

With no runs and no data, `embedded_experiment` runs the smoke-scale study offline (eval/study.py):
micro students pretrained in six regimes, each once per seed, fine-tuned and probed on embedded real
scenes held out from all pretraining and on a synthetic held-out motion task.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.config import AT_LEAST_1, check_bounds
from smile_synth.errors import UserError

from .encoders import encoder_source
from .evaluate import EvalConfig, check_counts, split_features
from .flow_probe import PROBE as FLOW_PROBE
from .flow_probe import TASK as FLOW_TASK
from .flow_probe import flow_metrics
from .probes import PROBES, probe_metrics
from .report import bar_chart, markdown, write_csv
from .tasks import TASKS

SCRATCH = "scratch"
MOTION_TASKS = ("arrow-of-time", "speed")
FINETUNE = "finetune"            # --probe finetune: end-to-end fine-tuning (eval/finetune) beside the frozen probes
PROTOCOLS = ("cpu", "gpu")       # compare --protocol: the embedded study on CPU (eval/study.py) or on one GPU


@dataclass(frozen=True)
class CompareConfig:
    runs: tuple[tuple[str, str], ...] = ()   # (name, run folder or checkpoint); repeated names = replicates
    scratch: bool = False
    data: str | None = None
    test_data: str | None = None
    tasks: tuple[str, ...] = MOTION_TASKS
    probes: tuple[str, ...] = ("linear", "knn")     # feature probes (eval/probes.py) and/or "finetune"
    seeds: int = 3
    out: str = "runs/compare"
    preset: str | None = None                # scratch's preset when there are no runs to copy it from
    folds: int = 5
    windows: int = 8
    clips: int = 2
    crops: int = 3
    cache_dir: str | None = None
    progress: bool = True
    steps: int | None = None                 # embedded study only: pretraining steps (None = its protocol's)
    finetune_settings: dict = field(default_factory=dict)   # FinetuneConfig settings for --probe finetune
    protocol: str = "cpu"                    # the embedded study: cpu (eval/study.py) or gpu (eval/gpu_study.py)
    device: str | None = None                # gpu: the torch device (None = cuda)
    data_dir: str | None = None              # gpu: prepared data (eval/device_data.py); None = prepare into OUT/data
    pilot: bool = False                      # gpu: the pilot (scratch and the pilot regime) instead of the study
    dry_run: bool = False                    # gpu: every stage for a few steps at tiny sizes

    def validate(self) -> CompareConfig:
        self.check_protocol()
        if self.protocol == "gpu":   # its own study: the options below are not its
            check_bounds(self, {"seeds": AT_LEAST_1})
            return self
        for t in self.tasks:
            if t not in TASKS and t != FLOW_TASK:
                raise UserError(f"--task {t!r} is not one of {', '.join((FLOW_TASK, *TASKS))}")
        for p in self.probes:
            if p not in PROBES and p != FINETUNE:
                raise UserError(f"--probe {p!r} is not one of {', '.join((FINETUNE, *PROBES))}")
        if FINETUNE in self.probes and self.video_tasks:
            finetune_config(self, None, "check", self.video_tasks[0], 0, None).validate()   # bad settings fail now, in one line
        check_counts(self, ("seeds", "steps", "folds", "windows", "clips", "crops"))
        if self.runs and self.data is None and self.video_tasks:
            raise UserError(f"--run needs --data (a labelled list or folder of videos to evaluate on) for --task "
                            f"{self.video_tasks[0]}; only --task {FLOW_TASK} makes its own clips")
        if not self.video_tasks and not self.runs and not self.scratch:
            raise UserError(f"--task {FLOW_TASK} compares encoders: add --run NAME=PATH and/or --scratch --preset NAME")
        if not self.runs and self.scratch and self.preset is None and (self.data is not None or not self.video_tasks):
            raise UserError("--scratch alone needs --preset (or add --run NAME=PATH to copy its preset)")
        for name, path in self.runs:
            if name == SCRATCH:
                raise UserError(f"--run name {SCRATCH!r} is reserved for --scratch; choose another name")
            if not Path(path).exists():
                raise UserError(f"--run {name}={path}: no such run folder or checkpoint")
        return self

    @property
    def video_tasks(self) -> tuple[str, ...]:
        """The tasks probed on --data's videos (all but flow, which renders its own clips)."""
        return tuple(t for t in self.tasks if t != FLOW_TASK)

    def check_protocol(self) -> None:
        """--protocol and the options only one of the protocols takes (one line each)."""
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        gpu_only = {"--pilot": self.pilot, "--dry-run": self.dry_run, "--device": self.device is not None,
                    "--data-dir": self.data_dir is not None}
        if self.protocol == "cpu":
            for flag, given in gpu_only.items():
                if given:
                    raise UserError(f"{flag} is an option of the GPU study; add --protocol gpu")
            return
        if self.runs or self.data is not None:
            raise UserError("--protocol gpu runs its own study; leave out --run and --data")
        if self.steps is not None or self.finetune_settings:
            raise UserError("--steps and --finetune-set are the CPU study's; the GPU study's budgets are "
                            "GpuProtocol's (eval/gpu_study.py), fixed by its pilot")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise UserError(f"--data-dir {self.data_dir}: no such folder; prepare it with "
                            "`bash benchmarks/device_study.sh --prepare`, or leave --data-dir out to prepare it into OUT/data")
        from training.config import check_render_device
        check_render_device(self.device or "cuda", "--device", " (with --dry-run: the study itself needs a GPU)")


def parse_run(text: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); a bare PATH is named after its folder."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text.rstrip("/")).name, text
    if not name or not path:
        raise UserError(f"--run {text!r}: expected NAME=PATH (a pretraining output folder or checkpoint)")
    return name, path


def _replicates(cfg: CompareConfig) -> dict[str, list[str | None]]:
    reps: dict[str, list[str | None]] = {}
    for name, path in cfg.runs:
        reps.setdefault(name, []).append(path)
    if cfg.scratch:
        reps[SCRATCH] = [None]
    return reps


def _echo(cfg: CompareConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


def evaluate_runs(cfg: CompareConfig) -> tuple[list[dict], dict[str, dict]]:
    """Per (run, seed, task, probe) metrics rows, and what each run saw in pretraining."""

    reps = _replicates(cfg)
    loaded = {p: encoder_source(p, cfg.preset, 0) for ps in reps.values() for p in ps if p is not None}  # once each
    geometry = next(iter(loaded.values()))[1] if loaded else None
    rows, info = [], {}
    for name, paths in reps.items():
        for seed in range(cfg.seeds):
            path = paths[seed % len(paths)]
            eid, s, summary, load = loaded[path] if path is not None else \
                encoder_source(None, cfg.preset, seed, like=geometry)
            info.setdefault(name, {**summary, "replicates": len(paths), "paths": [str(p) for p in paths]})
            for task in cfg.tasks:
                if task == FLOW_TASK:                # its own clips and ridge probe, whatever --probe says
                    rows.append(flow_row(cfg, name, path, load, s, seed))
                    continue
                if FINETUNE in cfg.probes:
                    rows.append(finetune_row(cfg, name, path, s, task, seed))
                feature_probes = [p for p in cfg.probes if p != FINETUNE]
                if not feature_probes:
                    continue
                ecfg = EvalConfig(data=cfg.data, test_data=cfg.test_data, checkpoint=path, random_init=path is None,
                                  preset=cfg.preset, task=task, seed=seed, folds=cfg.folds, windows=cfg.windows,
                                  clips=cfg.clips, crops=cfg.crops, cache_dir=cfg.cache_dir, progress=cfg.progress)
                train, test = split_features(ecfg, eid, s, load)
                for probe in feature_probes:
                    m = probe_metrics(train, test, task, probe, seed, cfg.folds)
                    m.update(run=name, path=str(path) if path else None,
                             skipped_videos=len(train.skipped) + (len(test.skipped) if test is not None else 0))
                    rows.append(m)
                    _echo(cfg, f"  {name} seed {seed} {task}/{probe}: top-1 {100 * m['top1']:.1f}%")
    return rows, info


def flow_row(cfg: CompareConfig, name: str, path: str | None, load, s, seed: int) -> dict:
    """The flow task (eval/flow_probe.py) for one run and seed: a report row with metric "epe"."""
    m = flow_metrics(load, s, seed)
    m.update(run=name, path=str(path) if path else None)
    _echo(cfg, f"  {name} seed {seed} {FLOW_TASK}/{FLOW_PROBE}: EPE {m['epe']:.3f} (mean flow {m['mean_epe']:.3f})")
    return m


def finetune_config(cfg: CompareConfig, path: str | None, name: str, task: str, seed: int, geometry):
    """The FinetuneConfig of one (run, task, seed): the same recipe for every run (cfg.finetune_settings
    over FinetuneConfig's defaults); scratch is a random init with the runs' geometry."""
    from training.models import preset_of

    from .finetune.config import FinetuneConfig
    fixed = {"data": cfg.data or "unused", "test_data": cfg.test_data, "folds": cfg.folds, "task": task, "seed": seed,
             "windows": cfg.windows, "progress": cfg.progress,
             "out": str(Path(cfg.out) / FINETUNE / f"{name}-seed{seed}" / task)}
    if path is not None:
        weights = {"checkpoint": path, "preset": cfg.preset}
    elif geometry is not None:
        weights = {"random_init": True, "preset": preset_of(geometry), "frames": geometry.frames, "size": geometry.size}
    else:
        weights = {"random_init": True, "preset": cfg.preset or "tiny"}
    bad = sorted(set(cfg.finetune_settings) & (set(fixed) | {"checkpoint", "random_init", "eval_only"}))
    if bad:
        raise UserError(f"--finetune-set {bad[0]}=... is set by compare itself; use compare's own option for it")
    try:
        return FinetuneConfig(**{**cfg.finetune_settings, **fixed, **weights})
    except TypeError as e:
        raise UserError(f"--finetune-set: {e}; settings are the options of `smile-synth finetune`, with _") from None


def finetune_note(cfg: CompareConfig) -> str:
    """What --probe finetune ran, for the report ('' without it)."""
    if FINETUNE not in cfg.probes:
        return ""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(cfg.finetune_settings.items())) or "none"
    return (" finetune: end-to-end fine-tuning with VideoMAE's recipe (`smile-synth finetune` defaults; changed: "
            f"{settings}), the same for every run and seed, fold by fold.")


def finetune_row(cfg: CompareConfig, name: str, path: str | None, geometry, task: str, seed: int) -> dict:
    """Fine-tune one run (or scratch) on one task with one seed; its metrics as a report row."""
    from .finetune.run import finetune

    _echo(cfg, f"  fine-tuning {name} seed {seed} on {task}")
    m = finetune(finetune_config(cfg, path, name, task, seed, geometry))
    m.update(run=name, path=str(path) if path else None)
    _echo(cfg, f"  {name} seed {seed} {task}/{FINETUNE}: top-1 {100 * m['top1']:.1f}%")
    return m


def write_report(cfg: CompareConfig, rows: list[dict], info: dict, title: str, notes: list[str]) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", {"rows": rows, "runs": info, "config": asdict(cfg)})
    write_csv(rows, info, out / "report.csv")
    with replacing(out / "report.md") as tmp:
        tmp.write_text(markdown(rows, info, title, notes))
    bar_chart(rows, out / "report.png", title)
    return out


def compare(cfg: CompareConfig) -> Path:
    """Run the comparison (or the embedded default experiment) into cfg.out; returns the folder."""
    cfg = cfg.validate()
    if cfg.protocol == "gpu":
        return gpu_experiment(cfg)
    if not cfg.runs and cfg.data is None and cfg.video_tasks:
        return embedded_experiment(cfg)
    rows, info = evaluate_runs(cfg)
    notes = [f"Evaluated on {cfg.data}" + (f" (test: {cfg.test_data})" if cfg.test_data else "") +
             f"; {cfg.seeds} seeds; frozen probes on mean-pooled tokens." + finetune_note(cfg)] if cfg.video_tasks else []
    if FLOW_TASK in cfg.tasks:
        notes.append(f"{FLOW_TASK}/{FLOW_PROBE}: a ridge regression of each token's mean flow from its frozen features, on "
                     "held-out glyph clips (eval/flow_probe.py); end-point error in px/frame, lower is better; its "
                     "baseline row is the mean-flow (training mean) EPE.")
    return write_report(cfg, rows, info, "smile-synth compare", notes)


# ------------------------------------------------------------------------------- embedded default

def embedded_experiment(cfg: CompareConfig) -> Path:
    """The embedded smoke-scale study (eval/study.py): six pretraining regimes x cfg.seeds, fine-tuned and
    probed on real scenes held out from all pretraining and on the synthetic direction task."""
    from dataclasses import replace

    from .study import Protocol, run_study

    protocol = Protocol()
    if cfg.steps is not None:
        protocol = replace(protocol, pretrain_steps=cfg.steps)
    if cfg.finetune_settings:
        protocol = replace(protocol, finetune_settings={**protocol.finetune_settings, **cfg.finetune_settings})
    return run_study(cfg.out, cfg.seeds, protocol, cfg.progress)


def gpu_experiment(cfg: CompareConfig) -> Path:
    """The study on one GPU (eval/gpu_study.py), or its pilot; cfg.seeds seeds."""
    from .gpu_study import GpuProtocol, dry_run, run_gpu_study, run_pilot

    protocol = replace(GpuProtocol(), seeds=cfg.seeds)
    if cfg.dry_run:
        protocol = dry_run(protocol)
    run = run_pilot if cfg.pilot else run_gpu_study
    return run(cfg.out, protocol, cfg.device or "cuda", cfg.data_dir, workers=0 if cfg.dry_run else None,
               progress=cfg.progress)
