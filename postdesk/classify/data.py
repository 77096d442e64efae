"""Labelled tickets to learn from or to evaluate on: read from a CSV export, split, summarized.

A ticket is its subject and its body (the visible text of the first customer message).
From a CSV, the first `--text` column is the subject and the others, joined, the body;
a single text column is the body alone.
"""

from __future__ import annotations

import csv
import hashlib
import math
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    # When each ticket was created (seconds since the epoch), if known: what lets a
    # held-out check train on older tickets and test on newer ones (`time_ordered_split`).
    times: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not len(self.subjects) == len(self.bodies) == len(self.labels):
            raise ValueError("subjects, bodies and labels must have the same length")
        if self.times is not None and len(self.times) != len(self.labels):
            raise ValueError("times and labels must have the same length")

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
            None if self.times is None else tuple(self.times[i] for i in idx),
        )

    def with_source(self, source: dict[str, Any]) -> LabelledData:
        return LabelledData(self.subjects, self.bodies, self.labels, source, self.times)

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
    time_column: str | None = None,
) -> LabelledData:
    """Labelled tickets from a CSV file with a header row.

    The delimiter is guessed from the header (comma, tab, semicolon or bar) unless given.
    Rows without a label are skipped; their number is kept in `source["skipped_rows"]`.
    With `time_column`, every kept row must have a time there (ISO 8601, e.g.
    2026-03-01T09:30:00Z or 2026-03-01 09:30, or seconds since the epoch); it becomes
    `times`.
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
            wanted = [*text_columns, label_column, *([time_column] if time_column else [])]
            missing = [c for c in wanted if c not in fields]
            if missing:
                shown = ", ".join(f for f in fields if f) or "none"
                raise TrainingDataError(
                    f"{p}: no column {missing[0]!r} (columns: {shown}; delimiter {sep!r})"
                )
            if label_column in text_columns:
                raise TrainingDataError(
                    f"{p}: the label column {label_column!r} is also a --text column; a "
                    "model would read the answer instead of learning it"
                )
            subjects: list[str] = []
            bodies: list[str] = []
            labels: list[str] = []
            columns: list[list[str]] = [[] for _ in text_columns]
            times: list[float] = []
            skipped = 0
            for row in reader:
                label = (row.get(label_column) or "").strip()
                if not label:
                    skipped += 1
                    continue
                if time_column:
                    times.append(parse_time(row.get(time_column) or "", f"{p}:{reader.line_num}"))
                texts = [row.get(c) or "" for c in text_columns]
                for values, text in zip(columns, texts, strict=True):
                    values.append(text)
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
    for name, values in zip(text_columns, columns, strict=True):
        score = leak_score(values, labels)
        if score >= LEAK_SCORE:
            raise TrainingDataError(
                f"{p}: column {name!r} alone gives the {label_column!r} label almost "
                f"perfectly (it removes {score:.0%} of the errors of always guessing the "
                "commonest label); it holds the answer, not the customer's words. Leave it "
                "out of --text"
            )
    source = {
        "kind": "csv",
        "path": str(p),
        "text": list(text_columns),
        "label": label_column,
        "skipped_rows": skipped,
    }
    if time_column:
        source["time"] = time_column
    stamps = tuple(times) if time_column else None
    return LabelledData(tuple(subjects), tuple(bodies), tuple(labels), source, stamps)


def parse_time(value: str, where: str) -> float:
    """Seconds since the epoch from an ISO 8601 time (no zone: UTC) or a number."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
        text = ""
    try:
        when = datetime.fromisoformat(text[:64])
    except ValueError:
        shown = text[:40] or "nothing"
        raise TrainingDataError(
            f"{where}: the time column holds {shown!r}, not a time (ISO 8601, e.g. "
            "2026-03-01T09:30:00Z, or seconds since the epoch)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def time_ordered_split(
    data: LabelledData, fraction: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, held out): the newest `fraction` of the tickets held out, the
    older ones to train on, as a team deploys a model (trained on what came before,
    used on what comes next). Ties in time keep the file's (or ticket id) order.

    Near-duplicates are not kept apart here: a copy of an older ticket arriving later is
    what a deployed model meets too.
    """
    if data.times is None:
        raise TrainingDataError("these tickets have no times; a time-ordered split needs them")
    if not 0.0 < fraction < 1.0:
        raise TrainingDataError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    n = len(data)
    if n < 2:
        raise TrainingDataError("a time-ordered split needs at least 2 tickets")
    order = np.argsort(np.asarray(data.times, dtype=np.float64), kind="stable")
    held = min(n - 1, max(1, round(n * fraction)))
    train = np.sort(order[: n - held]).astype(np.intp)
    test = np.sort(order[n - held :]).astype(np.intp)
    return train, test


# A text column that, by its exact value alone, removes this share of the errors of
# always guessing the commonest label is the label in disguise (a category-name column,
# the label itself copied): no ticket text is that informative.
LEAK_SCORE = 0.9


def leak_score(values: Sequence[str], labels: Sequence[str]) -> float:
    """How well the exact value of a column predicts the label, by itself.

    Each row's label is guessed as the commonest label among the *other* rows with the
    same (case-folded, trimmed) value; a value seen once guesses nothing. The result is
    the share of the errors of always guessing the commonest label that this removes
    (1.0: a perfect copy of the label; 0 or less: no better than the commonest label).
    Free text, where nearly every value is unique, scores about 0.
    """
    n = len(labels)
    if n < 2:
        return 0.0
    groups: dict[str, Counter[str]] = {}
    for value, label in zip(values, labels, strict=True):
        groups.setdefault(value.strip().casefold(), Counter())[label] += 1
    correct = 0
    for counts in groups.values():
        ranked = counts.most_common(2)
        top_n = ranked[0][1]
        second_n = ranked[1][1] if len(ranked) > 1 else 0
        # A row of the top label is guessed right if, without it, its label still wins.
        if top_n - 1 > second_n:
            correct += top_n
    majority = Counter(labels).most_common(1)[0][1] / n
    if majority >= 1.0:
        return 0.0
    return (correct / n - majority) / (1.0 - majority)


# Tickets whose texts' word TF-IDF vectors (words and word pairs, sublinear tf, idf) are
# at least this similar are near-duplicates: translations of one template, copies with a
# name or number changed, the same customer writing twice. On the public multilingual set
# this groups 627 of 1,566 tickets, none in a group of more than 6; the greetings every
# ticket shares weigh little under idf and do not join unrelated tickets.
NEAR_DUPLICATE_SIMILARITY = 0.5
# Near-duplicates are linked transitively, so templated tickets (an intents set written
# from a few hundred templates) chain into one group holding most of the data: 96% of the
# public Bitext intents set at 0.5. No fold split can then be balanced, and the fold that
# holds that group trains on almost nothing. A group holding more than MAX_GROUP_SHARE of
# the tickets (and more than MIN_SPLIT_ROWS) is therefore split again by the next, stricter
# similarity, and its parts that are still too big by the one after, down to exact copies
# (the same text once normalized), which are never split. 0.02 is a tenth of one of five
# folds: groups that size let stratified folds give every fold about its share of each
# label (on the Bitext set, a fold's share of a label is then off 0.2 by at most 0.07; with
# 0.1 by up to 0.33). Groups no bigger than that keep every link they had, so copies and
# translations stay together as before (the multilingual, Endava and Snappfood sets' groups
# are unchanged but for Endava's 296 templated purchase-order notices); in a group that
# was split, tickets at least STRICTER_SIMILARITIES[-1] similar still share one.
MAX_GROUP_SHARE = 0.02
MIN_SPLIT_ROWS = 20
STRICTER_SIMILARITIES = (0.6, 0.7, 0.8, 0.9, 0.95)
# At most this many entries of the similarity product are computed at once (a block of
# rows against all rows): about 100 MB whatever the number of tickets.
_SIMILARITY_BLOCK_ENTRIES = 4_000_000


def near_duplicate_groups(
    data: LabelledData,
    similarity: float = NEAR_DUPLICATE_SIMILARITY,
    *,
    max_share: float = MAX_GROUP_SHARE,
) -> NDArray[np.intp]:
    """A group number per ticket: near-duplicates (see NEAR_DUPLICATE_SIMILARITY), and
    everything linked through them, share one; a group of more than `max_share` of the
    tickets (and more than MIN_SPLIT_ROWS) is split again by stricter similarities, down
    to exact copies (see MAX_GROUP_SHARE).

    Splits that keep a group on one side measure what a model does on tickets unlike the
    ones it learned from, as new mail is; random splits put copies on both sides and
    reward memorising.

    Time and memory grow with the number of similar pairs, which are kept once each with
    one byte saying the strictest similarity they reach; the similarity product is
    computed a block of rows at a time.
    """
    from scipy import sparse  # type: ignore[import-untyped]
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]

    from postdesk.classify.text import prepare_text

    n = len(data)
    if n < 2:
        return np.zeros(n, dtype=np.intp)
    texts = [prepare_text(f"{s}\n{b}") for s, b in zip(data.subjects, data.bodies, strict=True)]
    vectorizer = TfidfVectorizer(
        lowercase=False,
        token_pattern=r"(?u)\b\w+\b",
        ngram_range=(1, 2),
        sublinear_tf=True,
        dtype=np.float32,
    )
    try:
        X = sparse.csr_matrix(vectorizer.fit_transform(texts))
    except ValueError:  # no words at all: every ticket its own group
        return np.arange(n, dtype=np.intp)
    levels = np.asarray([similarity, *(s for s in STRICTER_SIMILARITIES if s > similarity)])
    XT = sparse.csr_matrix(X.T)
    step = max(1, _SIMILARITY_BLOCK_ENTRIES // n)
    rows: list[NDArray[np.int32]] = []
    cols: list[NDArray[np.int32]] = []
    level: list[NDArray[np.uint8]] = []
    for start in range(0, n, step):
        block = sparse.coo_matrix(X[start : start + step] @ XT)
        # Each pair once (i < j), and only pairs similar enough to count at all.
        keep = (block.data >= similarity) & (block.row + start < block.col)
        rows.append((block.row[keep] + start).astype(np.int32))
        cols.append(block.col[keep].astype(np.int32))
        # How many of the similarity levels the pair reaches (1 to len(levels)).
        level.append(np.searchsorted(levels, block.data[keep], side="right").astype(np.uint8))
    return _split_big_groups(
        n,
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(level),
        len(levels),
        texts,
        max_share,
    )


def _split_big_groups(
    n: int,
    rows: NDArray[np.int32],
    cols: NDArray[np.int32],
    level: NDArray[np.uint8],
    levels: int,
    texts: Sequence[str],
    max_share: float,
) -> NDArray[np.intp]:
    """Connected components of the pairs (rows[i], cols[i]); a component of more than
    `max_share` of the n tickets is split into the components of its pairs of the next
    level, and so on; one still too big after the last level, into its exact copies."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

    limit = max(max_share * n, MIN_SPLIT_ROWS)

    def components(keep: NDArray[np.bool_]) -> NDArray[np.intp]:
        graph = sparse.coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.int8), (rows[keep], cols[keep])), shape=(n, n)
        )
        _, labels = connected_components(graph.tocsr(), directed=False)
        return np.asarray(labels, dtype=np.intp)

    groups = components(np.ones(len(rows), dtype=bool))
    for reached in range(2, levels + 2):
        sizes = np.bincount(groups)
        big = sizes[groups] > limit
        if not big.any():
            break
        if reached <= levels:
            # Pairs inside a big group (both ends are in the same one) that reach the
            # stricter level; every other ticket keeps its group.
            parts = components(big[rows] & (level >= reached))
        else:
            _, parts = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        # A part never spans two big groups (its pairs lie within one), so the pair
        # (group, part) numbers it; tickets outside big groups keep their group.
        key = np.where(big, parts.astype(np.int64) + 1, 0) * (n + 1) + groups
        _, groups = np.unique(key, return_inverse=True)
        groups = groups.astype(np.intp)
    _, groups = np.unique(groups, return_inverse=True)
    return np.asarray(groups, dtype=np.intp)


def grouped_holdout_split(
    data: LabelledData, fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, held out) of a split that keeps near-duplicates together.

    Stratified by label as far as the groups allow (scikit-learn's StratifiedGroupKFold
    with round(1 / fraction) folds, the first fold held out). Repeatable for the same data,
    fraction and seed.

    A group can still hold much of the data: exact copies are never split (see
    MAX_GROUP_SHARE), and a group of them can be most of a set; the fold holding it would
    leave almost nothing to train on (before big groups were split, a public intents set
    held out 20,623 of 21,534 rows). When the first fold's share is off `fraction` by
    more than half of it, the fold whose share is closest to `fraction` is held out
    instead: a giant group is then always trained on.
    """
    from sklearn.model_selection import StratifiedGroupKFold  # type: ignore[import-untyped]

    if not 0.0 < fraction < 1.0:
        raise TrainingDataError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    folds = max(2, round(1 / fraction))
    groups = near_duplicate_groups(data)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        splits = list(splitter.split(np.zeros(len(data)), data.y(), groups))
    train, test = splits[0]
    if abs(len(test) / len(data) - fraction) > fraction / 2:
        train, test = min(splits, key=lambda split: abs(len(split[1]) / len(data) - fraction))
    return np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp)


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
