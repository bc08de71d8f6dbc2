"""The probes' settings matter, as documented in eval/probes.py and the README: kNN votes with its k = 20
nearest training features by cosine similarity, weighted exp(sim / 0.07); the linear probe picks C from
C_GRID by cross-validation inside the training set. The data sets here are built so that a wrong k or a
skipped C search gives another answer (the blobs of test_eval.py are far enough apart for any setting)."""
from __future__ import annotations

import numpy as np
import pytest

from eval.probes import C_GRID, linear_scores, probe_scores, topk_accuracy

QUERY = np.array([[1.0, 0.0]])


def at_similarity(sim: float, n: int) -> np.ndarray:
    """n unit vectors in 2-D with cosine similarity `sim` to QUERY, alternating above and below it."""
    a = np.arccos(sim) * np.where(np.arange(n) % 2, 1.0, -1.0)
    return np.column_stack([np.cos(a), np.sin(a)])


def knn_case() -> tuple[np.ndarray, np.ndarray]:
    """Class 0: one copy of the query and 40 far points (sim 0.9); class 1: 20 points at sim 0.95.

    Relative weights exp((sim - 1) / 0.07): 1 for the copy, 0.49 each at 0.95, 0.24 each at 0.9.
    k=1 sees the copy: class 0. k=20 sees the copy and 19 class-1 points (1 vs 9.3): class 1.
    Every point (k=61): 1 + 40 x 0.24 = 10.6 vs 20 x 0.49 = 9.8: class 0 again."""
    x = np.concatenate([QUERY, at_similarity(0.9, 40), at_similarity(0.95, 20)])
    y = np.array([0] * 41 + [1] * 20)
    return x, y


def reference_knn(train_x, train_y, test_x, n_classes, k, t) -> np.ndarray:
    """Weighted kNN written out row by row (full sort, no argpartition)."""
    unit = lambda v: v / np.linalg.norm(v)   # noqa: E731
    scores = np.zeros((len(test_x), n_classes))
    for i, q in enumerate(test_x):
        sims = np.array([unit(q) @ unit(x) for x in train_x])
        for j in np.argsort(-sims, kind="stable")[:k]:
            scores[i, train_y[j]] += np.exp(sims[j] / t)
    return scores


def test_the_knn_case_turns_on_k():
    from eval.probes import knn_scores

    x, y = knn_case()
    assert knn_scores(x, y, QUERY, 2, k=1).argmax() == 0
    assert knn_scores(x, y, QUERY, 2, k=20).argmax() == 1
    assert knn_scores(x, y, QUERY, 2, k=len(y)).argmax() == 0


def test_the_knn_probe_votes_with_its_documented_k_and_temperature():
    x, y = knn_case()
    scores = probe_scores("knn", x, y, QUERY, 2, None, 0)
    assert scores.argmax() == 1
    np.testing.assert_allclose(scores, reference_knn(x, y, QUERY, 2, k=20, t=0.07), rtol=1e-9)


def test_knn_scores_match_the_written_out_reference_on_random_features():
    rng = np.random.default_rng(0)
    x, y, q = rng.normal(size=(50, 8)), rng.integers(0, 4, 50), rng.normal(size=(6, 8))
    np.testing.assert_allclose(probe_scores("knn", x, y, q, 5, None, 0), reference_knn(x, y, q, 5, k=20, t=0.07),
                               rtol=1e-9)


def needs_a_large_c(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two features share a large nuisance u; the label is only in their tiny difference (0.1 against
    std 1), plus 3 noise features. Reading it needs large weights, which a strong L2 penalty forbids."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    u = rng.normal(size=n)
    return np.column_stack([u + 0.1 * (2 * y - 1), u, rng.normal(size=(n, 3))]), y


@pytest.mark.parametrize("seed", [1, 3])
def test_the_linear_probe_picks_a_better_c_than_the_middle_of_the_grid(seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = needs_a_large_c(seed, 48)
    groups = np.repeat(np.arange(12), 4)
    test_x, test_y = needs_a_large_c(seed + 100, 400)
    middle = C_GRID[len(C_GRID) // 2]

    scores, chosen = linear_scores(x, y, test_x, 2, groups, seed=0)
    assert chosen != middle and chosen in C_GRID

    scaler = StandardScaler().fit(x)
    at_middle = LogisticRegression(C=middle, max_iter=2000).fit(scaler.transform(x), y)
    middle_acc = float(np.mean(at_middle.predict(scaler.transform(test_x)) == test_y))
    probe_acc = topk_accuracy(probe_scores("linear", x, y, test_x, 2, groups, 0), test_y, 1)
    assert probe_acc == topk_accuracy(scores, test_y, 1)
    assert probe_acc > middle_acc + 0.1, (chosen, probe_acc, middle_acc)

    # the choice never looks at the test set
    assert linear_scores(x, y, test_x[::-1] * 3 + 1, 2, groups, seed=0)[1] == chosen
