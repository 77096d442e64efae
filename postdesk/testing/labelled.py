"""Synthetic labelled tickets for triage training tests, and the CSV files they come in.

Each label has a vocabulary; a ticket's subject and body are mostly drawn from its own
label's words, so a model can learn them in well under a second.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from postdesk.classify.data import LabelledData

CATEGORIES = {
    "billing": "invoice charge refund payment card bill paid money receipt vat",
    "technical": "error crash login password server bug broken timeout install update",
    "sales": "price quote demo plan upgrade buy offer discount licence trial",
}
PRIORITIES = {
    "low": "whenever someday minor curious suggestion wondering idea later cosmetic typo",
    "normal": "soon request change question configure setting report export import page",
    "high": "outage production blocked stopped critical cannot down failing halted lost",
}
FILLER = [
    "hello",
    "please",
    "thanks",
    "regards",
    "team",
    "account",
    "question",
    "help",
    "issue",
    "today",
]


def synthetic(
    vocab: dict[str, str], n: int = 240, *, noise: float = 0.05, seed: int = 3
) -> LabelledData:
    """Tickets whose label is mostly told by its words; `noise` of them by another's."""
    rng = random.Random(seed)
    labels = sorted(vocab)
    subjects, bodies, out = [], [], []
    for i in range(n):
        label = labels[i % len(labels)]
        words = vocab[label if rng.random() > noise else rng.choice(labels)].split()
        other = vocab[rng.choice(labels)].split()
        subjects.append(" ".join(rng.sample(words, 2)))
        bodies.append(
            " ".join(rng.choices(words, k=4) + rng.choices(FILLER, k=4) + rng.choices(other, k=2))
        )
        out.append(label)
    return LabelledData(tuple(subjects), tuple(bodies), tuple(out), {"kind": "test"})


def write_csv(path: Path, data: LabelledData, label: str = "category", sep: str = ",") -> Path:
    """Write `data` as a CSV with columns title, body and `label`."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=sep)
        writer.writerow(["title", "body", label])
        writer.writerows(zip(data.subjects, data.bodies, data.labels, strict=True))
    return path
