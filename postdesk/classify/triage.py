"""Triage at run time: categorize and prioritize one new ticket, or say it needs a person.

`Triage.load(settings)` reads the active models once (category, priority, and impact and
urgency when the config has a matrix); the mail pipeline keeps the object and calls
`classify()` for every new ticket, which takes about a millisecond. `is_current()` tells
a long-running process that a model was promoted or rolled back since, so it can load
again.

A prediction below its model's confidence threshold is not applied: the label stays
empty, the ticket is marked needs-triage, and the guess is kept only in the event log.
The priority is the highest of what the rules (VIP sender, keywords), the impact x
urgency matrix and a confident priority model say; `priority_source` names which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from postdesk.classify.errors import ModelError
from postdesk.classify.rules import PriorityRules, RuleHit
from postdesk.classify.scorer import AnalysisCache, LinearScorer, share_vocabularies
from postdesk.classify.store import ModelStore
from postdesk.classify.text import ticket_matrix
from postdesk.classify.training import TrainedModel
from postdesk.config import Settings
from postdesk.tickets.lifecycle import CATEGORY, LABEL_TARGETS, PRIORITY

log = logging.getLogger(__name__)

IMPACT = "impact"
URGENCY = "urgency"
# A ticket's labels and "a person set it" are the lifecycle's; a model is one more source.
TICKET_TARGETS = LABEL_TARGETS
MODEL_SOURCE = "model"


@dataclass(frozen=True)
class Prediction:
    """What one model said about a ticket, whether or not it was confident enough."""

    target: str
    label: str
    probability: float
    model: str
    confident: bool


@dataclass(frozen=True)
class TriageResult:
    """What triage decided for one ticket (see `record_triage` for how it is stored).

    `category`/`priority` are None when nothing confident set them. `*_probability` and
    `*_model` describe the model behind the value, or its unsure guess when the value is
    None; `priority_source` is "model", "rule:<which>" or "matrix:<cell>".
    """

    category: str | None = None
    category_probability: float | None = None
    category_model: str | None = None
    priority: str | None = None
    priority_probability: float | None = None
    priority_model: str | None = None
    priority_source: str | None = None
    needs_triage: bool = False
    predictions: tuple[Prediction, ...] = field(default=())

    @property
    def model_version(self) -> str | None:
        """The versions of the models consulted, comma-separated (None if none was)."""
        versions = list(dict.fromkeys(p.model for p in self.predictions))
        return ",".join(versions) if versions else None

    def prediction(self, target: str) -> Prediction | None:
        return next((p for p in self.predictions if p.target == target), None)


class LoadedModel:
    """An active model ready to predict one ticket at a time."""

    def __init__(self, model: TrainedModel, version: str) -> None:
        self.version = version
        self.target = model.target
        self.threshold = model.threshold
        self.pipeline = model.pipeline
        scorer = LinearScorer.from_pipeline(model.pipeline)
        if scorer is not None and not scorer.agrees_with(model.pipeline):
            log.warning(
                "model %s: fast scorer disagrees with the pipeline; using the pipeline", version
            )
            scorer = None
        self.scorer = scorer
        self.classes = [str(c) for c in model.pipeline.classes_]

    def predict(self, subject: str, body: str, cache: AnalysisCache | None = None) -> Prediction:
        if self.scorer is not None:
            proba = self.scorer.proba(subject, body, cache)
        else:
            proba = self.pipeline.predict_proba(ticket_matrix([subject], [body]))[0]
        best = int(np.argmax(proba))
        probability = float(proba[best])
        confident = self.threshold is not None and probability >= self.threshold
        return Prediction(self.target, self.classes[best], probability, self.version, confident)


@dataclass(frozen=True)
class _Candidate:
    priority: str
    source: str
    probability: float | None = None
    model: str | None = None


class Triage:
    """The active models and the priority rules, loaded once and used for every ticket."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        rules: PriorityRules,
        store: ModelStore | None = None,
    ) -> None:
        self.models = models
        self.rules = rules
        self.store = store
        share_vocabularies([m.scorer for m in models.values() if m.scorer is not None])

    @classmethod
    def load(cls, settings: Settings) -> Triage | None:
        """Triage with the active models of `settings.data_dir`; None when there is nothing
        to do (no active model and no priority rule).

        A model file that cannot be loaded is a ModelError (roll back or retrain).
        """
        store = ModelStore(settings.data_dir)
        rules = PriorityRules(settings.triage)
        wanted = list(TICKET_TARGETS)
        if rules.matrix:
            wanted += [IMPACT, URGENCY]
        active = store.active_versions()
        models: dict[str, LoadedModel] = {}
        for target in wanted:
            version = active.get(target)
            if version is None:
                continue
            model = store.load(version)
            if model.target != target:
                raise ModelError(f"{version} was trained for {model.target!r}, not {target!r}")
            models[target] = LoadedModel(model, version)
            log.info("triage: %s model %s loaded (threshold %s)", target, version, model.threshold)
        if not models and not rules.configured:
            return None
        return cls(models, rules, store)

    @property
    def versions(self) -> dict[str, str]:
        """The version of each loaded model, by target."""
        return {target: m.version for target, m in self.models.items()}

    def is_current(self) -> bool:
        """Whether the loaded models are still the active ones (False after a promote)."""
        if self.store is None:
            return True
        wanted = set(TICKET_TARGETS) | ({IMPACT, URGENCY} if self.rules.matrix else set())
        active = {t: v for t, v in self.store.active_versions().items() if t in wanted}
        return active == self.versions

    def classify(self, subject: str, body: str, sender_email: str) -> TriageResult:
        """Category and priority for a new ticket.

        `body` is the visible text of the first customer message (no quoted history, no
        signature); `sender_email` is the customer's address (for the VIP rules).
        """
        cache: AnalysisCache = {}
        predictions = {t: m.predict(subject, body, cache) for t, m in self.models.items()}
        values: dict[str, Any] = {}
        needs_triage = False

        category = predictions.get(CATEGORY)
        if category is not None:
            values["category"] = category.label if category.confident else None
            values["category_probability"] = category.probability
            values["category_model"] = category.model
            needs_triage |= not category.confident

        candidates: list[_Candidate] = [
            _Candidate(h.priority, h.source) for h in self.rules.hits(subject, body, sender_email)
        ]
        unresolved = False
        impact, urgency = predictions.get(IMPACT), predictions.get(URGENCY)
        if impact is not None and urgency is not None:
            if impact.confident and urgency.confident:
                cell: RuleHit | None = self.rules.from_matrix(impact.label, urgency.label)
                if cell is not None:
                    candidates.append(
                        _Candidate(
                            cell.priority,
                            cell.source,
                            min(impact.probability, urgency.probability),
                            f"{impact.model},{urgency.model}",
                        )
                    )
            else:
                unresolved = True
        priority = predictions.get(PRIORITY)
        if priority is not None:
            if priority.confident:
                candidates.append(
                    _Candidate(priority.label, MODEL_SOURCE, priority.probability, priority.model)
                )
            else:
                unresolved = True
        if candidates:
            best = candidates[0]
            for candidate in candidates[1:]:
                # Strictly higher only: on a tie the rule (listed first) is named.
                if self.rules.rank(candidate.priority) > self.rules.rank(best.priority):
                    best = candidate
            values["priority"] = best.priority
            values["priority_source"] = best.source
            values["priority_probability"] = best.probability
            values["priority_model"] = best.model
        elif priority is not None:
            values["priority_probability"] = priority.probability
            values["priority_model"] = priority.model
        needs_triage |= not candidates and unresolved
        return TriageResult(
            **values,
            needs_triage=needs_triage,
            predictions=tuple(predictions.values()),
        )
