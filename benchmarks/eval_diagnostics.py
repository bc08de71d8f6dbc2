"""Is there motion in the features at all? Diagnostics for a `smile-synth compare` embedded study.

For every pretrained run in OUT/runs, scratch (one per seed) and a hand-crafted motion baseline
(log mean |frame difference| at every lag on 3 scales, no learning), on the held-out clips in
OUT/data/eval and the same examples, folds and probes as the report:
- top-1 of the linear and kNN probes, as reported;
- the same after subtracting each video's mean feature ("centered"). Labels of the motion tasks are
  balanced inside every video by construction, so the video mean carries scenery, not label: if a
  model's features hold motion under the scenery, centering exposes it. A diagnostic, not a metric.
- the features' effective rank (exp of the entropy of the normalized singular values); about
  (scenes - 1) means the features mostly tell scenes apart.

    python benchmarks/eval_diagnostics.py OUT [--seeds 3]      # writes OUT/diagnostics.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from eval.diagnostics import MotionStatistics, centered, effective_rank
from eval.evaluate import EvalConfig, encoder_source, probe_metrics, split_features
from training.models import student_config

TASKS = ("arrow-of-time", "speed")
PROBES = ("linear", "knn")


def diagnose(encoder_id, geometry, load, data: str, cache: str, seed: int) -> dict:
    out = {}
    for task in TASKS:
        cfg = EvalConfig(data=data, random_init=True, preset="tiny", task=task, windows=24, cache_dir=cache,
                         progress=False).validate()
        fs, _ = split_features(cfg, encoder_id, geometry, load)
        out[f"{task}/effective_rank"] = effective_rank(fs.features)
        for probe in PROBES:
            out[f"{task}/{probe}"] = probe_metrics(fs, None, task, probe, seed, cfg.folds)["top1"]
            out[f"{task}/{probe}/centered"] = probe_metrics(centered(fs), None, task, probe, seed, cfg.folds)["top1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the folder of `smile-synth compare --out OUT` (embedded default)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)
    data, cache = str(out / "data" / "eval"), str(out / "features")
    rows: dict[str, list[dict]] = {}
    for run in sorted((out / "runs").iterdir()):
        name, seed = re.fullmatch(r"(.+)-seed(\d+)", run.name).groups()
        eid, geometry, _, load = encoder_source(str(run), None, 0)
        rows.setdefault(name, []).append(diagnose(eid, geometry, load, data, cache, int(seed)))
    for seed in range(args.seeds):
        eid, geometry, _, load = encoder_source(None, "tiny", seed)
        rows.setdefault("scratch", []).append(diagnose(eid, geometry, load, data, cache, seed))
    rows["motion statistics (hand-crafted)"] = [diagnose(["motion-statistics"], student_config("tiny"),
                                                         MotionStatistics, data, "", 0)]
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
