"""Adding a trained model to the store and deciding whether it replaces the active one;
retraining from the database, on demand or on a schedule.

A new model becomes active only if its cross-validated macro-F1 is not worse than the
active model's on the same data. "The active model's on the same data" is the active
model's recipe (its tuned settings) cross-validated on the new model's training data with
the same folds; when both were trained on identical data with the same folds, the active
model's recorded score is used as is. `force` skips the comparison.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from postdesk.classify.data import LabelledData
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
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> Registration:
    """Store `model` (trained on `data`) and make it active if it is not worse."""
    version = store.add(model)
    target = model.target
    score = model.cv_macro_f1
    current = store.active(target)
    if current is None:
        store.promote(version)
        return Registration(version, target, True, f"first {target} model", None, score)
    if force:
        store.promote(version)
        return Registration(version, target, True, "forced", current, score)
    active = store.metadata(current)
    active_score = _active_score(active, model, data, n_jobs=n_jobs, progress=progress)
    if score + TOLERANCE >= active_score:
        store.promote(version)
        reason = f"CV macro-F1 {score:.4f} is not worse than {current}'s {active_score:.4f}"
        return Registration(version, target, True, reason, current, score, active_score)
    reason = (
        f"CV macro-F1 {score:.4f} is worse than {current}'s {active_score:.4f} on the same "
        f"data; {current} stays active (promote {version} by hand, or train with --force)"
    )
    return Registration(version, target, False, reason, current, score, active_score)


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
    )
    if same_data and isinstance(old_cv, dict):
        return float(old_cv["macro_f1"])
    recipe_data = active.get("recipe")
    recipe = Recipe.from_dict(recipe_data if isinstance(recipe_data, dict) else {})
    return cv_macro_f1(recipe, data, seed=int(new_cv["seed"]), n_jobs=n_jobs, progress=progress)


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
            store, model, data, force=force, n_jobs=n_jobs, progress=progress
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
