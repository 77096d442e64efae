"""Training a model for one target (category, priority, ...) and measuring it honestly.

Training postdesk's model:

1. Labels with fewer than `MIN_CLASS_EXAMPLES` tickets are left out (nothing can be
   learned or measured from them) and listed in the model's data summary.
2. The text is turned into TF-IDF features once; every candidate setting is then scored
   on held-out folds (macro-F1 of the SVM's decisions). The folds are stratified by label
   and keep near-duplicate tickets (translations, copies; `data.near_duplicate_groups`)
   in one fold, so a setting that memorises copies does not look good. The best setting
   wins; on a tie the first, most regularized one.
3. The winner's held-out decision values are turned into probabilities by temperature
   scaling, itself fitted fold by fold on the other folds, so every probability used to
   choose the confidence threshold comes from data neither the SVM nor the scaling saw.
4. The confidence threshold is the lowest at which held-out predictions reach the target
   precision (see `metrics.threshold_for_precision`).
5. The final model is refitted on everything.

The cross-validated numbers (`metadata["cv"]`) are what `model list` shows and what a
new model is compared on before it replaces the active one.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from joblib import Parallel, delayed, parallel_config  # type: ignore[import-untyped]
from numpy.typing import NDArray
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.base import BaseEstimator, ClassifierMixin  # type: ignore[import-untyped]
from sklearn.calibration import (  # type: ignore[import-untyped]
    CalibratedClassifierCV,
    _TemperatureScaling,
)
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.frozen import FrozenEstimator  # type: ignore[import-untyped]
from sklearn.metrics import f1_score  # type: ignore[import-untyped]
from sklearn.model_selection import StratifiedGroupKFold  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from postdesk.classify.data import MAX_GROUP_SHARE, LabelledData, near_duplicate_groups
from postdesk.classify.errors import TrainingDataError
from postdesk.classify.estimators import (
    BASELINE,
    POSTDESK,
    SUBJECT_BLOCKS,
    Recipe,
    baseline_pipeline,
    calibrated_svm,
    subject_weights,
    svm,
    ticket_features,
)
from postdesk.classify.metrics import evaluation, threshold_for_precision

log = logging.getLogger(__name__)

FORMAT = 1
FOLDS = 5
MIN_CLASS_EXAMPLES = FOLDS
C_GRID = (0.1, 0.3, 1.0, 3.0)
CLASS_WEIGHTS: tuple[str | None, ...] = ("balanced", None)
SUBJECT_WEIGHT_GRID = (0.5, 1.0)

# A threshold this high means only predictions rounded to certainty qualify. That is no
# region to trust when few held-out tickets reach it (a model sure of a handful), but it
# is one when a real share of them does: on well-separated labels temperature scaling
# rounds most probabilities to 1.0, and they are right. So a threshold at certainty is
# kept only when at least CERTAIN_SHARE of the held-out predictions are at it, stored just
# below NO_CONFIDENT_REGION (CERTAIN_THRESHOLD); otherwise the model has no confident region.
NO_CONFIDENT_REGION = 1.0 - 1e-6
CERTAIN_SHARE = 0.3
CERTAIN_THRESHOLD = NO_CONFIDENT_REGION - 1e-9

Progress = Callable[[str, int, int], None]
"""Called as (stage, done, total) while training; `done == total` ends a stage."""

Folds = list[tuple[NDArray[np.intp], NDArray[np.intp]]]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def default_jobs() -> int:
    """How many threads training uses: every core, up to four."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class TrainedModel:
    """A fitted pipeline and what is known about it (JSON-ready metadata)."""

    pipeline: Pipeline
    metadata: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.metadata["target"])

    @property
    def version(self) -> str | None:
        value = self.metadata.get("version")
        return str(value) if value else None

    @property
    def threshold(self) -> float | None:
        """The confidence from which predictions are applied; None when the model has no
        confident region (no threshold reached the target precision, or only a
        probability of 1.0 would, which is no region to trust)."""
        value = self.metadata.get("threshold")
        if value is None or float(value) >= NO_CONFIDENT_REGION:
            return None
        return float(value)

    @property
    def target_precision(self) -> float:
        return float(self.metadata.get("target_precision", 0.9))

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.metadata.get("recipe", {}))

    @property
    def cv_macro_f1(self) -> float:
        return float(self.metadata["cv"]["macro_f1"])

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]

    def predict(self, rows: NDArray[Any]) -> tuple[list[str], NDArray[np.float64]]:
        """(label, probability of that label) for each row of (subject, body)."""
        proba = self.pipeline.predict_proba(rows)
        best = proba.argmax(axis=1)
        labels = [str(label) for label in self.pipeline.classes_[best]]
        return labels, proba[np.arange(len(best)), best]

    def evaluate(self, data: LabelledData) -> dict[str, Any]:
        """Every evaluation number for this model on `data` (see metrics.evaluation)."""
        labels, confidence = self.predict(data.rows())
        threshold = self.threshold
        confident = confidence >= threshold if threshold is not None else None
        result = evaluation(
            data.labels,
            labels,
            confident,
            threshold=threshold,
            target_precision=self.target_precision,
        )
        return {"model": self.version, "target": self.target, **result}


def library_versions() -> dict[str, str]:
    """The versions a model was trained with (a model may not load under others)."""
    versions = {"python": platform.python_version()}
    for name in ("postdesk", "scikit-learn", "skops", "numpy", "scipy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


@contextmanager
def _quiet() -> Iterator[None]:
    # Convergence and small-class warnings are expected on real helpdesk data; the
    # numbers in the model's metadata are what tells whether it is any good.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        yield


# What the folds are; a model whose stored folds were of another kind (before
# "grouped-capped", "grouped" kept a templated set's giant chained group whole) is not
# compared by its stored numbers: its recipe is measured again on these folds.
SPLIT = "grouped-capped"
SPLIT_WORDS = (
    f"{FOLDS} folds stratified by label, near-duplicate tickets kept in one fold "
    f"(word TF-IDF cosine >= 0.5; a group of over {MAX_GROUP_SHARE:.0%} of the tickets "
    "split again by stricter similarity, exact copies never)"
)


def _folds(data: LabelledData, seed: int, k: int = FOLDS) -> Folds:
    """k folds by label, a group of near-duplicates always on one side (see
    data.near_duplicate_groups; templated tickets' giant chained group is split there
    first, so no fold trains on a sliver): what every held-out number is computed on."""
    groups = near_duplicate_groups(data)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    with _quiet():
        return [
            (np.asarray(tr, np.intp), np.asarray(te, np.intp))
            for tr, te in splitter.split(np.zeros(len(data)), data.y(), groups)
        ]


def _usable(data: LabelledData) -> tuple[LabelledData, dict[str, int]]:
    kept, left_out = data.without_rare_classes(MIN_CLASS_EXAMPLES)
    if len(set(kept.labels)) < 2:
        counts = ", ".join(f"{k}: {v}" for k, v in data.class_counts().items()) or "none"
        raise TrainingDataError(
            f"need at least two labels with {MIN_CLASS_EXAMPLES} or more examples each "
            f"(have {counts})"
        )
    return kept, left_out


class _Scores(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A stand-in classifier whose decision values are its input.

    Lets scikit-learn's own temperature scaling be fitted on decision values computed
    elsewhere (held-out folds), so training chooses its threshold on probabilities made
    exactly as the stored model makes them. Used only while training; never stored.
    """

    def __init__(self, classes: NDArray[Any] | None = None) -> None:
        self.classes = classes

    def fit(self, X: Any, y: Any = None) -> _Scores:
        self.classes_ = np.asarray(self.classes, dtype=object)
        return self

    def decision_function(self, X: Any) -> NDArray[np.float64]:
        scores = np.asarray(X, dtype=np.float64)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> NDArray[Any]:
        return _decide(np.asarray(X, dtype=np.float64), self.classes_)


def _decide(scores: NDArray[np.float64], classes: NDArray[Any]) -> NDArray[Any]:
    if scores.shape[1] == 1:
        return np.asarray(classes[(scores[:, 0] > 0).astype(int)])
    return np.asarray(classes[scores.argmax(axis=1)])


@dataclass
class _Features:
    """Ticket features computed once; the subject's weight applied on demand."""

    transformer: ColumnTransformer
    matrix: sparse.csr_matrix
    subject_columns: NDArray[np.intp]

    @classmethod
    def fit(cls, data: LabelledData) -> _Features:
        has_body = any(b.strip() for b in data.bodies)
        if not (data.has_subject or has_body):
            raise TrainingDataError("every ticket's text is empty; check the --text columns")
        transformer = ticket_features(rows=len(data), subject=data.has_subject, body=has_body)
        try:
            matrix = sparse.csr_matrix(transformer.fit_transform(data.rows()))
        except ValueError as exc:
            # TfidfVectorizer's "empty vocabulary": there is no text to learn from.
            raise TrainingDataError(f"cannot learn from this text ({exc})") from None
        columns: list[int] = []
        for name in SUBJECT_BLOCKS:
            span = transformer.output_indices_.get(name)
            if span is not None:
                columns.extend(range(span.start, span.stop))
        return cls(transformer, matrix, np.asarray(columns, dtype=np.intp))

    def weighted(self, weight: float) -> sparse.csr_matrix:
        if weight == 1.0 or self.subject_columns.size == 0:
            return self.matrix
        scale = np.ones(self.matrix.shape[1])
        scale[self.subject_columns] = weight
        return sparse.csr_matrix(self.matrix @ sparse.diags(scale))


def _fold_scores(
    X: sparse.csr_matrix,
    y: NDArray[Any],
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    recipe: Recipe,
) -> NDArray[np.float64]:
    with _quiet():
        model = svm(recipe).fit(X[train], y[train])
    scores = np.asarray(model.decision_function(X[test]), dtype=np.float64)
    return _full_width(scores.reshape(len(test), -1), model.classes_, np.unique(y))


def _full_width(
    scores: NDArray[np.float64], seen: NDArray[Any], classes: NDArray[Any]
) -> NDArray[np.float64]:
    """Decision values over all `classes` when a training fold lacked some (grouped folds
    can leave a rare label's few tickets all on one side): a missing label never wins."""
    if len(seen) == len(classes):
        return scores
    if scores.shape[1] == 1:  # two labels seen: one column, positive for the second
        scores = np.hstack([-scores, scores])
    full = np.full((scores.shape[0], len(classes)), scores.min() - 10.0)
    full[:, np.searchsorted(classes, seen)] = scores
    return full


def _held_out_scores(
    X_by_weight: dict[float, sparse.csr_matrix],
    y: NDArray[Any],
    folds: Folds,
    recipes: list[Recipe],
    *,
    n_jobs: int,
    progress: Progress,
    stage: str,
) -> list[NDArray[np.float64]]:
    """Held-out SVM decision values for every recipe, fold by fold, in threads."""
    width = 1 if len(set(y)) == 2 else len(set(y))
    out = [np.zeros((len(y), width)) for _ in recipes]
    tasks = [(r, f) for r in range(len(recipes)) for f in range(len(folds))]
    progress(stage, 0, len(tasks))
    # liblinear releases the GIL, so threads share the feature matrix without copying it.
    runner = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    results = runner(
        delayed(_fold_scores)(
            X_by_weight[recipes[r].subject_weight], y, folds[f][0], folds[f][1], recipes[r]
        )
        for r, f in tasks
    )
    for done, ((r, f), scores) in enumerate(zip(tasks, results, strict=True), start=1):
        out[r][folds[f][1]] = scores
        progress(stage, done, len(tasks))
    return out


def _macro_f1(y: NDArray[Any], predicted: NDArray[Any]) -> float:
    return float(f1_score(list(y), list(predicted), average="macro", zero_division=0))


def _calibrated_held_out(
    scores: NDArray[np.float64], y: NDArray[Any], classes: NDArray[Any], folds: Folds
) -> NDArray[np.float64]:
    """Held-out probabilities: temperature fitted on the other folds' decision values."""
    proba = np.zeros((len(y), len(classes)))
    passthrough = FrozenEstimator(_Scores(classes).fit(None))
    for train, test in folds:
        scaler = CalibratedClassifierCV(passthrough, method="temperature")
        scaler.fit(scores[train], y[train])
        proba[test] = scaler.predict_proba(scores[test])
    return proba


BALANCE = True
OFFSET_GRID = np.round(np.linspace(-0.6, 0.6, 25), 3)
OFFSET_ROUNDS = 2
# An offset must buy at least this much held-out macro-F1 to be kept (less is noise).
OFFSET_MIN_GAIN = 0.002


def class_offsets(
    scores: NDArray[np.float64], y: NDArray[Any], classes: NDArray[Any]
) -> NDArray[np.float64]:
    """Per-label offsets added to the SVM's decision values that raise held-out macro-F1.

    A linear model trained on imbalanced tickets leans to the big labels (even with
    balanced class weights, a small label's region is drawn where its few examples were
    seen); macro-F1 counts every label the same, so moving each label's boundary a little
    pays. Coordinate ascent over a small grid, label by label, `OFFSET_ROUNDS` times; an
    offset is kept only if it gains at least `OFFSET_MIN_GAIN`, and the smallest of equal
    gains wins. One column (two labels) gets one offset: a moved boundary.
    """
    offsets = np.zeros(scores.shape[1])
    best = _macro_f1(y, _decide(scores, classes))
    for _ in range(OFFSET_ROUNDS):
        changed = False
        for j in range(scores.shape[1]):
            keep = offsets[j]
            trial_best, trial_value = best, keep
            for value in sorted(OFFSET_GRID, key=abs):
                offsets[j] = value
                f1 = _macro_f1(y, _decide(scores + offsets, classes))
                if f1 > trial_best + OFFSET_MIN_GAIN:
                    trial_best, trial_value = f1, value
            offsets[j] = trial_value
            if trial_value != keep:
                best, changed = trial_best, True
        if not changed:
            break
    return offsets


def _postdesk_candidates(has_subject: bool) -> list[Recipe]:
    weight = SUBJECT_WEIGHT_GRID[0] if has_subject else 1.0
    return [
        Recipe(POSTDESK, C=c, class_weight=cw, subject_weight=weight)
        for cw in CLASS_WEIGHTS
        for c in C_GRID
    ]


def _tune(
    features: _Features,
    y: NDArray[Any],
    classes: NDArray[Any],
    folds: Folds,
    *,
    has_subject: bool,
    n_jobs: int,
    progress: Progress,
    fixed: Recipe | None = None,
) -> tuple[Recipe, NDArray[np.float64], list[dict[str, Any]]]:
    """The best recipe by held-out macro-F1, its held-out scores, and every trial
    (only `fixed`, when given: no tuning)."""
    candidates = _postdesk_candidates(has_subject)
    if fixed is not None:
        weight = fixed.subject_weight if has_subject else 1.0
        candidates = [Recipe(POSTDESK, fixed.C, fixed.class_weight, weight)]
    weights = {r.subject_weight for r in candidates} | set(SUBJECT_WEIGHT_GRID)
    X_by_weight = {w: features.weighted(w) for w in weights}
    all_scores = _held_out_scores(
        X_by_weight, y, folds, candidates, n_jobs=n_jobs, progress=progress, stage="tuning"
    )
    trials = [
        (r, s, _macro_f1(y, _decide(s, classes)))
        for r, s in zip(candidates, all_scores, strict=True)
    ]
    best = max(trials, key=lambda t: t[2])  # max() keeps the first of equal scores
    if has_subject and fixed is None:
        others = [
            Recipe(POSTDESK, C=best[0].C, class_weight=best[0].class_weight, subject_weight=w)
            for w in SUBJECT_WEIGHT_GRID
            if w != best[0].subject_weight
        ]
        more = _held_out_scores(
            X_by_weight, y, folds, others, n_jobs=n_jobs, progress=progress, stage="subject weight"
        )
        extra = [
            (r, s, _macro_f1(y, _decide(s, classes))) for r, s in zip(others, more, strict=True)
        ]
        trials += extra
        best = max([best, *extra], key=lambda t: t[2])
    report = [{**r.to_dict(), "macro_f1": round(f, 4)} for r, _, f in trials]
    return best[0], best[1], report


def _metadata(
    *,
    target: str,
    recipe: Recipe,
    classes: NDArray[Any],
    threshold: float | None,
    target_precision: float,
    cv: dict[str, Any],
    data: LabelledData,
    left_out: dict[str, int],
    seed: int,
    seconds: float,
    tuning: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    summary = data.summary()
    summary["left_out_classes"] = left_out
    return {
        "format": FORMAT,
        "version": None,
        "target": target,
        "recipe": recipe.to_dict(),
        "classes": [str(c) for c in classes],
        "threshold": threshold,
        "target_precision": target_precision,
        "cv": {
            **cv,
            "folds": FOLDS,
            "seed": seed,
            "split": SPLIT_WORDS,
            "split_kind": SPLIT,
            "tuning": tuning or [],
        },
        "data": summary,
        "versions": library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_seconds": round(seconds, 2),
    }


def _threshold_and_cv(
    y: NDArray[Any], proba: NDArray[np.float64], classes: NDArray[Any], target_precision: float
) -> tuple[float | None, dict[str, Any]]:
    predicted = classes[proba.argmax(axis=1)]
    confidence = proba.max(axis=1)
    threshold = threshold_for_precision(confidence, predicted == y, target_precision)
    if threshold is not None and threshold >= NO_CONFIDENT_REGION:
        certain = float(np.mean(confidence >= threshold))
        threshold = CERTAIN_THRESHOLD if certain >= CERTAIN_SHARE else None
    confident = confidence >= threshold if threshold is not None else None
    cv = evaluation(
        list(y), list(predicted), confident, threshold=threshold, target_precision=target_precision
    )
    return threshold, cv


def train_model(
    data: LabelledData,
    *,
    target: str,
    baseline: bool = False,
    target_precision: float = 0.9,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: Progress | None = None,
    recipe: Recipe | None = None,
) -> TrainedModel:
    """Train postdesk's model (or the plain baseline) for `target` on `data`.

    With `recipe` (a postdesk recipe), its settings are used as they are instead of being
    tuned: how an older model's recipe is refitted on new data to compare it fairly.
    """
    fixed = recipe if recipe is not None and recipe.kind == POSTDESK else None
    baseline = baseline or (recipe is not None and recipe.kind == BASELINE)
    report = progress or _no_progress
    jobs = n_jobs or default_jobs()
    started = time.perf_counter()
    kept, left_out = _usable(data)
    y = kept.y()
    folds = _folds(kept, seed)
    if baseline:
        proba, classes = _baseline_held_out(kept, folds, n_jobs=jobs, progress=report)
        threshold, cv = _threshold_and_cv(y, proba, classes, target_precision)
        report("fitting", 0, 1)
        with _quiet():
            pipeline = baseline_pipeline().fit(kept.rows(), y)
        report("fitting", 1, 1)
        recipe = Recipe(BASELINE)
        tuning = None
        offsets = np.zeros(0)
    else:
        report("features", 0, 1)
        features = _Features.fit(kept)
        report("features", 1, 1)
        classes = np.asarray(sorted(set(kept.labels)), dtype=object)
        recipe, scores, tuning = _tune(
            features,
            y,
            classes,
            folds,
            has_subject=kept.has_subject,
            n_jobs=jobs,
            progress=report,
            fixed=fixed,
        )
        offsets = class_offsets(scores, y, classes) if BALANCE else np.zeros(scores.shape[1])
        scores = scores + offsets
        proba = _calibrated_held_out(scores, y, classes, folds)
        threshold, cv = _threshold_and_cv(y, proba, classes, target_precision)
        report("fitting", 0, 1)
        pipeline = _fit_final(features, recipe, y, folds, n_jobs=jobs)
        _shift(pipeline, offsets, scores, y, classes)
        report("fitting", 1, 1)
    seconds = time.perf_counter() - started
    meta = _metadata(
        target=target,
        recipe=recipe,
        classes=classes,
        threshold=threshold,
        target_precision=target_precision,
        cv=cv,
        data=kept,
        left_out=left_out,
        seed=seed,
        seconds=seconds,
        tuning=tuning,
    )
    meta["data"]["source"] = data.source
    if not baseline and offsets.any():
        names = [str(c) for c in classes] if offsets.size == len(classes) else [str(classes[1])]
        meta["cv"]["label_offsets"] = {
            n: round(float(o), 3) for n, o in zip(names, offsets, strict=True)
        }
    log.info(
        "trained %s model for %s on %d tickets in %.1fs: CV macro-F1 %.3f, coverage %.2f",
        recipe.kind,
        target,
        len(kept),
        seconds,
        cv["macro_f1"],
        cv["coverage"],
    )
    return TrainedModel(pipeline, meta)


def _shift(
    pipeline: Pipeline,
    offsets: NDArray[np.float64],
    scores: NDArray[np.float64],
    y: NDArray[Any],
    classes: NDArray[Any],
) -> None:
    """Put the label offsets into the final SVM's intercepts (so the stored model, and
    the fast scorer reading it, decide as tuned), and refit the temperature on the
    shifted held-out decision values the threshold was chosen on."""
    if not offsets.any():
        return
    calibrated = pipeline.named_steps["classifier"].calibrated_classifiers_[0]
    calibrated.estimator.intercept_ = calibrated.estimator.intercept_ + offsets
    encoded = np.searchsorted(classes, y)
    scaling = _TemperatureScaling().fit(scores[:, 0] if scores.shape[1] == 1 else scores, encoded)
    calibrated.calibrators[0] = scaling


def _fit_final(
    features: _Features, recipe: Recipe, y: NDArray[Any], folds: Folds, *, n_jobs: int
) -> Pipeline:
    # The vectorizers are already fitted on all the data; the subject's weight is a
    # parameter ColumnTransformer applies at transform time, so setting it now makes the
    # pipeline compute exactly the matrix the classifier is fitted on here.
    transformer = features.transformer
    if features.subject_columns.size:
        transformer.set_params(transformer_weights=subject_weights(recipe.subject_weight))
    # The temperature is fitted on the same grouped folds as everything else (random
    # folds would fit it on copies' scores and make the model overconfident), unless a
    # fold lacks a label, which scikit-learn's calibration cannot take.
    every_label = all(len(np.unique(y[train])) == len(np.unique(y)) for train, _ in folds)
    classifier = calibrated_svm(recipe, FOLDS)
    if every_label:
        classifier.set_params(cv=folds)
    with _quiet(), parallel_config(backend="threading", n_jobs=n_jobs):
        classifier.fit(features.weighted(recipe.subject_weight), y)
    classifier.set_params(cv=FOLDS)  # the stored model keeps no row indices
    return Pipeline([("features", transformer), ("classifier", classifier)])


def _baseline_fold(
    rows: NDArray[Any], y: NDArray[Any], train: NDArray[np.intp], test: NDArray[np.intp]
) -> tuple[NDArray[np.float64], NDArray[Any]]:
    with _quiet():
        model = baseline_pipeline().fit(rows[train], y[train])
    return model.predict_proba(rows[test]), model.classes_


def _baseline_held_out(
    data: LabelledData, folds: Folds, *, n_jobs: int, progress: Progress
) -> tuple[NDArray[np.float64], NDArray[Any]]:
    rows = data.rows()
    y = data.y()
    classes = np.asarray(sorted(set(data.labels)), dtype=object)
    proba = np.zeros((len(y), len(classes)))
    progress("cross-validating", 0, len(folds))
    runner = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    results = runner(delayed(_baseline_fold)(rows, y, tr, te) for tr, te in folds)
    for done, ((_, test), (fold_proba, fold_classes)) in enumerate(
        zip(folds, results, strict=True), start=1
    ):
        columns = np.searchsorted(classes, fold_classes)
        proba[np.ix_(test, columns)] = fold_proba
        progress("cross-validating", done, len(folds))
    return proba, classes


def cv_macro_f1(
    recipe: Recipe,
    data: LabelledData,
    *,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> float:
    """Cross-validated macro-F1 of `recipe` (no tuning) on `data`, folds as in training.

    This is how a new model is compared with the active one "on the same data".
    """
    report = progress or _no_progress
    jobs = n_jobs or default_jobs()
    kept, _ = _usable(data)
    y = kept.y()
    folds = _folds(kept, seed)
    classes = np.asarray(sorted(set(kept.labels)), dtype=object)
    if recipe.kind == BASELINE:
        proba, classes = _baseline_held_out(kept, folds, n_jobs=jobs, progress=report)
        return _macro_f1(y, classes[proba.argmax(axis=1)])
    features = _Features.fit(kept)
    weight = recipe.subject_weight if kept.has_subject else 1.0
    (scores,) = _held_out_scores(
        {weight: features.weighted(weight)},
        y,
        folds,
        [Recipe(POSTDESK, recipe.C, recipe.class_weight, weight)],
        n_jobs=jobs,
        progress=report,
        stage="checking the active model",
    )
    if BALANCE:  # as training does, so both models are measured alike
        scores = scores + class_offsets(scores, y, classes)
    return _macro_f1(y, _decide(scores, classes))


def cross_evaluate(
    data: LabelledData,
    *,
    target: str,
    folds: int = 5,
    baseline: bool = False,
    target_precision: float = 0.9,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """k-fold cross-validation of the whole training procedure on `data`.

    Each fold trains a model (tuning and threshold included) on the other folds and
    predicts its own; the numbers are computed on all predictions pooled, each judged
    confident by the threshold of the model that made it.
    """
    if folds < 2:
        raise TrainingDataError("cross-validation needs at least 2 folds")
    y = data.y()
    predicted = np.empty(len(y), dtype=object)
    confident = np.zeros(len(y), dtype=bool)
    per_fold: list[dict[str, Any]] = []
    splits = _folds(data, seed, folds)
    for k, (train, test) in enumerate(splits, start=1):

        def fold_progress(stage: str, done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress(f"fold {k}/{folds}: {stage}", done, total)

        model = train_model(
            data.subset(train),
            target=target,
            baseline=baseline,
            target_precision=target_precision,
            seed=seed,
            n_jobs=n_jobs,
            progress=fold_progress,
        )
        labels, confidence = model.predict(data.subset(test).rows())
        predicted[test] = labels
        if model.threshold is not None:
            confident[test] = confidence >= model.threshold
        fold = evaluation(
            [data.labels[i] for i in test],
            labels,
            confident[test],
            threshold=model.threshold,
            target_precision=target_precision,
        )
        per_fold.append(
            {
                "macro_f1": fold["macro_f1"],
                "accuracy": fold["accuracy"],
                "coverage": fold["coverage"],
                "threshold": fold["threshold"],
                "recipe": model.recipe.to_dict(),
                "training_seconds": model.metadata["training_seconds"],
            }
        )
    pooled = evaluation(
        list(data.labels),
        list(predicted),
        confident,
        threshold=None,
        target_precision=target_precision,
    )
    macro = [f["macro_f1"] for f in per_fold]
    return {
        "model": BASELINE if baseline else POSTDESK,
        "target": target,
        **pooled,
        "cv_folds": folds,
        "fold_macro_f1_mean": round(float(np.mean(macro)), 4),
        "fold_macro_f1_std": round(float(np.std(macro)), 4),
        "folds": per_fold,
    }
