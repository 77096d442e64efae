"""Triage a team can trust: a new model goes live only when it is safe to, held-out
numbers keep near-duplicates on one side, a text column that is the label is refused,
people's labels are checked, and a model that is never sure says so.

Models here are trained on the small synthetic tickets of postdesk.testing.labelled
(under a second each).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from postdesk.classify.data import (
    LabelledData,
    grouped_holdout_split,
    leak_score,
    near_duplicate_groups,
    read_csv,
)
from postdesk.classify.errors import TrainingDataError
from postdesk.classify.promotion import register_model
from postdesk.classify.store import ModelStore
from postdesk.classify.training import TrainedModel, _folds, train_model
from postdesk.models import Contact, Message, Ticket
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.labelled import CATEGORIES, synthetic, write_csv
from postdesk.tickets.lifecycle import merge_tickets

MORE_CATEGORIES = {**CATEGORIES, "shipping": "parcel courier tracking delivery address box"}


@pytest.fixture(scope="module")
def categories() -> LabelledData:
    return synthetic(CATEGORIES)


@pytest.fixture(scope="module")
def category_model(categories: LabelledData) -> TrainedModel:
    return train_model(categories, target="category", n_jobs=1)


def copy_of(model: TrainedModel) -> TrainedModel:
    return TrainedModel(model.pipeline, json.loads(json.dumps(model.metadata)))


def never_sure(model: TrainedModel) -> TrainedModel:
    """`model` as if no threshold had reached the target precision on held-out data."""
    unsure = copy_of(model)
    unsure.metadata["threshold"] = None
    unsure.metadata["cv"]["coverage"] = 0.0
    return unsure


def shuffled(data: LabelledData, seed: int = 7) -> LabelledData:
    labels = list(data.labels)
    random.Random(seed).shuffle(labels)
    return LabelledData(data.subjects, data.bodies, tuple(labels), data.source)


# --- activation --------------------------------------------------------------------------


def test_a_zero_coverage_model_is_stored_but_not_activated(
    tmp_path: Path, category_model: TrainedModel, categories: LabelledData
) -> None:
    store = ModelStore(tmp_path)
    first = register_model(store, never_sure(category_model), categories)
    # Not even as the first model: it would send every new ticket to needs-triage.
    assert not first.activated and store.active("category") is None
    assert "no confident region" in first.reason
    assert "postdesk model promote category-1" in first.reason
    good = register_model(store, copy_of(category_model), categories)
    assert good.activated and store.active("category") == good.version
    low = copy_of(category_model)
    low.metadata["cv"]["coverage"] = 0.2
    kept = register_model(store, low, categories)
    assert not kept.activated and store.active("category") == good.version
    assert "coverage at precision 0.9 is 0.200, below the floor 0.3" in kept.reason
    # The floor is the operator's: 0.1 lets the same model through.
    lower_floor = register_model(store, copy_of(low), categories, min_coverage=0.1)
    assert lower_floor.activated
    store.promote(kept.version)  # `model promote` activates it on purpose
    assert store.active("category") == kept.version


def test_a_model_with_other_labels_needs_accept_labels(
    tmp_path: Path, category_model: TrainedModel, categories: LabelledData
) -> None:
    store = ModelStore(tmp_path)
    assert register_model(store, copy_of(category_model), categories).activated
    # Unrelated data whose labels are "4", "5", "6" (the case), even if it
    # scores well, never replaces the live model by itself.
    unrelated = LabelledData(
        categories.subjects,
        categories.bodies,
        tuple({"billing": "4", "sales": "5", "technical": "6"}[c] for c in categories.labels),
    )
    other = train_model(unrelated, target="category", n_jobs=1)
    refused = register_model(store, other, unrelated, accept_labels=True, n_jobs=1)
    assert not refused.activated and store.active("category") == "category-1"
    assert "cannot predict 'billing', 'sales', 'technical'" in refused.reason
    assert "adds '4', '5', '6'" in refused.reason

    more = synthetic(MORE_CATEGORIES, n=240, seed=4)
    wider = train_model(more, target="category", n_jobs=1)
    assert set(wider.classes) == set(MORE_CATEGORIES)
    held = register_model(store, copy_of(wider), more, n_jobs=1)
    assert not held.activated and "adds 'shipping'" in held.reason
    assert "--accept-labels" in held.reason
    agreed = register_model(store, copy_of(wider), more, accept_labels=True, n_jobs=1)
    assert agreed.activated, agreed.reason
    assert store.active("category") == agreed.version


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    runner = Cli(write_config(tmp_path, sqlite_url))
    runner("init")
    return runner


def test_cli_train_prints_metrics_and_progress_and_keeps_an_unsure_model_inactive(
    cli: Cli, tmp_path: Path, categories: LabelledData
) -> None:
    good = write_csv(tmp_path / "good.csv", categories)
    common = ["--text", "title,body", "--label", "category"]
    first = cli("model", "train", "--csv", str(good), *common)
    # Metrics always: the summary, the split, a line per label.
    assert "held-out macro-F1" in first.stdout and "coverage" in first.stdout
    assert "near-duplicate" in first.stdout
    for name in CATEGORIES:
        assert f"  {name} " in first.stdout
    # Not on a terminal (CliRunner): a line per stage on stderr, never silence.
    assert "training: tuning" in first.stderr and "done in" in first.stderr
    assert "category-1 is now the active category model" in first.stdout

    noise = write_csv(tmp_path / "noise.csv", shuffled(categories))
    second = cli("model", "train", "--csv", str(noise), *common, "--json")
    result = json.loads(second.stdout)
    assert result["cv"]["coverage"] < 0.3
    assert result["version"] == "category-2" and result["activated"] is False
    active = [m["version"] for m in cli.json("model", "list") if m["active"]]
    assert active == ["category-1"]
    assert (
        "category-2 is now active (was category-1)" in cli("model", "promote", "category-2").stdout
    )


def test_predict_says_when_a_model_has_no_confident_region(
    cli: Cli, tmp_path: Path, category_model: TrainedModel
) -> None:
    from postdesk.classify.store import save_model_file

    path = save_model_file(never_sure(category_model), tmp_path / "unsure.skops")
    out = cli("model", "predict", str(path), "refund my invoice").stdout
    assert "guess        billing" in out
    assert "threshold    none" in out
    assert "no confident region" in out and "needs-triage" in out
    result = cli.json("model", "predict", str(path), "refund my invoice")
    assert result["confident_region"] is False and result["threshold"] is None
    assert result["needs_triage"] is True and "no confident region" in result["explanation"]
    sure = save_model_file(category_model, tmp_path / "sure.skops")
    words = cli("model", "predict", str(sure), "refund invoice payment charge").stdout
    assert "at or above" in words and "applied" in words
    # A stored threshold of 1.0 (only certainties qualify) is no confident region either.
    certain = copy_of(category_model)
    certain.metadata["threshold"] = 1.0
    assert certain.threshold is None


# --- honest evaluation -------------------------------------------------------------------


def test_near_duplicates_stay_on_one_side_of_every_split(categories: LabelledData) -> None:
    base = categories.subset(range(60))
    # Each of the first 20 tickets again with a word changed: a near-copy.
    copies = base.subset(range(20))
    data = LabelledData(
        base.subjects + copies.subjects,
        base.bodies + tuple(b.replace("hello", "hi") + " thanks" for b in copies.bodies),
        base.labels + copies.labels,
    )
    groups = near_duplicate_groups(data)
    for i in range(20):
        assert groups[i] == groups[60 + i]
    for train, test in _folds(data, seed=0):
        assert not set(groups[train]) & set(groups[test])
    train, test = grouped_holdout_split(data, 0.2, seed=1)
    assert not set(groups[train]) & set(groups[test])
    assert 0.1 < len(test) / len(data) < 0.3


def _unrelated(rng: random.Random, n: int) -> tuple[list[str], list[str], list[str]]:
    """`n` tickets unlike each other (random words)."""
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(3000)
    ]
    subjects = [rng.choice(vocabulary) for _ in range(n)]
    bodies = [" ".join(rng.sample(vocabulary, 12)) for _ in range(n)]
    labels = [rng.choice(["orders", "refunds"]) for _ in range(n)]
    return subjects, bodies, labels


def test_a_chain_of_near_duplicates_is_split_but_copies_stay_together() -> None:
    """Templated tickets chain into one group through near-duplicates of near-duplicates;
    such a group is split again by stricter similarity, so folds can be balanced, while
    exact copies (the same text once normalized), and a chain too small to matter, keep
    one group each."""
    rng = random.Random(5)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["w" + "".join(rng.choice(letters) for _ in range(6)) for _ in range(400)]
    subjects: list[str] = []
    bodies: list[str] = []
    labels: list[str] = []
    for i in range(150):  # each ticket shares 9 of its 10 words with the next one
        subjects.append("")
        bodies.append(" ".join(words[i : i + 10]) + f" order {1000 + i}")
        labels.append("orders" if i % 2 else "refunds")
    copies = list(range(0, 150, 5))
    for i in copies:  # an exact copy of every fifth one (another order number, in capitals)
        subjects.append("")
        bodies.append(bodies[i].upper().replace("ORDER 1", "ORDER 9"))
        labels.append(labels[i])
    small = len(bodies)
    for i in range(12):  # a chain of 12 on other words: a group too small to split
        subjects.append("")
        bodies.append(" ".join(words[200 + i : 210 + i]))
        labels.append("orders")
    more = _unrelated(rng, 40)
    data = LabelledData(tuple(subjects + more[0]), tuple(bodies + more[1]), tuple(labels + more[2]))
    groups = near_duplicate_groups(data)
    sizes = np.bincount(groups)
    # No group of more than 20 tickets (MIN_SPLIT_ROWS; 2% of 242 is less) is left...
    assert sizes.max() <= 20
    assert len(set(groups[:150].tolist())) > 10
    for k, i in enumerate(copies):
        assert groups[i] == groups[150 + k]
    assert len(set(groups[small : small + 12].tolist())) == 1
    assert sizes[groups[small]] == 12
    # ... though, linked transitively, the 180 chained tickets are one group (74%).
    linked = near_duplicate_groups(data, max_share=1.0)
    assert len(set(linked[:180].tolist())) == 1
    # The folds training is measured on (and the held-out split) are now balanced.
    for _, test in _folds(data, seed=0):
        assert 0.1 < len(test) / len(data) < 0.3
        assert not set(groups[test]) & set(np.delete(groups, test))
    _, test = grouped_holdout_split(data, 0.2, seed=1)
    assert 0.1 < len(test) / len(data) < 0.3


def test_a_giant_group_of_copies_is_trained_on_not_held_out() -> None:
    """Copies are never split, however many: when they hold most of the data, the
    held-out part keeps about the asked share, and that group is on the training side."""
    rng = random.Random(3)
    subjects: list[str] = []
    bodies: list[str] = []
    labels: list[str] = []
    for i in range(160):  # one template, only its order number changed: one text
        subjects.append("order")
        bodies.append(f"please help me cancel my order number {1000 + i} from the shop")
        labels.append(rng.choice(["orders", "refunds"]))
    more = _unrelated(rng, 40)
    data = LabelledData(tuple(subjects + more[0]), tuple(bodies + more[1]), tuple(labels + more[2]))
    groups = near_duplicate_groups(data)
    biggest = int(np.bincount(groups).argmax())
    assert np.count_nonzero(groups == biggest) == 160  # the copies are one group
    train, test = grouped_holdout_split(data, 0.2, seed=1)
    assert 0.05 <= len(test) / len(data) <= 0.3
    assert biggest in set(groups[train]) and biggest not in set(groups[test])


def test_a_text_column_that_is_the_label_is_refused(tmp_path: Path) -> None:
    rng = random.Random(1)
    path = tmp_path / "leak.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "category", "queue_name"])
        for i in range(200):
            label = rng.choice(["a", "b", "c"])  # random: no text can predict it
            writer.writerow([f"ticket {i}", f"words {rng.random()}", label, f"Q-{label}"])
    with pytest.raises(TrainingDataError, match="also a --text column"):
        read_csv(path, ["subject", "category"], "category")
    with pytest.raises(TrainingDataError, match="column 'queue_name' alone gives"):
        read_csv(path, ["subject", "queue_name"], "category")
    assert len(read_csv(path, ["subject", "body"], "category")) == 200
    # Free text scores about zero; an empty column is no better than the commonest label.
    labels = ["a"] * 90 + ["b"] * 10
    assert leak_score([str(i) for i in range(100)], labels) <= 0.0
    assert leak_score([""] * 100, labels) == 0.0
    assert leak_score(labels, labels) == 1.0


def test_cli_evaluate_refuses_the_label_among_its_inputs(cli: Cli, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "t.csv", synthetic(CATEGORIES, n=60))
    result = cli(
        "model", "evaluate", "--cv", "3", "--csv", str(data), "--text", "title,category",
        "--label", "category", code=1,
    )  # fmt: skip
    assert "also a --text column" in result.stderr


# --- people's labels ---------------------------------------------------------------------


def _tickets(cli: Cli, n: int) -> list[int]:
    db = cli.database()
    with db.transaction() as session:
        ids = []
        for i in range(n):
            customer = Contact(email=f"c{i}@example.org")
            session.add(customer)
            session.flush()
            ticket = Ticket(subject=f"ticket {i}", requester_id=customer.id)
            session.add(ticket)
            session.flush()
            session.add(
                Message(
                    ticket_id=ticket.id,
                    contact_id=customer.id,
                    direction="in",
                    subject=ticket.subject,
                    from_email=customer.email,
                    text="hello",
                    visible_text="hello",
                )
            )
            ids.append(ticket.id)
    db.dispose()
    return ids


def test_model_label_rejects_unknown_values_bad_addresses_and_merged_tickets(
    cli: Cli, tmp_path: Path
) -> None:
    one, two, three = _tickets(cli, 3)
    who = ["--as", "agent@example.com"]
    # Nothing known yet: a new category is added on purpose only.
    refused = cli("model", "label", str(one), "--category", "billing", *who, code=1)
    assert "--new-category" in refused.stderr
    cli("model", "label", str(one), "--category", "billing", "--new-category", *who)
    # Now known; a typo is refused, with the near miss named.
    cli("model", "label", str(two), "--category", "billing", *who)
    typo = cli("model", "label", str(two), "--category", "biling", *who, code=1)
    assert "'biling' is not a known category (did you mean 'billing'?)" in typo.stderr
    # Priorities are the configured levels only (defaults here).
    bad = cli("model", "label", str(two), "--priority", "urgnet", *who, code=1)
    assert "is not a priority (did you mean 'urgent'?)" in bad.stderr
    cli("model", "label", str(two), "--priority", "urgent", *who)
    for address in ("agent", "agent@", "a b@example.com", "x@y"):
        wrong = cli("model", "label", str(two), "--priority", "low", "--as", address, code=1)
        assert "is not an email address" in wrong.stderr
    db = cli.database()
    merge_tickets(db, two, three)
    db.dispose()
    merged = cli("model", "label", str(three), "--category", "billing", *who, code=1)
    assert f"ticket #{three} was merged into #{two}; label #{two} instead" in merged.stderr
    db = cli.database()
    with db.read_session() as session:
        rows = {t.id: (t.category, t.priority) for t in session.query(Ticket)}
    db.dispose()
    assert rows[one] == ("billing", None)
    assert rows[two] == ("billing", "urgent")
    assert rows[three][0] is None


def test_model_label_knows_configured_categories_and_the_active_models(
    tmp_path: Path, sqlite_url: str, categories: LabelledData
) -> None:
    config = write_config(tmp_path, sqlite_url)
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[triage]\ncategories = ["returns"]\n',
        encoding="utf-8",
    )
    cli = Cli(config)
    cli("init")
    (ticket,) = _tickets(cli, 1)
    who = ["--as", "Agent@Example.com"]
    cli("model", "label", str(ticket), "--category", "returns", *who)
    cli("model", "label", str(ticket), "--category", "sales", *who, code=1)
    data = write_csv(tmp_path / "t.csv", categories)
    cli("model", "train", "--csv", str(data), "--text", "title,body", "--label", "category")
    out = cli("model", "label", str(ticket), "--category", "sales", *who).stdout
    assert "recorded as set by agent@example.com" in out


def test_label_offsets_live_in_the_stored_model_and_the_fast_scorer(tmp_path: Path) -> None:
    from postdesk.classify.scorer import LinearScorer
    from postdesk.classify.store import load_model_file, save_model_file

    # A small label among big ones, its words shared with them: a boundary worth moving.
    vocab = {
        "billing": CATEGORIES["billing"],
        "technical": CATEGORIES["technical"],
        "sales": "price quote demo plan invoice error",
    }
    data = synthetic(vocab, n=300, noise=0.3, seed=9)
    keep = [i for i, label in enumerate(data.labels) if label != "sales" or i % 4 == 0]
    data = data.subset(keep)
    model = train_model(data, target="category", n_jobs=1)
    offsets = model.metadata["cv"].get("label_offsets")
    assert offsets and any(offsets.values()), model.metadata["cv"]
    again = load_model_file(save_model_file(model, tmp_path / "m.skops"))
    scorer = LinearScorer.from_pipeline(again.pipeline)
    assert scorer is not None and scorer.agrees_with(again.pipeline)
    rows = data.rows()[:30]
    got = np.vstack([scorer.proba(s, b) for s, b in rows])
    np.testing.assert_allclose(got, again.pipeline.predict_proba(rows), rtol=1e-9, atol=1e-12)


def test_certainty_is_a_region_only_when_a_real_share_of_tickets_reaches_it() -> None:
    """Temperature scaling rounds the probabilities of well-separated labels to 1.0. When a
    real share of the held-out tickets is at 1.0 and right, that is a confident region (the
    demo's model covers every ticket); a handful of certainties is not."""
    from postdesk.classify.training import CERTAIN_SHARE, _threshold_and_cv

    classes = np.array(["billing", "delivery"])
    n = 1000
    y = np.array(["billing", "delivery"] * (n // 2))
    sure = np.zeros((n, 2))
    sure[np.arange(n), np.arange(n) % 2] = 1.0  # every ticket certain and right
    threshold, cv = _threshold_and_cv(y, sure, classes, 0.9)
    assert threshold is not None and threshold < 1.0 and cv["coverage"] == 1.0
    model = TrainedModel(pipeline=None, metadata={"threshold": threshold})  # type: ignore[arg-type]
    assert model.threshold == threshold  # kept as a region when loaded
    # Enough certain (and right) tickets for the precision bound, but under CERTAIN_SHARE
    # of them; the rest are coin flips.
    few = int(n * CERTAIN_SHARE) - 50
    mixed = np.full((n, 2), 0.5)
    mixed[:few] = sure[:few]
    threshold, cv = _threshold_and_cv(y, mixed, classes, 0.9)
    assert threshold is None and cv["coverage"] == 0.0
