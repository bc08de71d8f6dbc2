"""The comparison report: report.csv, report.md and report.png from per-seed metrics.

Input rows: one dict per (run, seed, task, probe) with "run", "seed", "task", "probe", "top1", "chance";
runs: name -> what the model saw in pretraining. A row with "metric" (the flow task's "epe": end-point
error in px/frame, lower is better) is reported by that value instead of top-1, its "chance" the baseline.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from smile_synth.atomic import replacing
from smile_synth.plots import pyplot, save_png


TOP1, EPE = "top1", "epe"


def shown(value: float, metric: str) -> str:
    """A cell's number as the report prints it: top-1 in %, EPE in px/frame."""
    return f"{100 * value:.1f}" if metric == TOP1 else f"{value:.3f}"


def column_metric(cells: dict, col: str) -> str:
    return next(cell["metric"] for (_run, c), cell in cells.items() if c == col)


def column(task: str, probe: str) -> str:
    return f"{task}/{probe}"


def aggregate(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(run, column) -> {"mean", "std", "n", "values", "chance", "metric"} of the row's metric (top-1 unless
    it names another) over seeds (std with ddof=1)."""
    cells: dict[tuple[str, str], dict] = {}
    for r in rows:
        metric = r.get("metric", TOP1)
        c = cells.setdefault((r["run"], column(r["task"], r["probe"])), {"values": [], "chances": [], "metric": metric})
        c["values"].append(r[metric])
        c["chances"].append(r["chance"])          # per seed for EPE (its baseline depends on the seed's clips)
    for c in cells.values():
        v = np.asarray(c["values"], float)
        c.update(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0, n=len(v),
                 chance=float(np.mean(c.pop("chances"))))
    return cells


def _chance(cells: dict, cols: list[str]) -> dict[str, float]:
    """column -> chance level (the same for every run evaluated on that column)."""
    out: dict[str, float] = {}
    for (_run, c), cell in cells.items():
        out.setdefault(c, cell["chance"])
    return {c: out[c] for c in cols if c in out}


def _order(rows: list[dict]) -> tuple[list[str], list[str]]:
    runs = list(dict.fromkeys(r["run"] for r in rows))
    cols = list(dict.fromkeys(column(r["task"], r["probe"]) for r in rows))
    return runs, cols


def saw(info: dict) -> str:
    """What a model saw in pretraining, in a few words."""
    if "steps" not in info:
        return "unknown (the checkpoint has no pretraining summary)"
    if info["steps"] == 0:
        return "nothing (random init)"
    what = info.get("recipe") or info.get("data") or info.get("source", "?")
    if info.get("source") == "natural" and info.get("overlay"):
        what = f"{what} + {info['overlay']} objects"
    return f"{info.get('source', '?')}: {what}, {info.get('clips_seen', '?')} clips / {info.get('steps', '?')} steps"


def write_csv(rows: list[dict], runs_info: dict[str, dict], path: Path) -> None:
    runs, cols = _order(rows)
    cells = aggregate(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", "source", "recipe", "data", "steps", "clips_seen", "replicates"]
               + [f"{c} {k}" for c in cols for k in ("mean", "std", "n")])
    for run in runs:
        info = runs_info.get(run, {})
        w.writerow([run, info.get("source", "unknown"), info.get("recipe") or "", info.get("data") or "",
                    info.get("steps", ""), info.get("clips_seen", ""), info.get("replicates", 1)]
                   + ["" if (run, c) not in cells else cells[run, c][k] if k == "n" else f"{cells[run, c][k]:.4f}"
                      for c in cols for k in ("mean", "std", "n")])
    with replacing(path) as tmp:
        tmp.write_text(buf.getvalue())


def markdown(rows: list[dict], runs_info: dict[str, dict], title: str, notes: list[str]) -> str:
    runs, cols = _order(rows)
    cells = aggregate(rows)
    chance = _chance(cells, cols)
    metric = {c: column_metric(cells, c) for c in cols}
    legend = ["Top-1 accuracy (%)"] if TOP1 in metric.values() else []
    if EPE in metric.values():
        legend.append("EPE columns: end-point error (px/frame), lower is better; their chance row is the mean-flow "
                      "baseline")
    lines = [f"# {title}", "", *notes, "",
             f"{'; '.join(legend)}; mean ± std over seeds (n = number of seeds).", "",
             "| run | pretraining saw | " + " | ".join(cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for run in runs:
        vals = [f"{shown(cells[run, c]['mean'], metric[c])} ± {shown(cells[run, c]['std'], metric[c])} "
                f"(n={cells[run, c]['n']})" if (run, c) in cells else "" for c in cols]
        lines.append(f"| {run} | {saw(runs_info.get(run, {}))} | " + " | ".join(vals) + " |")
    lines.append("| chance | | " + " | ".join(shown(chance.get(c, float('nan')), metric[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path, title: str = "") -> None:
    """Grouped bars: one group per task/probe, one bar per run, error bars = std over seeds, chance dashed;
    EPE columns (lower is better) in a panel of their own, beside the top-1 one."""
    plt = pyplot()

    runs, cols = _order(rows)
    cells = aggregate(rows)
    panels = [(m, [c for c in cols if column_metric(cells, c) == m]) for m in (TOP1, EPE)]
    panels = [(m, group) for m, group in panels if group]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 1.6 * len(cols) * max(1, len(runs) / 3)), 3.6), dpi=120,
                             squeeze=False, gridspec_kw={"width_ratios": [len(group) for _, group in panels]})
    for ax, (metric, group) in zip(axes[0], panels):
        _bars(ax, runs, group, cells, metric)
        ax.legend(fontsize=7, ncol=min(4, len(runs) + 1), loc="upper right")
    axes[0][0].set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def _bars(ax, runs: list[str], cols: list[str], cells: dict, metric: str) -> None:
    """One panel of bar_chart: the columns `cols`, all of `metric`."""
    scale = 100 if metric == TOP1 else 1
    width = 0.8 / len(runs)
    x = np.arange(len(cols))
    for i, run in enumerate(runs):
        mean = [scale * cells[run, c]["mean"] if (run, c) in cells else np.nan for c in cols]
        std = [scale * cells[run, c]["std"] if (run, c) in cells else 0 for c in cols]
        ax.bar(x - 0.4 + width * (i + 0.5), mean, width, yerr=std, capsize=3, label=run)
    chance = _chance(cells, cols)
    for j, c in enumerate(cols):
        ax.hlines(chance[c] * scale, j - 0.45, j + 0.45, colors="k", linestyles="dashed", lw=1,
                  label=("chance" if metric == TOP1 else "mean-flow baseline") if j == 0 else None)
    ax.set_xticks(x, cols, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if metric == TOP1:
        ax.set_ylabel("top-1 (%)")
        ax.set_ylim(0, 100)
    else:
        ax.set_ylabel("EPE (px/frame, lower is better)")
        ax.set_ylim(bottom=0)
