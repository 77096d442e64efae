"""Triage: categorize and prioritize tickets with models trained on the team's own history.

- `text`, `data`: how ticket text is prepared; labelled data from CSV, splits.
- `estimators`, `training`, `metrics`: the scikit-learn pipelines, tuning and calibration,
  the confidence threshold for a target precision, and the numbers reported.
- `store`, `promotion`: skops model files under data_dir/models/, which one is active,
  and whether a new model replaces it; retraining from the database.
- `rules`, `scorer`, `triage`: the run-time side. `Triage.load(settings)` once, then
  `triage.classify(subject, body, sender_email)` per new ticket.
- `labels`: storing a result on a ticket (`record_triage`), people's labels
  (`record_label`), and the labelled tickets the next model learns from; both write
  through the ticket lifecycle (postdesk/tickets/lifecycle.py).
- `step`: triage as a step of the mail pipeline, with the active models loaded once.
- `cli`: `postdesk model ...`.

The names below are imported on first use, so importing this package (as the CLI does
for every command) does not load scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from postdesk.classify.labels import record_label, record_triage
    from postdesk.classify.promotion import retrain_due, retrain_from_db
    from postdesk.classify.triage import Prediction, Triage, TriageResult

_EXPORTS = {
    "Prediction": "postdesk.classify.triage",
    "Triage": "postdesk.classify.triage",
    "TriageResult": "postdesk.classify.triage",
    "record_label": "postdesk.classify.labels",
    "record_triage": "postdesk.classify.labels",
    "retrain_due": "postdesk.classify.promotion",
    "retrain_from_db": "postdesk.classify.promotion",
}

__all__ = [
    "Prediction",
    "Triage",
    "TriageResult",
    "record_label",
    "record_triage",
    "retrain_due",
    "retrain_from_db",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'postdesk.classify' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
