"""Triage: training from CSV and from the database, evaluation, the confidence threshold,
the model store, skops files, priority rules and the run-time API.

Every model here is trained on small synthetic tickets the tests write, in well under a
second each; the public corpora are in test_classify_corpus.py.
"""

from __future__ import annotations

import json
import os
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from click.testing import CliRunner
from sqlalchemy import select

from postdesk.classify.data import LabelledData, holdout_split, read_csv
from postdesk.classify.errors import ModelError, TrainingDataError
from postdesk.classify.labels import (
    human_labels,
    record_label,
    record_triage,
    training_data_from_db,
)
from postdesk.classify.metrics import threshold_for_precision, wilson_lower_bound
from postdesk.classify.promotion import register_model, retrain_due, retrain_from_db
from postdesk.classify.rules import PriorityRules
from postdesk.classify.scorer import LinearScorer
from postdesk.classify.store import ModelStore, load_model_file, save_model_file
from postdesk.classify.text import prepare_text, ticket_matrix
from postdesk.classify.training import TrainedModel, cross_evaluate, train_model
from postdesk.classify.triage import Prediction, Triage, TriageResult
from postdesk.cli import main
from postdesk.config import DatabaseSettings, Settings, TriageSettings, load_settings
from postdesk.errors import ConfigError
from postdesk.models import Contact, Message, Ticket, TicketEvent
from postdesk.models.db import Database
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.labelled import CATEGORIES, PRIORITIES, synthetic, write_csv

LEVELS = ("low", "normal", "high", "urgent")


@pytest.fixture(scope="module")
def categories() -> LabelledData:
    return synthetic(CATEGORIES)


@pytest.fixture(scope="module")
def category_model(categories: LabelledData) -> TrainedModel:
    return train_model(categories, target="category", n_jobs=1)


@pytest.fixture(scope="module")
def priority_model() -> TrainedModel:
    return train_model(synthetic(PRIORITIES, seed=5), target="priority", n_jobs=1)


def settings_for(tmp_path: Path, **triage: Any) -> Settings:
    return Settings(
        path=tmp_path / "postdesk.toml",
        data_dir=tmp_path / "data",
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'postdesk.db'}"),
        triage=TriageSettings(**triage),
    )


def activate(settings: Settings, *models: TrainedModel) -> ModelStore:
    store = ModelStore(settings.data_dir)
    for model in models:
        copy = TrainedModel(model.pipeline, json.loads(json.dumps(model.metadata)))
        store.promote(store.add(copy))
    return store


# --- text and data -------------------------------------------------------------------------


def test_prepare_text_unifies_persian_spelling_case_and_digits() -> None:
    # Arabic yeh and kaf, a ZWNJ and Persian digits, as different keyboards type them.
    assert prepare_text("مي\u200cخواهم كتاب ۱۲") == prepare_text("میخواهم کتاب 34")
    assert prepare_text("URGENT Order 12") == "urgent order 00"
    assert prepare_text("mail me at a.b@example.com or https://x.example/y") == (
        "mail me at _email_ or _url_"
    )


def test_read_csv_guesses_a_tab_delimiter_and_one_text_column_is_the_body(
    tmp_path: Path,
) -> None:
    path = tmp_path / "comments.csv"  # tab-separated despite the name, like snappfood
    path.write_text(
        "\tcomment\tlabel\n0\tغذا سرد بود\tSAD\n1\tعالی بود\tHAPPY\n2\tno label\t\n",
        encoding="utf-8",
    )
    data = read_csv(path, ["comment"], "label")
    assert data.labels == ("SAD", "HAPPY")
    assert data.subjects == ("", "")
    assert data.bodies == ("غذا سرد بود", "عالی بود")
    assert data.source["skipped_rows"] == 1
    assert not data.has_subject


def test_read_csv_joins_body_columns_and_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("subject,body,answer,queue\nHi,Line one,Agent text,IT\n", encoding="utf-8")
    data = read_csv(path, ["subject", "body"], "queue")
    assert (data.subjects, data.bodies, data.labels) == (("Hi",), ("Line one",), ("IT",))
    with pytest.raises(TrainingDataError, match=r"no column 'bdy'.*subject, body, answer, queue"):
        read_csv(path, ["subject", "bdy"], "queue")
    with pytest.raises(TrainingDataError, match="no such file"):
        read_csv(tmp_path / "missing.csv", ["subject"], "queue")


def test_holdout_split_is_stratified_repeatable_and_trains_on_singletons() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + ["c"]
    train, test = holdout_split(labels, 0.2, seed=1)
    again = holdout_split(labels, 0.2, seed=1)
    assert train.tolist() == again[0].tolist() and test.tolist() == again[1].tolist()
    held = [labels[i] for i in test]
    assert held.count("a") == 10 and held.count("b") == 2 and "c" not in held
    assert sorted([*train, *test]) == list(range(len(labels)))
    assert holdout_split(labels, 0.2, seed=2)[1].tolist() != test.tolist()


def test_threshold_reaches_the_target_with_a_lower_bound_not_the_raw_precision() -> None:
    confidence = np.linspace(1.0, 0.0, 200)
    correct = np.ones(200, bool)
    correct[150:] = False  # the 150 most confident are right, the rest wrong
    threshold = threshold_for_precision(confidence, correct, 0.9)
    assert threshold is not None
    covered = confidence >= threshold
    assert correct[covered].mean() >= 0.9
    # The raw precision would allow going further; the Wilson bound stops earlier.
    raw = threshold_for_precision(confidence, correct, 0.9, z=0.0)
    assert raw is not None and raw < threshold
    assert threshold_for_precision(confidence[:5], correct[:5], 0.9) is None  # too few
    assert float(wilson_lower_bound(90, 100)) < 0.9


# --- training and evaluation ---------------------------------------------------------------


def test_training_records_cv_metrics_threshold_data_and_versions(
    category_model: TrainedModel, categories: LabelledData
) -> None:
    meta = category_model.metadata
    assert meta["target"] == "category"
    assert meta["recipe"]["kind"] == "postdesk"
    assert meta["cv"]["macro_f1"] > 0.85
    assert meta["cv"]["folds"] == 5 and len(meta["cv"]["tuning"]) >= 8
    assert 0.0 < meta["threshold"] < 1.0
    assert meta["cv"]["confident_precision"] >= 0.9
    assert meta["data"]["rows"] == len(categories)
    assert meta["data"]["classes"] == {"billing": 80, "sales": 80, "technical": 80}
    assert len(meta["data"]["fingerprint"]) == 64
    assert {"python", "scikit-learn", "skops", "numpy", "scipy", "postdesk"} <= set(
        meta["versions"]
    )
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    labels, probability = category_model.predict(
        ticket_matrix(["Refund"], ["my invoice charge was wrong, please refund the payment"])
    )
    assert labels == ["billing"] and probability[0] > 0.9


def test_rare_labels_are_left_out_and_listed(categories: LabelledData) -> None:
    data = LabelledData(
        (*categories.subjects, "odd", "odd"),
        (*categories.bodies, "something else", "something else"),
        (*categories.labels, "legal", "legal"),
    )
    model = train_model(data, target="category", n_jobs=1)
    assert model.metadata["data"]["left_out_classes"] == {"legal": 2}
    assert "legal" not in model.classes
    with pytest.raises(TrainingDataError, match="at least two labels"):
        train_model(data.subset(range(10)), target="category")


def test_baseline_is_trained_and_stored_the_same_way(
    tmp_path: Path, categories: LabelledData
) -> None:
    baseline = train_model(categories, target="category", baseline=True, n_jobs=1)
    assert baseline.metadata["recipe"] == {"kind": "baseline"}
    path = save_model_file(baseline, tmp_path / "baseline.skops")
    again = load_model_file(path)
    assert again.evaluate(categories)["macro_f1"] == baseline.evaluate(categories)["macro_f1"]


def test_cross_evaluate_pools_every_fold(categories: LabelledData) -> None:
    result = cross_evaluate(categories, target="category", folds=3, n_jobs=1)
    assert result["rows"] == len(categories)
    assert len(result["folds"]) == 3
    assert sum(row["support"] for row in result["per_class"].values()) == len(categories)
    assert result["macro_f1"] > 0.85


# --- knowing when it is unsure -------------------------------------------------------------


def test_low_confidence_marks_needs_triage_instead_of_guessing(
    tmp_path: Path, category_model: TrainedModel
) -> None:
    settings = settings_for(tmp_path)
    activate(settings, category_model)
    triage = Triage.load(settings)
    assert triage is not None
    sure = triage.classify("Refund", "my invoice charge was wrong, please refund", "a@b.example")
    assert sure.category == "billing" and not sure.needs_triage
    assert sure.category_probability is not None and sure.category_probability > 0.9
    assert sure.category_model == sure.model_version == "category-1"
    unsure = triage.classify("", "xyzzy plugh", "a@b.example")
    assert unsure.category is None and unsure.needs_triage
    assert unsure.category_probability is not None
    assert unsure.category_probability < (category_model.threshold or 1.0)
    assert unsure.category_model == "category-1"
    guess = unsure.prediction("category")
    assert guess is not None and not guess.confident and guess.label in CATEGORIES


def test_fast_scorer_gives_the_pipelines_probabilities(
    category_model: TrainedModel, categories: LabelledData
) -> None:
    scorer = LinearScorer.from_pipeline(category_model.pipeline)
    assert scorer is not None
    rows = categories.rows()[:40]
    expected = category_model.pipeline.predict_proba(rows)
    got = np.vstack([scorer.proba(s, b) for s, b in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert scorer.agrees_with(category_model.pipeline)


def test_shared_vocabularies_give_each_models_own_probabilities(
    tmp_path: Path, category_model: TrainedModel, priority_model: TrainedModel
) -> None:
    settings = settings_for(tmp_path)
    activate(settings, category_model, priority_model)
    triage = Triage.load(settings)
    assert triage is not None
    scorers = [triage.models[t].scorer for t in ("category", "priority")]
    assert all(s is not None and any(b.joint is not None for b in s.blocks) for s in scorers)
    tickets = [
        *synthetic(CATEGORIES, n=20, seed=9).rows(),
        *synthetic(PRIORITIES, n=20, seed=9).rows(),
        ("سفارش دیر رسید", "فوری لطفا پیگیری کنید invoice"),
        ("", ""),
        ("zzz unknown words", "nothing any model has seen"),
    ]
    for subject, body in tickets:
        cache: dict[Any, Any] = {}  # one ticket's analysis, shared by both models
        for model in (category_model, priority_model):
            scorer = triage.models[model.target].scorer
            assert scorer is not None
            expected = model.pipeline.predict_proba(ticket_matrix([subject], [body]))[0]
            got = scorer.proba(subject, body, cache)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_triage_is_none_without_models_or_rules(tmp_path: Path) -> None:
    assert Triage.load(settings_for(tmp_path)) is None
    triage = Triage.load(settings_for(tmp_path, keywords=(("urgent", ("urgent",)),)))
    assert triage is not None and triage.models == {}
    result = triage.classify("URGENT: site down", "", "a@b.example")
    assert (result.priority, result.priority_source) == ("urgent", "rule:keyword:urgent")
    assert result.category is None and not result.needs_triage


def test_is_current_turns_false_after_a_promotion(
    tmp_path: Path, category_model: TrainedModel
) -> None:
    settings = settings_for(tmp_path)
    store = activate(settings, category_model)
    triage = Triage.load(settings)
    assert triage is not None and triage.is_current()
    store.promote(store.add(TrainedModel(category_model.pipeline, dict(category_model.metadata))))
    assert not triage.is_current()
    reloaded = Triage.load(settings)
    assert reloaded is not None and reloaded.versions == {"category": "category-2"}


# --- priority rules ------------------------------------------------------------------------


def test_persian_keyword_and_vip_domain_rules() -> None:
    rules = PriorityRules(
        TriageSettings(
            priority_levels=LEVELS,
            vip_senders=("ceo@partner.example",),
            vip_domains=("bigcorp.example",),
            vip_priority="high",
            keywords=(("urgent", ("urgent", "فوری", "as soon as possible")), ("high", ("down",))),
        )
    )
    # Arabic yeh in the mail, Persian yeh in the config: still a match.
    hit = rules.keyword("سفارش", "لطفا فوري رسیدگی کنید")
    assert hit is not None and (hit.priority, hit.source) == ("urgent", "rule:keyword:فوری")
    hit = rules.keyword("Site DOWN", "answer As Soon  As Possible")
    assert hit is not None and hit.priority == "urgent"  # the highest level wins
    assert rules.keyword("download", "nothing pressing") is None  # whole words only
    assert rules.keyword("فوریت", "") is None
    vip = rules.vip("Someone@Mail.BigCorp.example")
    assert vip is not None and (vip.priority, vip.source) == (
        "high",
        "rule:vip-domain:bigcorp.example",
    )
    vip = rules.vip("ceo@partner.example")
    assert vip is not None and vip.source == "rule:vip-sender:ceo@partner.example"
    assert rules.vip("someone@notbigcorp.example") is None


def test_priority_is_the_highest_of_rules_and_a_confident_model(
    tmp_path: Path, priority_model: TrainedModel
) -> None:
    settings = settings_for(
        tmp_path,
        priority_levels=LEVELS,
        vip_domains=("bigcorp.example",),
        vip_priority="normal",
        keywords=(("urgent", ("فوری",)),),
    )
    activate(settings, priority_model)
    triage = Triage.load(settings)
    assert triage is not None
    outage = "production outage, everything is down and blocked, critical"
    by_model = triage.classify("outage", outage, "x@bigcorp.example")
    assert (by_model.priority, by_model.priority_source) == ("high", "model")
    assert by_model.priority_model == "priority-1" and by_model.priority_probability
    by_rule = triage.classify("typo", "a minor cosmetic typo, whenever", "x@bigcorp.example")
    assert (by_rule.priority, by_rule.priority_source) == (
        "normal",
        "rule:vip-domain:bigcorp.example",
    )
    assert by_rule.priority_probability is None and by_rule.priority_model is None
    persian = triage.classify("فوری", outage, "x@example.org")
    assert (persian.priority, persian.priority_source) == ("urgent", "rule:keyword:فوری")
    unsure = triage.classify("", "xyzzy plugh", "x@example.org")
    assert unsure.priority is None and unsure.needs_triage
    rescued = triage.classify("", "xyzzy plugh", "x@bigcorp.example")
    assert rescued.priority == "normal" and not rescued.needs_triage


def test_impact_urgency_matrix_sets_the_priority(tmp_path: Path, categories: LabelledData) -> None:
    impact = train_model(
        synthetic({"wide": "everyone all company", "narrow": "me my laptop"}),
        target="impact",
        n_jobs=1,
    )
    urgency = train_model(
        synthetic({"now": "now immediately today", "later": "later next week"}, seed=9),
        target="urgency",
        n_jobs=1,
    )
    settings = settings_for(
        tmp_path,
        priority_levels=LEVELS,
        matrix=(
            ("wide", "now", "urgent"),
            ("wide", "later", "normal"),
            ("narrow", "now", "high"),
            ("narrow", "later", "low"),
        ),
    )
    activate(settings, impact, urgency)
    triage = Triage.load(settings)
    assert triage is not None and set(triage.models) == {"impact", "urgency"}
    result = triage.classify(
        "all company", "everyone is affected now, immediately today", "a@b.example"
    )
    assert result.priority == "urgent"
    assert result.priority_source == "matrix:impact=wide,urgency=now"


def test_triage_config_section(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///db.sqlite", top="")
    path.write_text(
        path.read_text(encoding="utf-8")
        + """
[triage]
target_precision = 0.95
retrain_interval_hours = 24
priority_levels = ["low", "normal", "high", "urgent"]
vip_senders = ["CEO@Partner.example"]
vip_domains = ["@bigcorp.example"]
vip_priority = "high"
[triage.keywords]
urgent = ["urgent", "فوری"]
[triage.matrix]
high = { high = "urgent", low = "normal" }
""",
        encoding="utf-8",
    )
    triage = load_settings(path).triage
    assert triage.target_precision == 0.95 and triage.retrain_interval_hours == 24
    assert triage.vip_senders == ("ceo@partner.example",)
    assert triage.vip_domains == ("bigcorp.example",)
    assert triage.keywords == (("urgent", ("urgent", "فوری")),)
    assert set(triage.matrix) == {("high", "high", "urgent"), ("high", "low", "normal")}
    assert load_settings(write_config(tmp_path, "sqlite:///db.sqlite")).triage == TriageSettings()


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("[triage]\ntarget_precison = 0.9\n", "triage.target_precison", "did you mean"),
        ("[triage]\ntarget_precision = 1.5\n", "triage.target_precision", "from 0.5"),
        ('[triage]\nvip_priority = "p0"\n', "triage.vip_priority", "one of priority_levels"),
        ('[triage.keywords]\nasap = ["now"]\n', "triage.keywords.asap", "unknown key"),
        ('[triage]\nvip_senders = ["nobody"]\n', "triage.vip_senders[0]", "not an email"),
        ('[triage.matrix]\nhigh = { low = "p9" }\n', "triage.matrix.high.low", "one of"),
    ],
)
def test_triage_config_errors_name_the_file_and_key(
    tmp_path: Path, section: str, key: str, message: str
) -> None:
    path = write_config(tmp_path, "sqlite:///db.sqlite")
    path.write_text(path.read_text(encoding="utf-8") + "\n" + section, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    assert excinfo.value.key == key
    assert message in excinfo.value.problem
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


# --- the model store -----------------------------------------------------------------------


def test_store_versions_promote_and_rollback(tmp_path: Path, category_model: TrainedModel) -> None:
    store = ModelStore(tmp_path)
    first = store.add(TrainedModel(category_model.pipeline, dict(category_model.metadata)))
    second = store.add(TrainedModel(category_model.pipeline, dict(category_model.metadata)))
    assert (first, second) == ("category-1", "category-2")
    assert store.active("category") is None
    assert store.promote(first) is None
    assert store.promote(second) == first
    assert store.active_versions() == {"category": second}
    assert store.rollback("category") == (second, first)
    assert store.active("category") == first
    with pytest.raises(ModelError, match="only category model ever made active"):
        store.rollback("category")
    with pytest.raises(ModelError, match="no model 'category-9'"):
        store.promote("category-9")
    assert store.resolve("category") == first and store.resolve(second) == second
    assert store.metadata(second)["version"] == second


def test_a_worse_model_is_kept_inactive_unless_forced(
    tmp_path: Path, category_model: TrainedModel, categories: LabelledData
) -> None:
    store = ModelStore(tmp_path)
    first = register_model(store, copy_of(category_model), categories)
    assert first.activated and first.version == "category-1"
    same = register_model(store, copy_of(category_model), categories)
    assert same.activated  # equal is not worse
    worse = copy_of(category_model)
    worse.metadata["cv"]["macro_f1"] = 0.5  # as if this one did worse on the same data
    kept = register_model(store, worse, categories)
    assert not kept.activated and store.active("category") == "category-2"
    assert "is worse than category-2's" in kept.reason and "--force" in kept.reason
    forced = register_model(store, copy_of(worse), categories, force=True)
    assert forced.activated and store.active("category") == forced.version


def test_new_data_is_compared_with_the_active_recipe_retrained_on_it(
    tmp_path: Path, category_model: TrainedModel, categories: LabelledData
) -> None:
    store = ModelStore(tmp_path)
    register_model(store, copy_of(category_model), categories)
    more = synthetic(CATEGORIES, n=180, seed=11)
    candidate = train_model(more, target="category", n_jobs=1)
    registration = register_model(store, candidate, more, n_jobs=1)
    assert registration.active_score is not None
    assert registration.activated == (registration.score + 1e-4 >= registration.active_score)


def copy_of(model: TrainedModel) -> TrainedModel:
    return TrainedModel(model.pipeline, json.loads(json.dumps(model.metadata)))


def test_skops_round_trip_without_pickle(tmp_path: Path, category_model: TrainedModel) -> None:
    path = save_model_file(category_model, tmp_path / "m.skops")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "schema.json" in names
        assert not any(name.endswith((".pkl", ".pickle")) for name in names)
        assert all(b"\x80\x04\x95" not in archive.read(n) for n in names)  # no pickle stream
    again = load_model_file(path)
    rows = ticket_matrix(["Refund"], ["invoice charge refund"])
    np.testing.assert_allclose(
        again.pipeline.predict_proba(rows), category_model.pipeline.predict_proba(rows)
    )
    assert again.metadata == category_model.metadata


def test_a_model_file_with_untrusted_types_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    path.write_bytes(sio.dumps({"format": 1, "metadata": "{}", "pipeline": os.system}))
    with pytest.raises(ModelError, match="does not trust"):
        load_model_file(path)
    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a postdesk model file"):
        load_model_file(tmp_path / "junk.skops")


# --- the database --------------------------------------------------------------------------


def add_ticket(session: Any, n: int, subject: str, body: str) -> Ticket:
    """A ticket with the customer's first message, then an agent's reply."""
    customer = Contact(email=f"c{n}@example.org")
    agent = session.execute(
        select(Contact).where(Contact.email == "agent@example.com")
    ).scalar_one_or_none() or Contact(email="agent@example.com", role="agent")
    session.add_all([customer, agent])
    session.flush()
    ticket = Ticket(subject=subject, requester_id=customer.id)
    session.add(ticket)
    session.flush()
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n)
    session.add(
        Message(
            ticket_id=ticket.id,
            contact_id=customer.id,
            direction="in",
            subject=subject,
            from_email=customer.email,
            text=f"{body}\n\n> an old quote",
            visible_text=body,
            received_at=start,
        )
    )
    session.add(
        Message(
            ticket_id=ticket.id,
            contact_id=agent.id,
            direction="in",
            subject=f"Re: {subject}",
            from_email=agent.email,
            text="AGENTREPLY we are on it",
            visible_text="AGENTREPLY we are on it",
            received_at=start + timedelta(minutes=5),
        )
    )
    return ticket


def test_from_db_training_uses_human_labels_only(
    db: Database, categories: LabelledData, category_model: TrainedModel
) -> None:
    with db.transaction() as session:
        tickets = [
            add_ticket(session, i, s, b)
            for i, (s, b) in enumerate(zip(categories.subjects, categories.bodies, strict=True))
        ]
        for i, ticket in enumerate(tickets[:60]):
            record_label(
                session.connection(),
                ticket.id,
                "category",
                categories.labels[i],
                actor="agent@example.com",
            )
        # Predictions (even confident ones) and rules are never training data.
        confident = TriageResult(
            category="billing",
            category_probability=0.99,
            category_model="category-9",
            priority="urgent",
            priority_source="rule:keyword:urgent",
            predictions=(Prediction("category", "billing", 0.99, "category-9", True),),
        )
        for ticket in tickets[60:90]:
            record_triage(session.connection(), ticket.id, confident)
        triage = Triage({"category": _loaded(category_model)}, PriorityRules(TriageSettings()))
        for ticket, body in zip(tickets[90:120], categories.bodies[90:120], strict=True):
            result = triage.classify(ticket.subject, body, "c@example.org")
            record_triage(session.connection(), ticket.id, result)
        # A person clearing a label withdraws the ticket from training.
        record_label(
            session.connection(), tickets[0].id, "category", None, actor="agent@example.com"
        )
    data = training_data_from_db(db, "category")
    assert len(data) == 59
    assert data.labels == categories.labels[1:60]
    assert data.bodies == categories.bodies[1:60]  # the visible text, no quote, no agent
    assert data.source["kind"] == "db" and data.source["tickets"] == 59
    with db.read_session() as session:
        assert set(human_labels(session, "category")) == {t.id for t in tickets[1:60]}
    with pytest.raises(TrainingDataError, match="no ticket has a priority set"):
        training_data_from_db(db, "priority")


def _loaded(model: TrainedModel) -> Any:
    from postdesk.classify.triage import LoadedModel

    return LoadedModel(model, "category-7")


def test_record_triage_and_a_human_label_update_the_ticket(
    sqlite_url: str, category_model: TrainedModel
) -> None:
    db = Database(sqlite_url)
    from postdesk.models.migrate import upgrade

    upgrade(db)
    triage = Triage(
        {"category": _loaded(category_model)},
        PriorityRules(TriageSettings(keywords=(("urgent", ("urgent",)),))),
    )
    with db.transaction() as session:
        sure = add_ticket(session, 1, "Refund", "invoice charge refund payment")
        unsure = add_ticket(session, 2, "urgent", "xyzzy plugh")
        record_triage(
            session.connection(),
            sure.id,
            triage.classify(sure.subject, "invoice charge refund payment", "c@x"),
        )
        record_triage(
            session.connection(), unsure.id, triage.classify(unsure.subject, "xyzzy plugh", "c@x")
        )
    with db.read_session() as session:
        one = session.get_one(Ticket, sure.id)
        assert (one.category, one.category_source, one.category_model) == (
            "billing",
            "model",
            "category-7",
        )
        assert one.category_probability and one.category_probability > 0.9
        assert not one.needs_triage and one.priority is None
        two = session.get_one(Ticket, unsure.id)
        assert two.category is None and two.needs_triage and two.category_model == "category-7"
        assert (two.priority, two.priority_source) == ("urgent", "rule:keyword:urgent")
        events = (
            session.execute(
                select(TicketEvent).where(
                    TicketEvent.ticket_id == unsure.id, TicketEvent.kind == "category"
                )
            )
            .scalars()
            .all()
        )
        assert events[-1].data["source"] == "model" and events[-1].data["to"] is None
        assert events[-1].data["suggestion"] in CATEGORIES and not events[-1].data["confident"]
    with db.transaction() as session:
        record_label(
            session.connection(), unsure.id, "category", "technical", actor="agent@example.com"
        )
    with db.read_session() as session:
        two = session.get_one(Ticket, unsure.id)
        assert (two.category, two.category_source, two.category_model) == (
            "technical",
            "human",
            None,
        )
        assert not two.needs_triage
    db.dispose()


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    config = write_config(tmp_path, sqlite_url)
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[triage]\nvip_domains = ["bigcorp.example"]\n',
        encoding="utf-8",
    )
    runner = Cli(config)
    runner("init")
    return runner


def test_cli_train_evaluate_predict_list_show_from_csv(
    cli: Cli, tmp_path: Path, categories: LabelledData
) -> None:
    data = write_csv(tmp_path / "tickets.csv", categories)
    out = cli("model", "train", "--csv", str(data), "--text", "title,body", "--label", "category")
    assert "category-1 is now the active category model" in out.stdout
    result = json.loads(
        cli(
            "model",
            "evaluate",
            "category",
            "--csv",
            str(data),
            "--text",
            "title,body",
            "--label",
            "category",
            "--json",
        ).stdout
    )
    assert {"macro_f1", "accuracy", "per_class", "coverage", "confusion"} <= set(result)
    assert result["model"] == "category-1" and result["rows"] == len(categories)
    assert set(result["per_class"]) == set(CATEGORIES)
    assert {"precision", "recall", "f1", "support"} == set(result["per_class"]["billing"])
    assert result["confusion"]["labels"] == sorted(CATEGORIES)
    assert 0.0 < result["coverage"] <= 1.0 and result["confident_precision"] >= 0.9
    text = cli(
        "model",
        "evaluate",
        "category",
        "--csv",
        str(data),
        "--text",
        "title,body",
        "--label",
        "category",
    ).stdout
    assert "macro-F1" in text and "confusion" in text
    predicted = json.loads(
        cli("model", "predict", "category", "refund my invoice payment", "--json").stdout
    )
    assert predicted["label"] == "billing" and predicted["needs_triage"] is False
    unsure = cli("model", "predict", "category-1", "xyzzy plugh").stdout
    assert "needs-triage" in unsure
    listed = json.loads(cli("model", "list", "--json").stdout)
    assert [(m["version"], m["active"]) for m in listed] == [("category-1", True)]
    shown = json.loads(cli("model", "show", "category-1", "--json").stdout)
    assert shown["data"]["source"]["path"] == str(data)
    assert "held-out macro-F1" in cli("model", "show", "category").stdout


def test_cli_holdout_split_and_out_file(cli: Cli, tmp_path: Path, categories: LabelledData) -> None:
    data = write_csv(tmp_path / "tickets.tsv", categories, sep="\t")
    model = tmp_path / "m.skops"
    cli(
        "model",
        "train",
        "--csv",
        str(data),
        "--text",
        "title,body",
        "--label",
        "category",
        "--holdout",
        "0.25",
        "--seed",
        "1",
        "--out",
        str(model),
    )
    meta = json.loads(cli("model", "show", str(model), "--json").stdout)
    trained_on = meta["data"]["rows"]
    assert 170 <= trained_on <= 190 and meta["data"]["source"]["part"] == "train"
    result = json.loads(
        cli(
            "model",
            "evaluate",
            str(model),
            "--csv",
            str(data),
            "--text",
            "title,body",
            "--label",
            "category",
            "--holdout",
            "0.25",
            "--seed",
            "1",
            "--json",
        ).stdout
    )
    assert result["rows"] + trained_on == 240  # the held-out part is the rest
    assert json.loads(cli("model", "list", "--json").stdout) == []  # --out bypasses the store


def test_cli_cross_validation_and_baseline(
    cli: Cli, tmp_path: Path, categories: LabelledData
) -> None:
    data = write_csv(tmp_path / "tickets.csv", categories)
    ours = json.loads(
        cli(
            "model",
            "evaluate",
            "--cv",
            "3",
            "--csv",
            str(data),
            "--text",
            "title,body",
            "--label",
            "category",
            "--json",
        ).stdout
    )
    base = json.loads(
        cli(
            "model",
            "evaluate",
            "--cv",
            "3",
            "--baseline",
            "--csv",
            str(data),
            "--text",
            "title,body",
            "--label",
            "category",
            "--json",
        ).stdout
    )
    assert ours["model"] == "postdesk" and base["model"] == "baseline"
    assert ours["cv_folds"] == 3 and len(base["folds"]) == 3


def test_cli_promote_rollback_and_force(cli: Cli, tmp_path: Path, categories: LabelledData) -> None:
    data = write_csv(tmp_path / "tickets.csv", categories)
    args = ("model", "train", "--csv", str(data), "--text", "title,body", "--label", "category")
    cli(*args)
    assert "category-2 is now the active" in cli(*args, "--baseline", "--force").stdout
    assert (
        "category-1 is now active (was category-2)" in cli("model", "promote", "category-1").stdout
    )
    assert (
        "category-2 is active again (was category-1)" in cli("model", "rollback", "category").stdout
    )
    assert cli("model", "list").stdout.splitlines()[2].split()[:2] == ["*", "category-2"]


def test_cli_errors_are_one_line(cli: Cli, tmp_path: Path, categories: LabelledData) -> None:
    data = write_csv(tmp_path / "tickets.csv", categories)
    cli(
        "model", "train", "--csv", str(data), "--text", "title,bodyx", "--label", "category", code=1
    )
    cli("model", "train", "--csv", str(data), "--label", "category", code=1)
    cli(
        "model",
        "evaluate",
        "category",
        "--csv",
        str(data),
        "--text",
        "title,body",
        "--label",
        "category",
        code=1,
    )
    cli("model", "predict", "nothing-3", "text", code=1)
    cli("model", "rollback", "category", code=1)
    cli("model", "promote", "Bad Name", code=1)
    evil = tmp_path / "evil.skops"
    evil.write_bytes(sio.dumps({"format": 1, "metadata": "{}", "pipeline": os.system}))
    result = cli("model", "predict", str(evil), "hello", code=1)
    assert "does not trust" in result.stderr


def test_cli_label_then_train_from_db(cli: Cli, categories: LabelledData) -> None:
    db = Database(load_settings(cli.config).database.url)
    with db.transaction() as session:
        ids = [
            add_ticket(session, i, s, b).id
            for i, (s, b) in enumerate(
                zip(categories.subjects[:45], categories.bodies[:45], strict=True)
            )
        ]
    db.dispose()
    cli("model", "train", "--from-db", code=1)  # nobody labelled anything yet
    seen: set[str] = set()
    for ticket_id, label in zip(ids, categories.labels, strict=False):
        # Nothing is known yet: the first label of each category adds it, on purpose.
        new = [] if label in seen else ["--new-category"]
        seen.add(label)
        cli(
            "model", "label", str(ticket_id), "--category", label, *new, "--as", "agent@example.com"
        )
    out = cli("model", "train", "--from-db").stdout
    assert "category-1 is now the active category model" in out
    assert "priority: not trained: no ticket has a priority set" in out
    meta = json.loads(cli("model", "show", "category", "--json").stdout)
    assert meta["data"]["source"]["kind"] == "db" and meta["data"]["rows"] == 45
    cli("model", "label", str(ids[0]), "--confirm")
    db = Database(load_settings(cli.config).database.url)
    with db.read_session() as session:
        events = (
            session.execute(
                select(TicketEvent.data).where(
                    TicketEvent.ticket_id == ids[0], TicketEvent.kind == "category"
                )
            )
            .scalars()
            .all()
        )
    db.dispose()
    assert events[-1] == {
        "from": categories.labels[0],
        "to": categories.labels[0],
        "source": "human",
        "confirmed": True,
    }
    cli("model", "label", "9999", "--category", "x", code=1)


def test_retrain_due_follows_the_interval(tmp_path: Path, sqlite_url: str) -> None:
    settings = settings_for(tmp_path, retrain_interval_hours=1)
    assert retrain_due(settings)
    assert not retrain_due(settings_for(tmp_path))  # 0 = never
    db = Database(settings.database.url)
    from postdesk.models.migrate import upgrade

    upgrade(db)
    outcomes = retrain_from_db(settings, db)
    db.dispose()
    assert [o.skipped is not None for o in outcomes] == [True, True]
    assert not retrain_due(settings)
    assert retrain_due(settings, datetime.now(UTC) + timedelta(hours=2))


def test_every_model_command_has_help_text() -> None:
    from postdesk.classify.cli import model

    assert model.help
    for name, command in model.commands.items():
        assert command.help and command.help.strip(), name
        result = CliRunner().invoke(main, ["model", name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("ngram_range", [(2, 5), (1, 3), (3, 3)])
def test_fast_char_wb_ngrams_are_scikit_learns(ngram_range: tuple[int, int]) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from postdesk.classify.scorer import char_wb_ngrams

    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=False)
    analyse = reference.build_analyzer()
    texts = [
        "",
        "a",
        "ab cd",
        "  spaced\t\tout \n\n words\u00a0nbsp ",
        "invoice charged twice for order 1234!",
        "سلام، سفارش من خیلی دیر رسید\u200cاست و غذا سرد بود",
        "x" * 9 + " yy " + "z",
    ]
    for text in texts:
        assert char_wb_ngrams(text, *ngram_range) == analyse(text), text
