"""Triage on public data nobody here wrote: Persian customer comments and multilingual
helpdesk tickets. Deliberately modest (subsets, one model each, about 20 s in all); the
full comparison with the baseline is bench/classify.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from postdesk.classify.data import grouped_holdout_split, read_csv
from postdesk.classify.store import ModelStore
from postdesk.classify.training import train_model
from postdesk.classify.triage import Triage
from postdesk.cli import main
from postdesk.config import DatabaseSettings, Settings, TriageSettings
from postdesk.testing.corpora import require_corpus

# Training on the real corpora takes minutes: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

TO_ARABIC_SPELLING = str.maketrans(
    {"ی": "ي", "ک": "ك", **{str(d): chr(0x06F0 + d) for d in range(10)}}
)


def test_persian_comments_confident_predictions_reach_the_target_precision(
    tmp_path: Path,
) -> None:
    corpus = require_corpus("persian-snappfood-comments")
    train = read_csv(corpus / "dev.csv", ["comment"], "label")
    test = read_csv(corpus / "test.csv", ["comment"], "label")
    train = train.subset(range(0, len(train), 2))
    test = test.subset(range(0, len(test), 3))
    model = train_model(train, target="category", target_precision=0.9)
    result = model.evaluate(test)
    assert result["macro_f1"] > 0.8
    assert result["coverage"] > 0.5
    assert result["confident_precision"] >= 0.88  # 0.9 on held-out data, less sampling noise

    store = ModelStore(tmp_path)
    store.promote(store.add(model))
    settings = Settings(
        path=tmp_path / "postdesk.toml",
        data_dir=tmp_path,
        database=DatabaseSettings(url="sqlite:///:memory:"),
        triage=TriageSettings(keywords=(("urgent", ("فوری",)),)),
    )
    triage = Triage.load(settings)
    assert triage is not None
    for comment in test.bodies[:50]:
        # The same comment typed on an Arabic keyboard with Persian digits: same result.
        typed = triage.classify("", comment.translate(TO_ARABIC_SPELLING), "a@example.org")
        plain = triage.classify("", comment, "a@example.org")
        assert (typed.category, typed.needs_triage) == (plain.category, plain.needs_triage)
        assert typed.category_probability == pytest.approx(plain.category_probability)
    rushed = triage.classify("", "لطفا فوري بفرستيد، غذا سرد بود", "a@example.org")
    assert (rushed.priority, rushed.priority_source) == ("urgent", "rule:keyword:فوری")


def test_multilingual_tickets_through_the_cli(tmp_path: Path) -> None:
    corpus = require_corpus("tickets-multilang-helpdesk")
    # Every other ticket (about 780, five languages), to keep the test short.
    with (corpus / "helpdesk_customer_multi_lang_tickets.csv").open(
        encoding="utf-8", newline=""
    ) as handle:
        rows = list(csv.DictReader(handle))[::2]
    data = tmp_path / "tickets.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "answer", "type"])
        writer.writerows([r["subject"], r["body"], r["answer"], r["type"]] for r in rows)
    out = tmp_path / "type.skops"
    common = ["--csv", str(data), "--text", "subject,body", "--label", "type"]
    split = ["--holdout", "0.2", "--seed", "1"]
    runner = CliRunner()
    trained = runner.invoke(main, ["model", "train", *common, *split, "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(main, ["model", "evaluate", str(out), *common, *split, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    _, held_out = grouped_holdout_split(read_csv(data, ["subject", "body"], "type"), 0.2, 1)
    assert result["rows"] == len(held_out)
    assert set(result["per_class"]) == {"Change", "Incident", "Problem", "Request"}
    assert result["macro_f1"] > 0.6
    # Measured on tickets unlike the training ones (near-duplicates kept on one side), a
    # model of half this small set may find no region where type reaches precision 0.9;
    # then it claims none, and where it claims one, it holds.
    if result["threshold"] is None:
        assert result["coverage"] == 0.0 and result["confident_precision"] is None
    else:
        assert result["confident_precision"] >= 0.85
