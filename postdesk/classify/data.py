"""Labelled tickets to learn from or to evaluate on: read from a CSV export, split, summarized.

A ticket is its subject and its body (the visible text of the first customer message).
From a CSV, the first `--text` column is the subject and the others, joined, the body;
a single text column is the body alone.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from postdesk.classify.errors import TrainingDataError
from postdesk.classify.text import ticket_matrix

_DELIMITERS = (",", "\t", ";", "|")


@dataclass(frozen=True)
class LabelledData:
    """Tickets (subject, body) with one label each, and where they came from."""

    subjects: tuple[str, ...]
    bodies: tuple[str, ...]
    labels: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.subjects) == len(self.bodies) == len(self.labels):
            raise ValueError("subjects, bodies and labels must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_subject(self) -> bool:
        """Whether any ticket has a subject (a CSV with one text column has none)."""
        return any(s.strip() for s in self.subjects)

    def rows(self) -> NDArray[Any]:
        """The input matrix every model takes: columns (subject, body)."""
        return ticket_matrix(self.subjects, self.bodies)

    def y(self) -> NDArray[Any]:
        return np.asarray(self.labels, dtype=object)

    def subset(self, indices: Sequence[int] | NDArray[np.intp]) -> LabelledData:
        idx = [int(i) for i in indices]
        return LabelledData(
            tuple(self.subjects[i] for i in idx),
            tuple(self.bodies[i] for i in idx),
            tuple(self.labels[i] for i in idx),
            self.source,
        )

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        return {label: counts[label] for label in sorted(counts, key=lambda k: (-counts[k], k))}

    def fingerprint(self) -> str:
        """A digest of the rows and labels: equal digests mean the same training data."""
        digest = hashlib.sha256()
        for row in zip(self.subjects, self.bodies, self.labels, strict=True):
            for part in row:
                digest.update(part.encode("utf-8", "surrogatepass"))
                digest.update(b"\x1f")
            digest.update(b"\x1e")
        return digest.hexdigest()

    def without_rare_classes(self, minimum: int) -> tuple[LabelledData, dict[str, int]]:
        """These tickets less those of labels with fewer than `minimum` examples.

        Returns the kept data and the left-out labels with their counts.
        """
        counts = Counter(self.labels)
        rare = {label: n for label, n in counts.items() if n < minimum}
        if not rare:
            return self, {}
        keep = [i for i, label in enumerate(self.labels) if label not in rare]
        return self.subset(keep), dict(sorted(rare.items()))

    def summary(self) -> dict[str, Any]:
        """What a model's metadata says about the data it was trained on."""
        return {
            "source": self.source,
            "rows": len(self),
            "classes": self.class_counts(),
            "fingerprint": self.fingerprint(),
        }


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(
    path: str | Path,
    text_columns: Sequence[str],
    label_column: str,
    *,
    delimiter: str | None = None,
) -> LabelledData:
    """Labelled tickets from a CSV file with a header row.

    The delimiter is guessed from the header (comma, tab, semicolon or bar) unless given.
    Rows without a label are skipped; their number is kept in `source["skipped_rows"]`.
    """
    p = Path(path)
    if not text_columns:
        raise TrainingDataError("name at least one text column (--text subject,body)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with p.open(encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
            handle.seek(0)
            sep = delimiter or _sniff_delimiter(header)
            reader = csv.DictReader(handle, delimiter=sep)
            fields = [f for f in (reader.fieldnames or []) if f is not None]
            missing = [c for c in [*text_columns, label_column] if c not in fields]
            if missing:
                shown = ", ".join(f for f in fields if f) or "none"
                raise TrainingDataError(
                    f"{p}: no column {missing[0]!r} (columns: {shown}; delimiter {sep!r})"
                )
            subjects: list[str] = []
            bodies: list[str] = []
            labels: list[str] = []
            skipped = 0
            for row in reader:
                label = (row.get(label_column) or "").strip()
                if not label:
                    skipped += 1
                    continue
                texts = [row.get(c) or "" for c in text_columns]
                if len(texts) == 1:
                    subjects.append("")
                    bodies.append(texts[0])
                else:
                    subjects.append(texts[0])
                    bodies.append("\n".join(texts[1:]))
                labels.append(label)
    except FileNotFoundError:
        raise TrainingDataError(f"{p}: no such file") from None
    except UnicodeDecodeError:
        raise TrainingDataError(f"{p}: is not UTF-8 text") from None
    except csv.Error as exc:
        raise TrainingDataError(f"{p}: is not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise TrainingDataError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    if not labels:
        raise TrainingDataError(f"{p}: no row has a value in column {label_column!r}")
    source = {
        "kind": "csv",
        "path": str(p),
        "text": list(text_columns),
        "label": label_column,
        "skipped_rows": skipped,
    }
    return LabelledData(tuple(subjects), tuple(bodies), tuple(labels), source)


def holdout_split(
    labels: Sequence[str], fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, held out) of a stratified split with a fixed seed.

    Each label gives `fraction` of its examples (rounded) to the held-out part but always
    keeps one for training, so a label seen once is only ever trained on. The same labels,
    fraction and seed always give the same split, which is what lets `train --holdout` and
    `evaluate --holdout` agree on which rows are which.
    """
    if not 0.0 < fraction < 1.0:
        raise TrainingDataError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    rng = np.random.RandomState(seed)
    y = np.asarray(labels, dtype=object)
    held: list[int] = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        n = min(round(len(members) * fraction), len(members) - 1)
        held.extend(int(i) for i in members[:n])
    test = np.array(sorted(held), dtype=np.intp)
    train = np.setdiff1d(np.arange(len(y), dtype=np.intp), test)
    return train, test
