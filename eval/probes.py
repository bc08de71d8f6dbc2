"""Probes on frozen features: they score (N_test, n_classes) and report top-1 / top-5.

- ``linear``: logistic regression on standardized features; its L2 strength is picked from C_GRID by
  cross-validation over source groups inside the training set (never looking at the test set).
- ``knn``: cosine similarity to every training feature, the k nearest vote with weight exp(sim / T)
  (the weighted kNN of InstDisc/DINO), k = 20, T = 0.07.
"""
from __future__ import annotations

import warnings

import numpy as np

from typing import Callable

from smile_synth.errors import UserError

from .splits import check_disjoint, group_folds
from .tasks import TASKS

# probe(train_x (N, D), train_y int (N,), test_x (M, D), n_classes, train_groups (N,) or None, seed) -> scores (M, n_classes)
ProbeFn = Callable[..., np.ndarray]
PROBES: dict[str, ProbeFn] = {}     # name -> probe: the one list of probes (CLI choices, validation, tests)


def register_probe(name: str) -> Callable[[ProbeFn], ProbeFn]:
    """Register a probe under `name` (timm's register_model pattern)."""
    def add(fn: ProbeFn) -> ProbeFn:
        if name in PROBES:
            raise ValueError(f"probe {name!r} is already registered")
        PROBES[name] = fn
        return fn
    return add


C_GRID = (0.01, 0.1, 1.0, 10.0)
KNN_K = 20
KNN_T = 0.07


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among their k highest scores; ties count against the label."""
    if len(labels) == 0:
        return float("nan")
    own = scores[np.arange(len(labels)), labels]
    better = (scores > own[:, None]).sum(1)
    ties = (scores == own[:, None]).sum(1) - 1
    return float(np.mean(better + ties < k))


def _standardize(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(x - mean) / std for x in (train, *others)]


def _logistic(x: np.ndarray, y: np.ndarray, C: float, n_classes: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=2000).fit(x, y)


def _class_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) decision scores, with -inf for classes absent from training."""
    scores = np.full((len(x), n_classes), -np.inf)
    raw = model.decision_function(x)
    if raw.ndim == 1:  # binary: one column, positive = classes_[1]
        raw = np.stack([-raw, raw], 1) / 2
    scores[:, model.classes_] = raw
    return scores


def linear_scores(train_x, train_y, test_x, n_classes: int, train_groups=None, seed: int = 0) -> tuple[np.ndarray, float]:
    """Logistic-regression scores (N_test, n_classes) and the C chosen by inner group cross-validation."""
    train_x, test_x = _standardize(train_x, test_x)
    C = C_GRID[len(C_GRID) // 2]
    if train_groups is not None and len(set(train_groups)) >= 3 and len(set(train_y)) > 1:
        folds = group_folds(np.asarray(train_groups), train_y, 3, seed)
        best = -1.0
        for c in C_GRID:
            acc = []
            for f in range(folds.max() + 1):
                tr, va = folds != f, folds == f
                if len(set(train_y[tr])) < 2:
                    continue
                m = _logistic(train_x[tr], train_y[tr], c, n_classes)
                acc.append(topk_accuracy(_class_scores(m, train_x[va], n_classes), train_y[va], 1))
            if acc and np.mean(acc) > best + 1e-9:
                best, C = float(np.mean(acc)), c
    model = _logistic(train_x, train_y, C, n_classes)
    return _class_scores(model, test_x, n_classes), C


def knn_scores(train_x, train_y, test_x, n_classes: int, k: int = KNN_K, t: float = KNN_T) -> np.ndarray:
    """Weighted-kNN class scores (N_test, n_classes) from cosine similarity."""
    def unit(x):
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    sim = unit(test_x) @ unit(train_x).T                                   # (N_test, N_train)
    k = min(k, len(train_y))
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]                  # (N_test, k)
    weights = np.exp(np.take_along_axis(sim, nearest, 1) / t)
    scores = np.zeros((len(test_x), n_classes))
    np.add.at(scores, (np.repeat(np.arange(len(test_x)), k), train_y[nearest].ravel()), weights.ravel())
    return scores


@register_probe("linear")
def _linear(train_x, train_y, test_x, n_classes, train_groups=None, seed=0):
    return linear_scores(train_x, train_y, test_x, n_classes, train_groups, seed)[0]


@register_probe("knn")
def _knn(train_x, train_y, test_x, n_classes, train_groups=None, seed=0):
    return knn_scores(train_x, train_y, test_x, n_classes)


def probe_scores(probe: str, train_x, train_y, test_x, n_classes: int, train_groups=None, seed: int = 0) -> np.ndarray:
    """(N_test, n_classes) scores of `probe` trained on (train_x, train_y)."""
    from threadpoolctl import threadpool_limits

    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}")
    # one BLAS thread: on probe-sized arrays OpenBLAS's threads only wait on each other (lbfgs 14-28x
    # slower in CPU time with 2 threads on the 2-core VM, 700-2000 examples x 192-768 features)
    with threadpool_limits(1, user_api="blas"):
        return PROBES[probe](train_x, train_y, test_x, n_classes, train_groups, seed)


def probe_metrics(train: FeatureSet, test: FeatureSet | None, task: str, probe: str, seed: int, folds: int) -> dict:
    """Train and score `probe` on a given split (test set) or on k folds by source video; pooled accuracy.
    `train`, `test`: features float (N, C), labels int64 (N,), items int64 (N,) and groups (N,) of each
    example (eval.features.FeatureSet, or the device evaluations' own arrays)."""
    n_classes = int(max(train.labels.max(), test.labels.max() if test is not None else 0)) + 1
    if test is not None:
        scores = probe_scores(probe, train.features, train.labels, test.features, n_classes, train.groups, seed)
        labels, per_fold = test.labels, [topk_accuracy(scores, test.labels, 1)]
        n_train, split = len(train.labels), "given train/test lists"
    else:
        if folds < 2:
            raise UserError(f"--folds {folds} must be >= 2 (or give --test-data)")
        groups = train.groups
        if len(set(groups)) < 2:
            raise UserError(f"all usable clips come from one source video ({groups[0]}); a split by video needs at "
                            "least 2 (add videos, or give --test-data)")
        fold = group_folds(groups, train.labels, folds, seed)
        k = int(fold.max()) + 1
        scores = np.zeros((len(train.labels), n_classes))
        per_fold, n_train = [], []
        for f in range(k):
            tr, te = fold != f, fold == f
            check_disjoint(groups, tr, te)
            scores[te] = probe_scores(probe, train.features[tr], train.labels[tr], train.features[te], n_classes,
                                      groups[tr], seed)
            per_fold.append(topk_accuracy(scores[te], train.labels[te], 1))
            n_train.append(int(tr.sum()))
        labels, n_train, split = train.labels, int(np.mean(n_train)), f"{k}-fold by source video"
    counts = np.bincount(labels, minlength=n_classes)
    return {
        "task": task, "probe": probe, "seed": seed, "split": split,
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5) if n_classes > 5 else None,
        "chance": float(counts.max() / counts.sum()),
        "per_fold_top1": per_fold,
        "classes": list(TASKS[task].class_names or range(n_classes)),
        "n_train_clips": n_train, "n_test_clips": len(labels),
        "n_videos": len(set(train.items.tolist())) + (len(set(test.items.tolist())) if test is not None else 0),
    }
