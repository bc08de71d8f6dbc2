"""Pictures of results: the training loss curve (and, for `compare`, bar charts)."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import replacing


def read_log(path: str | Path) -> list[dict]:
    """Records of a log.jsonl; lines that do not parse (a run killed mid-write) are skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def loss_curve(log_path: str | Path, out: str | Path, title: str = "") -> Path:
    """Plot loss and learning rate against step from a trainer's log.jsonl into `out` (.png)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    lr = ax.twinx()
    lr.plot(steps, [r["lr"] for r in rows], color="tab:orange", lw=1, alpha=0.7)
    lr.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(title or Path(log_path).parent.name, fontsize=10)
    fig.tight_layout()
    with replacing(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
