"""Pictures of results: the training loss curve (and, for `compare`, bar charts)."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import replacing
from .errors import printable

TICK_CHARS = 24           # a class name on an axis: at most this many characters


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported when a picture is first drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: str | Path) -> Path:
    """Write `fig` to `path` as PNG atomically, then close it; returns the path."""
    import matplotlib.pyplot as plt
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


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
    plt = pyplot()

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
    return save_png(fig, out)


def confusion_picture(matrix, class_names: list[str], out: str | Path, title: str = "") -> Path:
    """Plot a confusion matrix (rows: true class, columns: predicted; counts) as row-normalised shares
    into `out` (.png); cells hold the share when there are at most 20 classes."""
    plt = pyplot()
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    shares = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    import textwrap

    side = min(12.0, 4.0 + 0.3 * n)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=120)
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(n) if n <= 40 else range(0, n, max(1, n // 20))
    # names may come from a downloaded file: escaped, cut, and `$` kept from starting mathtext
    names = [printable(class_names[i][:TICK_CHARS] + "…" * (len(class_names[i]) > TICK_CHARS)).replace("$", r"\$")
             for i in ticks]
    ax.set_xticks(list(ticks), names, rotation=90 if n > 6 else 0, fontsize=8)
    ax.set_yticks(list(ticks), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=9)
    fig.tight_layout()
    return save_png(fig, out)
