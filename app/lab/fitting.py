"""Fitting a value head, and judging one: numpy only, small enough to read in one sitting.

- `fit_linear`: L2-regularised logistic regression, Newton's method (a few thousand states of
  ~900 numbers: a handful of exact steps), classes weighted to count equally (a weak model's
  steps are mostly on wrong paths);
- `fit_mlp`: one hidden ReLU layer, full-batch Adam, seeded;
- `auroc`, `calibration` (expected calibration error over 10 bins), `folds` (cross-validation
  that keeps each problem's steps on one side).
Features are standardised by the training rows' mean and deviation, which the head keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and deviation of each feature over the rows of `x` (a constant one: 1)."""
    std = x.std(0)
    return x.mean(0), np.where(std > 1e-8, std, 1.0)


def _weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights so that both classes weigh half of the total."""
    pos = max(1, int(y.sum()))
    neg = max(1, len(y) - pos)
    return np.where(y > 0.5, len(y) / (2 * pos), len(y) / (2 * neg))


def fit_linear(z: np.ndarray, y: np.ndarray, l2: float, iterations: int = 25):
    """Weights (d,) and bias of logistic regression on standardised rows `z` and labels `y` in
    [0, 1] (soft labels allowed), minimising the class-weighted log loss + l2/2 |w|^2 / n."""
    n, d = z.shape
    x = np.hstack([z, np.ones((n, 1))])
    c = _weights(y)
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0  # the bias is free
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (c * (p - y)) + reg * theta
        hess = (x * (c * p * (1 - p))[:, None]).T @ x + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def fit_mlp(
    z: np.ndarray,
    y: np.ndarray,
    hidden: int = 64,
    l2: float = 1e-3,
    epochs: int = 400,
    lr: float = 3e-3,
    seed: int = 0,
):
    """Layers [(W1 (h, d), b1 (h,)), (W2 (1, h), b2 (1,))] of a one-hidden-layer ReLU network
    trained on the class-weighted log loss by full-batch Adam."""
    rng = np.random.default_rng(seed)
    n, d = z.shape
    params = [
        rng.normal(0, np.sqrt(2 / d), (hidden, d)),
        np.zeros(hidden),
        rng.normal(0, np.sqrt(1 / hidden), (1, hidden)),
        np.zeros(1),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    c = _weights(y) / n
    for t in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        a = np.maximum(z @ w1.T + b1, 0.0)
        p = 1.0 / (1.0 + np.exp(-(a @ w2.T + b2)[:, 0]))
        g_out = (c * (p - y))[:, None]  # (n, 1)
        g_a = (g_out @ w2) * (a > 0)
        grads = [g_a.T @ z + l2 * w1, g_a.sum(0), g_out.T @ a + l2 * w2, g_out.sum(0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return [(params[0], params[1]), (params[2], params[3])]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """The probability that a random right item scores above a random wrong one (ties half);
    None without both kinds."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels) > 0.5
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibration(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> dict:
    """Expected calibration error over equal-width bins, and each bin's mean score and rate."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    table, ece = [], 0.0
    for k in range(bins):
        inside = (s >= k / bins) & ((s < (k + 1) / bins) | (k == bins - 1))
        if inside.any():
            mean, rate = float(s[inside].mean()), float(y[inside].mean())
            ece += inside.mean() * abs(mean - rate)
            table.append(
                {"bin": k, "n": int(inside.sum()), "score": round(mean, 3), "right": round(rate, 3)}
            )
    return {"ece": round(float(ece), 4), "bins": table}


def folds(groups: Sequence[str], k: int) -> list[np.ndarray]:
    """k boolean masks (held-out rows) over `groups`, each group wholly in one fold."""
    names = sorted(set(groups))
    fold_of = {g: i % k for i, g in enumerate(names)}
    of = np.array([fold_of[g] for g in groups])
    return [of == i for i in range(k)]
