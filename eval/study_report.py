"""The study's report: the table (mean ± std over seeds), pretraining loss against its trivial levels,
dose-response over pretraining budgets, and a "what this shows" paragraph computed from the numbers.

Rows: one dict per (run, seed, task, probe, budget) with "top1", "chance", "clips_seen"; budget 0 is
scratch, 1 the full pretraining run. Separation rule (fixed with the protocol): regime A beats B on a
column when mean(A) - mean(B) > 2 x max(std(A), std(B)), std over seeds (ddof 1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smile_synth.atomic import replacing, write_json_atomic
from smile_synth.plots import pyplot, read_log, save_png

from .report import aggregate, bar_chart, column, markdown, write_csv

MOVING = ("moving-black", "moving-noise", "natural+objects")   # regimes whose objects move
CLEARLY_BELOW = 0.9          # a loss "clearly below" a trivial level is under 90% of it
TAIL = 0.2                   # the share of a run's logged windows, at its end, that its loss levels are read from


def final_rows(rows: list[dict]) -> list[dict]:
    """The rows of the finished runs (and scratch): what the main table shows."""
    return [r for r in rows if r["budget"] in (0.0, 1.0)]


def separates(cells: dict, a: str, b: str, col: str) -> tuple[bool, float, float]:
    """(a beats b on col by the separation rule, mean difference, 2 x the larger std)."""
    if (a, col) not in cells or (b, col) not in cells:
        return False, float("nan"), float("nan")
    ca, cb = cells[a, col], cells[b, col]
    gap, bar = ca["mean"] - cb["mean"], 2 * max(ca["std"], cb["std"])
    return gap > bar, gap, bar


def pretraining_logs(runs: dict, names: list[str]) -> dict[str, list[list[dict]]]:
    """regime -> the log.jsonl records of each of its seeds' runs (runs without a log left out)."""
    logs = {}
    for name in names:
        found = [read_log(Path(run) / "log.jsonl") for (regime, _), run in sorted(runs.items())
                 if regime == name and run is not None and (Path(run) / "log.jsonl").is_file()]
        if any(found):
            logs[name] = [log for log in found if log]
    return logs


def tail_levels(log: list[dict], tail: float = TAIL) -> tuple[float, float, float]:
    """(loss, zeros, best constant): their means over the last `tail` share of one run's logged windows."""
    last = log[-max(1, int(len(log) * tail)):]
    loss, zero, constant = (float(np.mean([r.get(k, np.nan) for r in last]))
                            for k in ("loss", "zero_loss", "constant_loss"))
    return loss, zero, constant


def loss_summary(logs: dict[str, list[list[dict]]], tail: float = TAIL) -> dict[str, dict]:
    """regime -> mean over seeds of the last `tail` share of logged windows: loss, zero and constant levels."""
    out = {}
    for name, per_run in logs.items():
        per_seed = [tail_levels(log, tail) for log in per_run]
        loss, zero, constant = np.mean(per_seed, axis=0)
        out[name] = {"loss": float(loss), "zero": float(zero), "constant": float(constant), "seeds": len(per_seed)}
    return out


def loss_check(runs: dict) -> list[dict]:
    """One row per pretraining run ((regime, seed) -> run folder; scratch's None and runs without a
    log left out): its tail levels and whether it left its best constant (loss < CLEARLY_BELOW x it)."""
    out = []
    for (regime, seed), run in sorted(runs.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        log = read_log(Path(run) / "log.jsonl") if run is not None and (Path(run) / "log.jsonl").is_file() else []
        if log:
            loss, zero, constant = tail_levels(log)
            out.append({"regime": regime, "seed": seed, "loss": loss, "zero": zero, "constant": constant,
                        "left_constant": bool(loss < CLEARLY_BELOW * constant)})
    return out


def loss_check_lines(checks: list[dict]) -> list[str]:
    """The report's lines for loss_check's rows: a table, then which runs did not leave the constant."""
    stuck = [f"{c['regime']} seed {c['seed']}" for c in checks if not c["left_constant"]]
    return ["| regime | seed | loss | best constant | zeros | loss / constant | left the constant |",
            "|---|---:|---:|---:|---:|---:|---|",
            *[f"| {c['regime']} | {c['seed']} | {c['loss']:.4f} | {c['constant']:.4f} | {c['zero']:.4f} | "
              f"{c['loss'] / c['constant']:.3f} | {'yes' if c['left_constant'] else 'NO'} |" for c in checks], "",
            f"Runs whose loss did not leave its best-constant level (not below {CLEARLY_BELOW:.0%} of it over the "
            f"last {TAIL:.0%} of the run): " + (", ".join(stuck) if stuck else "none") + "."]


def loss_picture(logs: dict[str, list[list[dict]]], path: Path) -> None:
    """Pretraining loss per regime (mean over seeds) with its trivial levels: best constant (dashed),
    zeros (dotted)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(logs), figsize=(3.2 * len(logs), 3.0), dpi=110, squeeze=False)
    for ax, (name, per_run) in zip(axes[0], logs.items()):
        n = min(len(lg) for lg in per_run)
        steps = [r["step"] for r in per_run[0][:n]]
        for key, style, label in (("loss", "-", "loss"), ("constant_loss", "--", "best constant"), ("zero_loss", ":", "zeros")):
            values = np.mean([[r[key] for r in lg[:n]] for lg in per_run], axis=0)
            ax.plot(steps, values, style, lw=1.3, label=label)
        low = np.mean([[r["constant_loss"] for r in lg[:n]] for lg in per_run])
        ax.set_ylim(0, 3 * max(low, 1e-6))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pretraining loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def dose_response(rows: list[dict], names: list[str], probe: str) -> dict[str, dict[str, list]]:
    """task -> regime -> [(clips seen, mean top-1, std)] over budgets, scratch's result as every regime's 0."""
    out: dict[str, dict[str, list]] = {}
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["probe"] == probe))
    for task in tasks:
        base = [r["top1"] for r in rows if r["task"] == task and r["probe"] == probe and r["budget"] == 0.0]
        out[task] = {}
        for name in names[1:]:
            points = [(0, float(np.mean(base)), float(np.std(base, ddof=1)) if len(base) > 1 else 0.0)] if base else []
            for clips in sorted({r["clips_seen"] for r in rows if r["run"] == name and r["task"] == task}):
                v = [r["top1"] for r in rows if r["run"] == name and r["task"] == task and r["probe"] == probe
                     and r["clips_seen"] == clips]
                if v:
                    points.append((clips, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0))
            out[task][name] = points
    return out


def dose_picture(curves: dict, chance: dict[str, float], path: Path, probe: str) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.2), dpi=110, squeeze=False)
    for ax, (task, per_regime) in zip(axes[0], curves.items()):
        for name, points in per_regime.items():
            x, m, s = (np.array(v, float) for v in zip(*points))
            ax.errorbar(x, 100 * m, yerr=100 * s, marker="o", ms=3, capsize=2, lw=1.2, label=name)
        ax.axhline(100 * chance[task], color="k", ls="--", lw=0.8)
        ax.set_title(f"{task} / {probe}", fontsize=9)
        ax.set_xlabel("pretraining clips seen (0 = scratch)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def findings(rows: list[dict], losses: dict, names: list[str], curves: dict, probe: str) -> list[str]:
    """The "what this shows" sentences, each computed from the numbers above it."""
    final = final_rows(rows)
    cells = aggregate(final)
    cols = list(dict.fromkeys(column(r["task"], r["probe"]) for r in final))
    out = []
    below_zero = [n for n, v in losses.items() if v["loss"] < CLEARLY_BELOW * v["zero"]]
    below_const = [n for n, v in losses.items() if v["loss"] < CLEARLY_BELOW * v["constant"]]
    out.append(f"Pretraining loss: {len(below_zero)} of {len(losses)} regimes ended clearly below (< {CLEARLY_BELOW:.0%} "
               f"of) predicting zeros ({', '.join(below_zero) or 'none'}); {len(below_const)} ended clearly below the "
               f"best constant ({', '.join(below_const) or 'none'}).")
    ft_cols = [c for c in cols if c.endswith("/finetune")]
    for c in ft_cols:
        if ("scratch", c) not in cells:
            continue
        sc = cells["scratch", c]
        above = sc["mean"] - sc["chance"] > 2 * sc["std"]
        out.append(f"Fine-tuned from scratch, {c.split('/')[0]} reaches {100 * sc['mean']:.1f} ± {100 * sc['std']:.1f}% "
                   f"(chance {100 * sc['chance']:.1f}%): {'above' if above else 'not clearly above'} chance.")
    wins = []
    for c in cols:
        for m in MOVING:
            beat_scratch = separates(cells, m, "scratch", c)[0]
            beat_static = separates(cells, m, "static", c)[0]
            if beat_scratch and beat_static:
                wins.append(f"{m} on {c}")
    goal = [w for w in wins if "/finetune" in w]
    out.append("Moving-object pretraining beats both scratch and the static control by more than 2 seed-std on: "
               + (", ".join(wins) if wins else "no column") + "."
               + (" Under fine-tuning: " + ", ".join(goal) + "." if goal else " Not under fine-tuning."))
    others = []
    for c in cols:
        for n in names[1:]:
            if separates(cells, n, "scratch", c)[0]:
                others.append(f"{n} > scratch on {c}")
            if separates(cells, "scratch", n, c)[0]:
                others.append(f"scratch > {n} on {c}")
    out.append("All separations from scratch by the same rule: " + (", ".join(others) if others else "none") + ".")
    for task, per_regime in curves.items():
        # points: (0 = scratch, first kept budget, ..., full budget)
        trends = [f"{name} {100 * (points[-1][1] - points[1][1]):+.1f}" for name, points in per_regime.items()
                  if len(points) >= 3]
        if trends:
            out.append(f"Dose-response ({task}/{probe}, top-1 change from the first kept budget to the full one, points): "
                       + ", ".join(trends) + ".")
    return out


def write_study_report(out: Path, rows: list[dict], plan, runs: dict, protocol, seeds: int, timing: dict) -> Path:
    from dataclasses import asdict

    names = [r.name for r in plan]
    info = {r.name: {"about": r.about, "settings": r.settings} for r in plan}
    final = final_rows(rows)
    logs = pretraining_logs(runs, names[1:])
    losses = loss_summary(logs)
    probe = protocol.probes[0]
    curves = dose_response([r for r in rows if r["probe"] == probe], names, probe)
    chance = {r["task"]: r["chance"] for r in rows}
    shows = findings(rows, losses, names, curves, probe)
    runs_info = {n: {"source": (info[n]["settings"] or {}).get("source", "none (random init)"),
                     "recipe": info[n]["about"], "steps": 0 if n == "scratch" else protocol.pretrain_steps,
                     "clips_seen": 0 if n == "scratch" else protocol.pretrain_steps * protocol.batch_size,
                     "replicates": seeds} for n in names}
    write_json_atomic(out / "results.json", {"rows": rows, "protocol": asdict(protocol), "seeds": seeds, "regimes": info,
                                             "losses": losses, "dose_response": curves, "findings": shows, **timing})
    write_csv(final, runs_info, out / "report.csv")
    bar_chart(final, out / "report.png", "smile-synth compare: embedded smoke-scale study")
    loss_picture(logs, out / "loss.png")
    dose_picture(curves, chance, out / "dose.png", probe)
    notes = [
        f"**Smoke-scale study.** {len(names)} regimes x {seeds} seeds: the `{protocol.preset}` student pretrained with "
        f"`{protocol.target}` targets for {protocol.pretrain_steps} steps of batch {protocol.batch_size} "
        f"({protocol.pretrain_steps * protocol.batch_size} clips), one run per seed; fine-tuned "
        f"({protocol.finetune_settings['steps']} steps) on {', '.join(protocol.finetune)} and probed frozen "
        f"({', '.join(protocol.probes)}) on {', '.join(protocol.probe_evaluations)}. Real tasks: the embedded real "
        "scenes held out from all pretraining, split by scene. direction: the synthetic held-out motion task "
        "(eval/direction.py). The protocol was fixed with scratch and the pilot regime only.",
        f"Wall time: {timing['minutes']:.1f} min ({timing['pretrain_minutes']:.1f} min pretraining).",
    ]
    lines = [markdown(final, runs_info, "smile-synth compare: embedded smoke-scale study", notes), "",
             "## Regimes", "", *[f"- **{n}**: {info[n]['about']}" for n in names], "",
             "## Pretraining loss against its trivial levels (last 20% of the run, mean over seeds)", "",
             "| regime | loss | best constant | zeros | loss / constant |", "|---|---:|---:|---:|---:|",
             *[f"| {n} | {v['loss']:.4f} | {v['constant']:.4f} | {v['zero']:.4f} | {v['loss'] / v['constant']:.3f} |"
               for n, v in losses.items()], "", "![loss](loss.png)", "",
             f"## Dose-response ({probe} probe, top-1 % by pretraining clips seen; 0 = scratch)", "",
             *[f"- {task} / {name}: " + ", ".join(f"{c}: {100 * m:.1f} ± {100 * s:.1f}" for c, m, s in pts)
               for task, per in curves.items() for name, pts in per.items()], "", "![dose](dose.png)", "",
             "## What this shows", "", *[f"- {s}" for s in shows], ""]
    with replacing(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return out
