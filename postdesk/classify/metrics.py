"""How good a model's predictions are, and where its confidence can be trusted.

Macro-F1 (every label counts the same, however rare) is what postdesk optimises and
reports first; accuracy alone rewards a model that always predicts the biggest category.

The confidence threshold is chosen so that predictions at or above it are at least
`target_precision` correct: among held-out predictions sorted by confidence, it is the
lowest confidence at which the one-sided 95% Wilson lower bound of the precision of
everything above still reaches the target. Using the lower bound instead of the observed
precision keeps the promise on new tickets, not only on the data it was chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # type: ignore[import-untyped]
from sklearn.metrics import precision_recall_fscore_support as prfs

# One-sided 95%: the threshold promises the target precision with that confidence.
WILSON_Z = 1.645


def wilson_lower_bound(correct: ArrayLike, total: ArrayLike, z: float = WILSON_Z) -> Any:
    """The Wilson score lower bound of a proportion `correct / total` (elementwise)."""
    k = np.asarray(correct, dtype=float)
    n = np.asarray(total, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        bound = (centre - spread) / (1 + z * z / n)
    return np.where(n > 0, bound, 0.0)


def threshold_for_precision(
    confidence: ArrayLike, correct: ArrayLike, target: float, z: float = WILSON_Z
) -> float | None:
    """The lowest confidence whose predictions at or above it reach `target` precision.

    None when no threshold does (the model is never confident enough).
    """
    conf = np.asarray(confidence, dtype=float)
    right = np.asarray(correct, dtype=bool)
    if conf.size == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    conf_sorted = conf[order]
    hits = np.cumsum(right[order])
    counts = np.arange(1, conf.size + 1)
    # Only cut between distinct confidences: ties are all in or all out.
    last_of_tie = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]
    ok = (wilson_lower_bound(hits, counts, z) >= target) & last_of_tie
    found = np.flatnonzero(ok)
    if found.size == 0:
        return None
    return float(conf_sorted[found[-1]])


def _round(value: float) -> float:
    return round(float(value), 4)


def evaluation(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confident: ArrayLike | None,
    *,
    threshold: float | None,
    target_precision: float,
) -> dict[str, Any]:
    """Every number `postdesk model evaluate` reports, as a JSON-ready dict.

    `confident` marks the predictions that reached their model's threshold (None: none
    did). `coverage` is their share (the tickets a model labels without a person) and
    `confident_precision` how many of them are right.
    """
    truth = [str(t) for t in y_true]
    pred = [str(p) for p in y_pred]
    labels = sorted(set(truth) | set(pred))
    precision, recall, f1, support = prfs(truth, pred, labels=labels, zero_division=0)
    per_class = {
        label: {
            "precision": _round(precision[i]),
            "recall": _round(recall[i]),
            "f1": _round(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    mask = np.zeros(len(truth), bool) if confident is None else np.asarray(confident, bool)
    n_confident = int(mask.sum())
    right = np.asarray(truth, dtype=object) == np.asarray(pred, dtype=object)
    confident_precision = _round(right[mask].mean()) if n_confident else None
    matrix = confusion_matrix(truth, pred, labels=labels)
    return {
        "rows": len(truth),
        "macro_f1": _round(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": _round(accuracy_score(truth, pred)),
        "coverage": _round(n_confident / len(truth)) if truth else 0.0,
        "confident_precision": confident_precision,
        "confident": n_confident,
        "threshold": None if threshold is None else _round(threshold),
        "target_precision": target_precision,
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }
