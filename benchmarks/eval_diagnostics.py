"""Is there motion in the features at all? Diagnostics for a `smile-synth compare` study.

For every run of the study (read from OUT/results.json: runs, seed replicates, scratch, data and
sampling settings), and a hand-crafted motion baseline (log mean |frame difference| at every lag on
3 scales, no learning), with the same examples, folds and probes as the report:
- top-1 of each probe, as reported;
- the same after subtracting each video's mean feature ("centered"). Labels of the motion tasks are
  balanced inside every video by construction, so the video mean carries scenery, not label: if a
  model's features hold motion under the scenery, centering exposes it. A diagnostic, not a metric.
- the features' effective rank (exp of the entropy of the normalized singular values); about
  (scenes - 1) means the features mostly tell scenes apart.

    python benchmarks/eval_diagnostics.py OUT      # OUT of `smile-synth compare`; writes OUT/diagnostics.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eval.diagnostics import MotionStatistics, centered, effective_rank
from eval.evaluate import EvalConfig, encoder_source, probe_metrics, split_features

MOTION_TASKS = ("arrow-of-time", "speed")        # centering is meaningful only where labels balance per video


def diagnose(study: dict, encoder_id, geometry, load, seed: int) -> dict:
    """Probe top-1 (raw and centered) and effective rank per (task, probe) of one encoder in `study`."""
    out = {}
    for task in [t for t in study["tasks"] if t in MOTION_TASKS]:
        # sampling settings only (validated when the study ran); the encoder is (encoder_id, geometry, load)
        cfg = EvalConfig(data=study["data"], test_data=study["test_data"], task=task, folds=study["folds"],
                         windows=study["windows"], clips=study["clips"], crops=study["crops"],
                         cache_dir=study["cache_dir"], progress=False)
        train, test = split_features(cfg, encoder_id, geometry, load)
        out[f"{task}/effective_rank"] = effective_rank(train.features)
        for probe in study["probes"]:
            out[f"{task}/{probe}"] = probe_metrics(train, test, task, probe, seed, cfg.folds)["top1"]
            out[f"{task}/{probe}/centered"] = probe_metrics(
                centered(train), centered(test) if test is not None else None, task, probe, seed, cfg.folds)["top1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the folder of `smile-synth compare --out OUT`")
    out = Path(ap.parse_args().out)
    study = json.loads((out / "results.json").read_text())["config"]
    replicates: dict[str, list[str]] = {}
    for name, path in study["runs"]:
        replicates.setdefault(name, []).append(path)
    rows: dict[str, list[dict]] = {}
    geometry = None
    for name, paths in replicates.items():
        for seed in range(study["seeds"]):                   # seed s uses replicate s mod k, as compare does
            eid, geometry, _, load = encoder_source(paths[seed % len(paths)], study["preset"], 0)
            rows.setdefault(name, []).append(diagnose(study, eid, geometry, load, seed))
    if study["scratch"]:
        for seed in range(study["seeds"]):
            eid, geometry, _, load = encoder_source(None, study["preset"], seed, like=geometry)
            rows.setdefault("scratch", []).append(diagnose(study, eid, geometry, load, seed))
    rows["motion statistics (hand-crafted)"] = [diagnose({**study, "cache_dir": ""}, ["motion-statistics"],
                                                         geometry, MotionStatistics, 0)]
    (out / "diagnostics.json").write_text(json.dumps(rows, indent=1))

    keys = list(next(iter(rows.values()))[0])
    print("| model | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for name, rs in rows.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rs])
            scale = 1 if k.endswith("rank") else 100
            cells.append(f"{scale * v.mean():.1f}" + (f" ± {scale * v.std(ddof=1):.1f}" if len(v) > 1 else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
