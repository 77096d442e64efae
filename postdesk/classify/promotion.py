"""Adding a trained model to the store and deciding whether it replaces the active one;
retraining from the database, on demand or on a schedule.

A new model becomes active by itself only when all of these hold:

- its coverage (share of held-out tickets whose prediction reaches the threshold for the
  target precision) is at least `[triage] min_coverage` (default 0.3): a model that is
  never sure sends every new ticket to needs-triage;
- it predicts the same labels as the active model, or more of them when the operator
  agreed with `--accept-labels` (a model trained on unrelated data, or one that lost a
  label, never replaces the live one by itself);
- its held-out macro-F1 is not worse than the active model's on the same data.

Otherwise it is stored, the reason is given, and `postdesk model promote VERSION`
activates it on purpose. "The active model's on the same data" is the active
model's recipe (its tuned settings) cross-validated on the new model's training data with
the same folds; when both were trained on identical data with the same folds, the active
model's recorded score is used as is. When the tickets have times (always, from the
database; from a CSV with `--time COL`) and there are at least `MIN_TIME_ORDERED`, the
comparison is time-ordered instead: both models' recipes are trained on the older 80%
and scored on the newest 20%, as a team deploys a model. `force` skips the comparison.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from postdesk.classify.data import LabelledData, time_ordered_split
from postdesk.classify.errors import ModelError, TrainingDataError
from postdesk.classify.estimators import Recipe
from postdesk.classify.labels import training_data_from_db
from postdesk.classify.store import ModelStore
from postdesk.classify.training import Progress, TrainedModel, cv_macro_f1, train_model
from postdesk.classify.triage import TICKET_TARGETS
from postdesk.config import Settings
from postdesk.files import private_directory, write_atomically
from postdesk.models.db import Database

log = logging.getLogger(__name__)

RETRAIN_STATE = "retrain.json"
DEFAULT_MIN_COVERAGE = 0.3
# Scores are rounded to 4 places in metadata; equal within that is "not worse".
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Registration:
    """A model added to the store, and whether (and why) it became active."""

    version: str
    target: str
    activated: bool
    reason: str
    previous: str | None
    score: float
    active_score: float | None = None


def register_model(
    store: ModelStore,
    model: TrainedModel,
    data: LabelledData,
    *,
    force: bool = False,
    accept_labels: bool = False,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> Registration:
    """Store `model` (trained on `data`) and make it active if it is safe to (see
    `activation_problem`); `force` activates it whatever it is."""
    version = store.add(model)
    target = model.target
    score = model.cv_macro_f1
    current = store.active(target)
    if force:
        store.promote(version)
        return Registration(version, target, True, "forced", current, score)
    problem = _coverage_problem(model, min_coverage)
    if problem is None and current is not None:
        problem = _label_problem(model, store.metadata(current), current, accept_labels)
    if problem is not None:
        return Registration(
            version, target, False, _kept(problem, current, version), current, score
        )
    if current is None:
        store.promote(version)
        return Registration(version, target, True, f"first {target} model", None, score)
    active = store.metadata(current)
    split = "the same split"
    timed = _time_ordered_scores(model, active, data, n_jobs=n_jobs, progress=progress)
    if timed is not None:
        score, active_score, split = timed
    else:
        active_score = _active_score(active, model, data, n_jobs=n_jobs, progress=progress)
    if score + TOLERANCE >= active_score:
        store.promote(version)
        reason = (
            f"held-out macro-F1 {score:.4f} is not worse than {current}'s {active_score:.4f} "
            f"on {split}"
        )
        return Registration(version, target, True, reason, current, score, active_score)
    problem = (
        f"held-out macro-F1 {score:.4f} is worse than {current}'s {active_score:.4f} on {split}"
    )
    return Registration(
        version, target, False, _kept(problem, current, version), current, score, active_score
    )


def _kept(problem: str, current: str | None, version: str) -> str:
    stays = f"{current} stays active" if current else "no model is active for it"
    return (
        f"{problem}; {stays} (`postdesk model promote {version}` activates it on purpose, "
        "as does training with --force)"
    )


def _coverage_problem(model: TrainedModel, min_coverage: float) -> str | None:
    """Why a model that labels too few tickets by itself must not go live, or None.

    Below the floor most new tickets would fall to needs-triage: worse for a team than
    the model it replaces, or than no model.
    """
    coverage = float(model.metadata["cv"].get("coverage", 0.0))
    if coverage + TOLERANCE >= min_coverage:
        return None
    if model.threshold is None:
        return (
            f"it has no confident region (no threshold reaches precision "
            f"{model.target_precision}), so it would send every ticket to needs-triage"
        )
    return (
        f"its coverage at precision {model.target_precision} is {coverage:.3f}, below the "
        f"floor {min_coverage:g} ([triage] min_coverage)"
    )


def _label_problem(
    model: TrainedModel, active: dict[str, Any], current: str, accept_labels: bool
) -> str | None:
    """Why a model whose labels differ from the active one's must not replace it silently."""
    classes = active.get("classes")
    old = {str(c) for c in classes} if isinstance(classes, list) else set()
    new = set(model.classes)
    if not old or new == old:
        return None
    missing, added = sorted(old - new), sorted(new - old)
    if not missing and accept_labels:
        return None
    parts = []
    if missing:
        parts.append(f"it cannot predict {_names(missing)}, which {current} predicts")
    if added:
        parts.append(f"it adds {_names(added)}")
    hint = "" if missing else " (train with --accept-labels to agree to the new labels)"
    return "its labels differ from the active model's: " + "; ".join(parts) + hint


def _names(labels: list[str]) -> str:
    shown = ", ".join(repr(label) for label in labels[:8])
    return shown + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")


def _active_score(
    active: dict[str, object],
    model: TrainedModel,
    data: LabelledData,
    *,
    n_jobs: int | None,
    progress: Progress | None,
) -> float:
    new_cv = model.metadata["cv"]
    old_cv = active.get("cv")
    old_data = active.get("data")
    same_data = (
        isinstance(old_cv, dict)
        and isinstance(old_data, dict)
        and old_data.get("fingerprint") == model.metadata["data"]["fingerprint"]
        and old_cv.get("seed") == new_cv["seed"]
        and old_cv.get("folds") == new_cv["folds"]
        and old_cv.get("split_kind") == new_cv.get("split_kind")
    )
    if same_data and isinstance(old_cv, dict):
        return float(old_cv["macro_f1"])
    recipe_data = active.get("recipe")
    recipe = Recipe.from_dict(recipe_data if isinstance(recipe_data, dict) else {})
    return cv_macro_f1(recipe, data, seed=int(new_cv["seed"]), n_jobs=n_jobs, progress=progress)


# The share of the newest tickets the time-ordered promotion check holds out, and the
# fewest tickets for which it is tried (below, the grouped folds are all there is).
TIME_HOLDOUT = 0.2
MIN_TIME_ORDERED = 50


def _time_ordered_scores(
    model: TrainedModel,
    active: dict[str, Any],
    data: LabelledData,
    *,
    n_jobs: int | None,
    progress: Progress | None,
) -> tuple[float, float, str] | None:
    """(new, active, split in words): macro-F1 of the new model's and the active model's
    recipes, each trained on the older tickets and scored on the newest `TIME_HOLDOUT`,
    as a team deploys a model; None when the tickets have no times or are too few.

    Both recipes are refitted on the same older part (neither has seen the newest
    tickets; the new recipe's settings were tuned on grouped folds of all of them, which
    only chose among a few regularization settings).
    """
    if data.times is None or len(data) < MIN_TIME_ORDERED:
        return None
    train, test = time_ordered_split(data, TIME_HOLDOUT)
    older, newer = data.subset(train), data.subset(test)
    recipe_data = active.get("recipe")
    old_recipe = Recipe.from_dict(recipe_data if isinstance(recipe_data, dict) else {})
    seed = int(model.metadata["cv"].get("seed", 0))
    scores = []
    try:
        for recipe in (model.recipe, old_recipe):
            refitted = train_model(
                older,
                target=model.target,
                target_precision=model.target_precision,
                seed=seed,
                n_jobs=n_jobs,
                progress=progress,
                recipe=recipe,
            )
            scores.append(float(refitted.evaluate(newer)["macro_f1"]))
    except TrainingDataError as exc:  # e.g. the older part has a single label
        log.info("no time-ordered check (%s); using the grouped folds", exc)
        return None
    words = (
        f"the newest {len(newer)} tickets, both trained on the {len(older)} older ones "
        "(time-ordered split)"
    )
    return scores[0], scores[1], words


@dataclass(frozen=True)
class RetrainOutcome:
    """What retraining one target from the database did (a registration or why not)."""

    target: str
    registration: Registration | None = None
    skipped: str | None = None


def retrain_from_db(
    settings: Settings,
    db: Database,
    *,
    targets: tuple[str, ...] = TICKET_TARGETS,
    force: bool = False,
    accept_labels: bool = False,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> list[RetrainOutcome]:
    """Train each target on the tickets people labelled, and register the new models.

    A target without enough labelled tickets is skipped with the reason.
    """
    store = ModelStore(settings.data_dir)
    outcomes: list[RetrainOutcome] = []
    for target in targets:
        try:
            data = training_data_from_db(db, target)
            model = train_model(
                data,
                target=target,
                target_precision=settings.triage.target_precision,
                seed=seed,
                n_jobs=n_jobs,
                progress=progress,
            )
        except TrainingDataError as exc:
            outcomes.append(RetrainOutcome(target, skipped=str(exc)))
            continue
        registration = register_model(
            store,
            model,
            data,
            force=force,
            accept_labels=accept_labels,
            min_coverage=settings.triage.min_coverage,
            n_jobs=n_jobs,
            progress=progress,
        )
        log.info("retrained %s: %s (%s)", target, registration.version, registration.reason)
        outcomes.append(RetrainOutcome(target, registration))
    _write_last_retrain(store, datetime.now(UTC))
    return outcomes


def _state_path(store: ModelStore) -> str:
    return str(store.root / RETRAIN_STATE)


def _write_last_retrain(store: ModelStore, when: datetime) -> None:
    try:
        private_directory(store.root)
        write_atomically(
            Path(_state_path(store)), json.dumps({"last_retrain": when.isoformat()}).encode()
        )
    except OSError as exc:
        raise ModelError(f"cannot write {_state_path(store)}: {exc.strerror or exc}") from None


def last_retrain(store: ModelStore) -> datetime | None:
    """When `retrain_from_db` last ran on this store (None if never)."""
    try:
        with open(_state_path(store), encoding="utf-8") as handle:
            raw = json.load(handle)
        return datetime.fromisoformat(str(raw["last_retrain"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def retrain_due(settings: Settings, now: datetime | None = None) -> bool:
    """Whether scheduled retraining (`[triage] retrain_interval_hours`) should run now."""
    hours = settings.triage.retrain_interval_hours
    if hours <= 0:
        return False
    last = last_retrain(ModelStore(settings.data_dir))
    if last is None:
        return True
    return (now or datetime.now(UTC)) - last >= timedelta(hours=hours)
