"""`smile-synth compare --protocol gpu`: the study on one GPU (issue 21), in one command of minutes.

data (prepared, or eval.device_data's write_device_data into OUT/data) -> every run's clip pool planned
on all cores at once (training.device_pool) -> regimes x seeds pretrained from their pools on the
device (training.trainer.pretrain_on: the ordinary loop, log.jsonl and run folders) -> every run and
scratch evaluated on the device (eval.device_eval) -> report.md, results.json, report.png, loss.png.

The CPU study's runs saw 5,120 clips each, three to four orders of magnitude fewer than any published
win of masked pretraining (~10^7 presentations); here each run sees GpuProtocol.clips_per_run.

What the regimes are compared under (GpuProtocol) is fixed before they are compared, from a pilot
(`--pilot`) of scratch and the pilot regime only, by the rules written below (PILOT_RULES) before
any run: the preset, the clips per run that fit the time budget, and the fine-tuning budget. The pilot
writes the values they pick (pilot.md, pilot.json); they are then written into GpuProtocol's defaults.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.config import usable_cores
from smile_synth.errors import UserError
from smile_synth.plots import read_log

from .report import aggregate, bar_chart, column, markdown
from .study import PILOT, SCRATCH, Regime, regimes
from .study_report import (
    final_rows,
    findings,
    loss_check,
    loss_check_lines,
    loss_picture,
    loss_summary,
    pretraining_logs,
)

# the pilot picks one (PILOT_RULES["preset"]) of those at the prepared data's size: at 64 px micro8 (8 px
# patches, 256 tokens) or micro (16 px, 64 tokens; the CPU study's). tiny takes 112 px clips, whose data
# (~3x the 64 px data's 17 MiB) would not travel beside the wheels within the device's 64 MiB
CANDIDATE_PRESETS = ("micro8", "micro", "tiny")
MIN_CLIPS, MAX_CLIPS = 5_000_000, 10_000_000   # clip presentations per run: the floor, and 10^7 if it fits
PILOT_CLIPS_SHARE = 0.2                     # a pilot pretraining run sees this share of clips_per_run
FINETUNE_LADDER = (0.5, 1.0, 2.0, 4.0)      # the pilot's fine-tuning budgets (GpuProtocol.ladder) x the settings' steps
FINETUNE_STEPS = "finetune_steps"           # DeviceEvalSettings' field of fine-tuning steps
PLANS_PER_S_GUESS = 1_000                   # plans/s for projections where the pilot measured none (one CPU core's)

# Declared before any pilot run; the pilot applies them to its measurements and writes what they pick.
PILOT_RULES = {
    "preset": "of CANDIDATE_PRESETS at the data's size, those whose pilot throughput fits the study at MIN_CLIPS "
              "clips per run into the time budget (with its pools at the pilot's planning rate and its evaluations "
              "at the one the pilot timed); of those, the one whose pilot-regime loss ends lowest against its best "
              "constant (last 20% of its run); if none fits, the fastest",
    "clips_per_run": "the most clips per run, a multiple of the batch in [MIN_CLIPS, MAX_CLIPS], that the chosen "
                     "preset's measured throughput fits into the budget left after the projected pools and "
                     "evaluations; MIN_CLIPS (flagged) if even that does not fit",
    "finetune_steps": "climbing the ladder (GpuProtocol.ladder x the settings' steps), the first budget at which "
                      "scratch beats chance by more than 2 seed-std (ddof 1) on at least one fine-tuning evaluation; "
                      "if none does before the ladder or the time budget ends, the last one tried (flagged)",
}


def default_evaluation():
    from .device_eval import DeviceEvalSettings
    return DeviceEvalSettings()


@dataclass(frozen=True)
class GpuProtocol:
    """Everything the GPU study fixes. preset, clips_per_run and the evaluation's fine-tuning steps are
    the pilot's picks (PILOT_RULES): until a pilot has run on the device, they are the values it starts
    from (the issue's floor of clips, eval.device_eval's fine-tuning budget); the rest was fixed with the
    protocol."""
    preset: str = "micro8"
    target: str = "hog"
    clips_per_run: int = MIN_CLIPS
    batch_size: int = 1024
    lr: float | None = None                      # base lr (x batch / 256); None = the preset's (DEFAULT_BASE_LR)
    warmup: float = 0.05                         # share of the steps
    pool_size: int = 65_536                      # clips planned per run: each seen ~clips_per_run / pool_size times
    seeds: int = 2
    regimes: tuple[str, ...] = (SCRATCH, "static", PILOT, "moving-noise", "natural+objects")
    evaluation: object = field(default_factory=default_evaluation)   # eval.device_eval.DeviceEvalSettings
    budget_minutes: float = 8.0                  # the whole study, evaluation included: inside the device script's 9 min
    log_every: int = 50                          # steps per log.jsonl window
    ladder: tuple[float, ...] = FINETUNE_LADDER  # the pilot's fine-tuning budgets, x the evaluation's steps

    @property
    def steps(self) -> int:
        return max(1, self.clips_per_run // self.batch_size)

    def validate(self) -> GpuProtocol:
        from training.config import DEFAULT_BASE_LR
        known = [r.name for r in regimes(Path("."))]           # eval.study's regimes (their names only)
        bad = [r for r in self.regimes if r not in known]
        if bad:
            raise UserError(f"GPU study regime {bad[0]!r} is not one of {', '.join(known)}")
        if self.preset not in DEFAULT_BASE_LR:
            raise UserError(f"GPU study preset {self.preset!r} is not one of {', '.join(DEFAULT_BASE_LR)}")
        for name in ("clips_per_run", "batch_size", "pool_size", "seeds", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"GPU study {name} must be at least 1, not {getattr(self, name)}")
        return self


def dry_run(protocol: GpuProtocol) -> GpuProtocol:
    """Every stage for a few steps at tiny sizes (any device: the test suite runs it on CPU)."""
    from .device_eval import dry_run_settings
    return replace(protocol, clips_per_run=8, batch_size=4, pool_size=8, log_every=1, ladder=(1.0,),
                   evaluation=dry_run_settings(protocol.evaluation))


# ------------------------------------------------------------------------------------------ running

def echo(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def prepare_data(out: Path, data_dir: str | None, preset: str, progress: bool) -> Path:
    """The prepared data folder: data_dir, or eval.device_data's written into OUT/data at the preset's
    size (needs PyAV)."""
    from training.models import student_config

    from .device_data import write_device_data
    if data_dir is not None:
        return Path(data_dir)
    t = time.perf_counter()
    root = write_device_data(out / "data", size=student_config(preset).size)
    echo(progress, f"data: prepared {root} in {time.perf_counter() - t:.0f}s")
    return Path(root)


def study_regimes(protocol: GpuProtocol, data: Path) -> list[Regime]:
    """The protocol's regimes (eval.study's, natural clips read from the prepared data), scratch first."""
    return [r for r in regimes(data) if r.name in protocol.regimes]


def pool_spec(regime: Regime, protocol: GpuProtocol, seed: int):
    """The PoolSpec of a regime's run (its recipe's clips, or for natural clips its overlay's objects),
    or None when it needs none (scratch; natural clips without objects)."""
    from generators.recipes import get_recipe
    from training.device_pool import PoolSpec
    from training.models import student_config

    s, settings = student_config(protocol.preset), regime.settings or {}
    natural = settings.get("source") == "natural"
    recipe = settings.get("overlay") if natural else settings.get("recipe")
    if recipe is None:
        return None
    return PoolSpec(get_recipe(recipe, tuple(settings.get("recipe_set", ()))), seed, protocol.pool_size, s.frames,
                    s.size, overlay=natural)


def draw_run_pools(plan: list[Regime], protocol: GpuProtocol, seeds: int, workers: int, progress: bool) -> dict:
    """(regime, seed) -> its numpy pool (BatchPlan), all planned at once on `workers` processes."""
    from training.device_pool import draw_pools

    specs = {(r.name, seed): spec for seed in range(seeds) for r in plan
             if (spec := pool_spec(r, protocol, seed)) is not None}
    t = time.perf_counter()
    pools = draw_pools(list(specs.values()), workers)
    dt, n = time.perf_counter() - t, sum(s.clips for s in specs.values())
    echo(progress, f"pools: {n} plans ({len(specs)} pools of {protocol.pool_size}) in {dt:.1f}s = "
                   f"{n / max(dt, 1e-9):.0f} plans/s on {max(1, workers)} processes")
    return {"pools": dict(zip(specs, pools)), "seconds": dt, "plans": n}


def pretrain_config(regime: Regime, protocol: GpuProtocol, seed: int, out: Path):
    """The PretrainConfig of one run: the regime's data settings, the protocol's optimisation."""
    from training.config import PretrainConfig
    return PretrainConfig(**regime.settings, preset=protocol.preset, target=protocol.target, steps=protocol.steps,
                          batch_size=protocol.batch_size, lr=protocol.lr, warmup=protocol.warmup, workers=0,
                          seed=seed, progress=False, log_every=min(protocol.log_every, protocol.steps),
                          save_every=protocol.steps, out=str(out)).validate()


def pretrain_run(regime: Regime, protocol: GpuProtocol, seed: int, pool, data: Path, device, out: Path,
                 progress: bool) -> dict:
    """Pretrain one (regime, seed) from its pool on `device` into `out` (a finished run is kept);
    -> {"run": out, "seconds", "clips_per_s"} (steady clips/s: the median logged window after the first)."""
    import torch

    from training.device_pool import NaturalBatches, PoolBatches
    from training.trainer import pretrain_on

    cfg = pretrain_config(regime, protocol, seed, out)
    t = time.perf_counter()
    if not ((out / "encoder.pt").is_file() and (out / "run.json").is_file()):
        held = None if pool is None else pool.to(device)       # uploaded once for the whole run

        if cfg.source == "natural":
            from .device_data import load_natural_videos
            videos = load_natural_videos(data)

            def batches(s, start):
                return NaturalBatches(videos, held, cfg.batch_size, s.frames, s.size, cfg.sampling_rate, s.tubelet,
                                      s.patch, seed, torch.device(device), start)
        else:
            def batches(s, start):
                return PoolBatches(held, cfg.batch_size, s.tubelet, s.patch, seed, start)
        pretrain_on(cfg, device, batches)
        del held
    seconds = time.perf_counter() - t
    log = read_log(out / "log.jsonl")
    windows = [r["clips_per_s"] for r in (log[1:] or log)]
    rate = float(np.median(windows)) if windows else float("nan")
    echo(progress, f"pretrain {regime.name} seed {seed}: {protocol.steps} steps x {protocol.batch_size} clips in "
                   f"{seconds:.1f}s, {rate:.0f} clips/s steady")
    return {"run": out, "seconds": seconds, "clips_per_s": rate}


def evaluate_all(evaluations, runs: dict, protocol: GpuProtocol, progress: bool,
                 settings=None) -> tuple[list[dict], float]:
    """Every (regime, seed) run (None: scratch) through the device evaluations; -> (rows tagged with
    run, budget and clips_seen, seconds)."""
    rows, t = [], time.perf_counter()
    for (name, seed), run in runs.items():
        t1 = time.perf_counter()
        tag = {"run": name, "budget": 0.0 if run is None else 1.0,
               "clips_seen": 0 if run is None else protocol.steps * protocol.batch_size}
        got = [{**r, **tag} for r in evaluations.evaluate(None if run is None else str(run), seed, settings)]
        rows += got
        echo(progress, f"evaluate {name} seed {seed} ({time.perf_counter() - t1:.1f}s): "
                       + ", ".join(f"{r['task']}/{r['probe']} {100 * r['top1']:.1f}%" for r in got))
    return rows, time.perf_counter() - t


def device_name(device) -> str:
    import torch
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else f"{d.type} ({cpu_model()})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def run_gpu_study(out: str | Path, protocol: GpuProtocol, device: str = "cuda", data_dir: str | None = None,
                  workers: int | None = None, progress: bool = True) -> Path:
    """The whole study into OUT (finished runs are kept); returns OUT.

    Seed by seed, every regime is pretrained and then evaluated at once, so the time each takes is known as
    the study goes. Seed 0 of every regime always runs; a later replicate is started only when its
    pretraining and evaluation (the longest seen so far) fit what is left of the budget, else it is left
    out and named in the report. Every run in the report ran the same protocol; the budget only ever costs
    replicates, so the report is written inside it."""
    from .device_eval import DeviceEvaluations

    out, t0 = Path(out), time.time()
    deadline = t0 + protocol.budget_minutes * 60
    out.mkdir(parents=True, exist_ok=True)
    protocol = protocol.validate()
    data = prepare_data(out, data_dir, protocol.preset, progress)
    plan = study_regimes(protocol, data)
    drawn = draw_run_pools(plan, protocol, protocol.seeds, usable_cores() if workers is None else workers, progress)
    t = time.perf_counter()
    evaluations = DeviceEvaluations(data, protocol.preset, device, protocol.evaluation)
    echo(progress, f"evaluations: examples built on {device} in {time.perf_counter() - t:.1f}s")
    runs, rates, rows, skipped = {}, {}, [], []
    longest = {"pretrain": 0.0, "evaluate": 0.0}
    spent = {"pretrain": 0.0, "evaluate": time.perf_counter() - t}
    for seed in range(protocol.seeds):
        for regime in plan:
            pool = drawn["pools"].pop((regime.name, seed), None)          # freed once uploaded and trained
            need = (0.0 if regime.settings is None else longest["pretrain"]) + longest["evaluate"]
            if seed > 0 and time.time() + need > deadline:
                skipped.append(f"{regime.name} seed {seed}")
                echo(progress, f"skip {regime.name} seed {seed}: about {need:.0f}s needed, "
                               f"{max(0.0, deadline - time.time()):.0f}s left of the budget")
                continue
            run = None
            if regime.settings is not None:
                r = pretrain_run(regime, protocol, seed, pool, data, device,
                                 out / "runs" / f"{regime.name}-seed{seed}", progress)
                run, rates[f"{regime.name}-seed{seed}"] = r["run"], r["clips_per_s"]
                longest["pretrain"] = max(longest["pretrain"], r["seconds"])
                spent["pretrain"] += r["seconds"]
            runs[regime.name, seed] = run
            got, seconds = evaluate_all(evaluations, {(regime.name, seed): run}, protocol, progress)
            rows += got
            longest["evaluate"], spent["evaluate"] = max(longest["evaluate"], seconds), spent["evaluate"] + seconds
            # the rows so far, so that a study stopped from outside (the device call's timeout) still returns them
            write_json_atomic(out / "results.json", {"partial": True, "rows": rows, "clips_per_s": rates,
                                                     "protocol": asdict(protocol), "skipped": skipped})
    order = {name: i for i, name in enumerate(r.name for r in plan)}
    rows.sort(key=lambda r: (order[r["run"]], r["seed"]))
    timing = {"minutes": (time.time() - t0) / 60, "pools_seconds": drawn["seconds"],
              "pretrain_seconds": spent["pretrain"], "evaluation_seconds": spent["evaluate"], "plans": drawn["plans"],
              "skipped": skipped}
    write_gpu_report(out, rows, plan, runs, protocol, timing, rates, device_name(device))
    echo(progress, f"study: {timing['minutes']:.1f} min (budget {protocol.budget_minutes:g})"
                   + (f"; left out for time: {', '.join(skipped)}" if skipped else ""))
    return out


# ------------------------------------------------------------------------------------------ report

def write_gpu_report(out: Path, rows: list[dict], plan: list[Regime], runs: dict, protocol: GpuProtocol,
                     timing: dict, rates: dict, device: str) -> Path:
    """report.md, results.json, report.png and loss.png (four files: the device returns at most eight)."""
    names = [r.name for r in plan]
    info = {r.name: {"about": r.about, "settings": r.settings} for r in plan}
    final = final_rows(rows)
    logs = pretraining_logs(runs, names[1:])
    losses, checks = loss_summary(logs), loss_check(runs)
    probe = next((r["probe"] for r in rows if r["probe"] != "finetune"), "linear")   # the findings' probe column
    shows = findings(rows, losses, names, {}, probe)
    clips = protocol.steps * protocol.batch_size
    runs_info = {n: {"source": (info[n]["settings"] or {}).get("source", "none (random init)"),
                     "recipe": (info[n]["settings"] or {}).get("recipe"), "data": "the prepared natural clips",
                     "overlay": (info[n]["settings"] or {}).get("overlay"),
                     "steps": 0 if n == SCRATCH else protocol.steps, "clips_seen": 0 if n == SCRATCH else clips,
                     "replicates": sum(name == n for name, _ in runs)} for n in names}
    write_json_atomic(out / "results.json", {
        "rows": rows, "protocol": asdict(protocol), "seeds": protocol.seeds, "regimes": info, "losses": losses,
        "loss_check": checks, "findings": shows, "clips_per_s": rates, "device": device, **timing})
    title = "smile-synth compare --protocol gpu: the study on one GPU"
    bar_chart(final, out / "report.png", title)
    if logs:
        loss_picture(logs, out / "loss.png")
    minutes = timing["minutes"]
    notes = [
        f"**{len(names)} regimes x {protocol.seeds} seeds on {device}.** The `{protocol.preset}` student pretrained "
        f"with `{protocol.target}` targets for {protocol.steps} steps of batch {protocol.batch_size} ({clips:,} clip "
        f"presentations per run) from a pool of {protocol.pool_size:,} planned clips per run (each clip seen about "
        f"{clips / protocol.pool_size:.0f} times, with new masks each time), painted on the device; every run and "
        "scratch then fine-tuned and probed on the device (eval/device_eval.py) on the embedded real scenes held out "
        "from all pretraining (split by scene) and on the synthetic direction task. The protocol was fixed before the "
        "regimes were compared, from a pilot of scratch and the pilot regime only (eval/gpu_study.py PILOT_RULES).",
        f"Wall time: {minutes:.1f} min of a {protocol.budget_minutes:g}-min budget"
        f"{'' if minutes <= protocol.budget_minutes else ' (OVER BUDGET)'}: pools {timing['pools_seconds']:.0f}s "
        f"({timing['plans']:,} plans), pretraining {timing['pretrain_seconds']:.0f}s, evaluation "
        f"{timing['evaluation_seconds']:.0f}s."
        + (f" Left out because they would not have fitted the budget: {', '.join(timing['skipped'])}."
           if timing["skipped"] else ""),
    ]
    lines = [markdown(final, runs_info, title, notes), "",
             "## Regimes", "", *[f"- **{n}**: {info[n]['about']}" for n in names], "",
             "## Pretraining throughput (steady clips/s, median logged window)", "",
             *[f"- {k}: {v:,.0f} clips/s" for k, v in rates.items()], "",
             "## Loss check: each run's loss against its best-constant level (last 20% of the run)", "",
             *loss_check_lines(checks), "", "![loss](loss.png)", "",
             "## What this shows", "", *[f"- {s}" for s in shows], ""]
    with replacing(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out


# ------------------------------------------------------------------------------------------ the pilot

def scratch_above_chance(rows: list[dict]) -> list[str]:
    """The fine-tuning columns on which scratch beats chance by more than 2 seed-std (ddof 1)."""
    cells = aggregate([r for r in rows if r["probe"] == "finetune"])
    out = []
    for (run, col), c in cells.items():
        if run == SCRATCH and c["n"] > 1 and c["mean"] - c["chance"] > 2 * c["std"]:
            out.append(col)
    return out


def pick_preset(measured: dict[str, dict], fits: dict[str, bool]) -> str:
    """PILOT_RULES["preset"] applied to {preset: {"clips_per_s", "ratio"}} and whether each fits."""
    fitting = [p for p in measured if fits[p]]
    if fitting:
        return min(fitting, key=lambda p: measured[p]["ratio"])
    return max(measured, key=lambda p: measured[p]["clips_per_s"])


def fitted_clips(rate: float, seconds_left: float, runs: int, batch: int) -> tuple[int, bool]:
    """PILOT_RULES["clips_per_run"]: (clips per run, whether MIN_CLIPS fits at all)."""
    most = int(rate * max(seconds_left, 0.0) / max(runs, 1)) // batch * batch
    return max(MIN_CLIPS, min(MAX_CLIPS, most)), most >= MIN_CLIPS


def run_pilot(out: str | Path, protocol: GpuProtocol, device: str = "cuda", data_dir: str | None = None,
              workers: int | None = None, progress: bool = True) -> Path:
    """Scratch and the pilot regime only. Each candidate preset at the data's size pretrains the pilot
    regime (seed 0, PILOT_CLIPS_SHARE of a run's clips) and times one evaluation (scratch, seed 0); the
    picked preset then climbs the fine-tuning ladder (scratch seeds 0..seeds-1 and the pilot run at each
    budget) until scratch leaves chance, or the ladder or the time budget ends. Applies PILOT_RULES;
    writes pilot.md, pilot.json, loss.png."""
    from training.models import student_config

    from .device_data import device_data_size
    from .device_eval import DeviceEvaluations

    out, t0 = Path(out), time.time()
    deadline = t0 + protocol.budget_minutes * 60
    out.mkdir(parents=True, exist_ok=True)
    protocol = protocol.validate()
    data = prepare_data(out, data_dir, protocol.preset, progress)
    pilot = next(r for r in regimes(data) if r.name == PILOT)
    candidates = [p for p in CANDIDATE_PRESETS if student_config(p).size == device_data_size(data)]
    if protocol.preset not in candidates:
        raise UserError(f"the data in {data} holds {device_data_size(data)} px clips; the GPU study's preset "
                        f"{protocol.preset!r} takes {student_config(protocol.preset).size} px")
    workers = usable_cores() if workers is None else workers
    pilots = {preset: replace(protocol, preset=preset, clips_per_run=max(
        protocol.batch_size, int(protocol.clips_per_run * PILOT_CLIPS_SHARE))) for preset in candidates}
    # every pool before any device work: the planning workers are forked from a process without CUDA
    pools = {preset: draw_run_pools([pilot], pilots[preset], 1, workers, progress) for preset in candidates}
    measured, runs, evaluations = {}, {}, {}
    for preset in candidates:
        p, drawn = pilots[preset], pools.pop(preset)
        r = pretrain_run(pilot, p, 0, drawn["pools"][PILOT, 0], data, device, out / "pilot" / f"{preset}-{PILOT}-seed0",
                         progress)
        check = loss_check({(f"{PILOT} ({preset})", 0): r["run"]})[0]
        evaluations[preset] = DeviceEvaluations(data, preset, device, protocol.evaluation)
        _, evaluation_s = evaluate_all(evaluations[preset], {(SCRATCH, 0): None}, p, progress)
        m = {"clips_per_s": r["clips_per_s"], "ratio": check["loss"] / check["constant"], "loss_check": check,
             "plans_per_s": drawn["plans"] / max(drawn["seconds"], 1e-9), "evaluation_s": evaluation_s,
             "run": str(r["run"])}
        m["fits"] = fitted_clips(m["clips_per_s"], study_seconds_left(protocol, m, evaluation_s), study_runs(protocol),
                                 protocol.batch_size)[1]
        measured[preset], runs[f"{PILOT} ({preset})", 0] = m, r["run"]
    preset = pick_preset(measured, {name: m["fits"] for name, m in measured.items()})
    base_steps, ladder, cut = getattr(protocol.evaluation, FINETUNE_STEPS), [], False
    calls = {(SCRATCH, s): None for s in range(protocol.seeds)} | {(PILOT, 0): measured[preset]["run"]}
    for share in protocol.ladder:
        steps = max(1, round(base_steps * share))
        need = len(calls) * measured[preset]["evaluation_s"] * max(1.0, share)    # fine-tuning grows with the steps
        if ladder and time.time() + need > deadline:
            cut = True
            break
        settings = replace(protocol.evaluation, **{FINETUNE_STEPS: steps})
        rows, seconds = evaluate_all(evaluations[preset], calls, pilots[preset], progress, settings)
        ladder.append({"preset": preset, "finetune_steps": steps, "rows": rows,
                       "scratch_above_chance": scratch_above_chance(rows), "seconds_per_call": seconds / len(calls)})
        if ladder[-1]["scratch_above_chance"]:
            break
    last = ladder[-1]
    left = study_seconds_left(protocol, measured[preset], last["seconds_per_call"])
    clips, fits_min = fitted_clips(measured[preset]["clips_per_s"], left, study_runs(protocol), protocol.batch_size)
    picked = {"preset": preset, "clips_per_run": clips, FINETUNE_STEPS: last["finetune_steps"]}
    flags = {"finetune_budget_qualified": bool(last["scratch_above_chance"]), "ladder_cut_by_time": cut,
             "min_clips_fit": fits_min}
    write_pilot(out, protocol, measured, ladder, picked, flags, runs, device_name(device), (time.time() - t0) / 60)
    return out


def study_runs(protocol: GpuProtocol) -> int:
    """The study's pretraining runs: its regimes but scratch, x seeds."""
    return len([r for r in protocol.regimes if r != SCRATCH]) * protocol.seeds


def study_seconds_left(protocol: GpuProtocol, measured: dict, evaluation_s: float) -> float:
    """Of the study's budget, the seconds left for pretraining once its pools (at the pilot's planning
    rate) and its evaluations (evaluation_s each) are paid."""
    pools_s = study_runs(protocol) * protocol.pool_size / (measured["plans_per_s"] or PLANS_PER_S_GUESS)
    return protocol.budget_minutes * 60 - pools_s - len(protocol.regimes) * protocol.seeds * evaluation_s


def write_pilot(out: Path, protocol: GpuProtocol, measured: dict, ladder: list[dict], picked: dict, flags: dict,
                runs: dict, device: str, minutes: float) -> None:
    write_json_atomic(out / "pilot.json", {"rules": PILOT_RULES, "protocol": asdict(protocol), "measured": measured,
                                           "ladder": ladder, "picked": picked, "flags": flags, "device": device,
                                           "minutes": minutes})
    logs = pretraining_logs(runs, list(dict.fromkeys(name for name, _ in runs)))
    if logs:
        loss_picture(logs, out / "loss.png")
    lines = [f"# GPU study pilot: scratch and {PILOT} only ({device}, {minutes:.1f} min)", "",
             "Rules, declared in eval/gpu_study.py before any run:", "",
             *[f"- **{k}**: {v}" for k, v in PILOT_RULES.items()], "",
             "## Pretraining candidates (the pilot regime, seed 0)", "",
             "| preset | clips/s | loss / best constant | plans/s | one evaluation (s) | study fits at 5x10^6 |",
             "|---|---:|---:|---:|---:|---|",
             *[f"| {p} | {m['clips_per_s']:,.0f} | {m['ratio']:.3f} | {m['plans_per_s']:,.0f} | "
               f"{m['evaluation_s']:.1f} | {'yes' if m['fits'] else 'no'} |" for p, m in measured.items()],
             "", "## Fine-tuning ladder (top-1 %, mean ± std over seeds; scratch: seeds 0..n-1, the pilot run: seed 0)", ""]
    for step in ladder:     # the fine-tuning columns (pilot.json holds the probes' rows too)
        cells = aggregate(step["rows"])
        cols = [c for c in dict.fromkeys(column(r["task"], r["probe"]) for r in step["rows"]) if c.endswith("/finetune")]
        lines.append(f"- {step['preset']}, {step['finetune_steps']} fine-tuning steps "
                     f"({step['seconds_per_call']:.1f}s per evaluation): "
                     + "; ".join(f"{run} {col} {100 * c['mean']:.1f} ± {100 * c['std']:.1f} (chance "
                                 f"{100 * c['chance']:.1f})" for (run, col), c in cells.items() if col in cols)
                     + f". Scratch above chance on: {', '.join(step['scratch_above_chance']) or 'none'}.")
    lines += ["", "## Picked (write these into GpuProtocol's defaults)", "",
              *[f"- {k}: {v}" for k, v in picked.items()],
              *([] if flags["finetune_budget_qualified"] else
                ["- FLAG: no fine-tuning budget tried got scratch above chance; the last one tried was taken"
                 + (" (the ladder was cut by the time budget)." if flags["ladder_cut_by_time"] else ".")]),
              *([] if flags["min_clips_fit"] else
                [f"- FLAG: even {MIN_CLIPS:,} clips per run do not fit the time budget at the measured throughput."]),
              "", "![loss](loss.png)", ""]
    with replacing(out / "pilot.md") as tmp:
        tmp.write_text("\n".join(lines))
