"""Benchmark: triage models on the public corpora, next to the plain baseline, in one run.

For every dataset and target, postdesk's model and the plain baseline (TF-IDF word
1-2-grams + char 2-5-grams, LogisticRegression with balanced class weights, defaults
otherwise) are trained and measured the same way, through the functions behind
`postdesk model train` / `evaluate`:

- tickets-endava-it, category and ticket_type: a grouped 80/20 split, seed 1
  (`data.grouped_holdout_split`: stratified by label, near-duplicate tickets never on
  both sides);
- tickets-multilang-helpdesk (the multilingual file), queue, priority and type: a
  grouped 80/20 split, seed 1 (about 40% of these tickets have a near-copy or
  translation, which random splits would put on both sides);
- persian-snappfood-comments: train on dev.csv, evaluate on test.csv (separate files,
  no comment in both);
- intents-bitext-customer-support, category: grouped 80/20 split, seed 1.

None of these sets has ticket times (no date column in any of the files), so no split
here is time-ordered; `postdesk model train --from-db` and CSVs given `--time COL` are
checked on a time-ordered split (see the README's Triage section). Every model is tuned
only on its training part (grouped folds inside it); the held-out part is scored once.
The verdict asks postdesk to be ahead by MARGIN (0.02) macro-F1 and its confident
predictions to reach the target precision. Where the baseline is at the ceiling
(macro-F1 >= CEILING, 0.97), being 0.02 ahead is impossible or close to it; there the
rule is "not worse than the baseline", and the verdict says "at the ceiling".

Columns: macro-F1 and accuracy on held-out data; coverage = share of held-out tickets
whose prediction reaches the model's confidence threshold (chosen at training time for
the target precision, 0.9); precision = how many of those confident predictions are
right (it must reach the target precision); train s = training time.

`--seed N` draws the grouped 80/20 splits (and the training folds inside them) with
another seed; seed 1 is the published table. A change is kept only if it holds on
another seed too: settings are never chosen by the held-out scores printed here.
Snappfood's split is fixed by its files (the seed moves only its training folds). The
Bitext intents' templated utterances chain into one near-duplicate group of about 96% of
the rows at similarity 0.5; `near_duplicate_groups` splits a group of more than 2% of
the rows again by stricter similarity (exact copies never), so the split holds out a
usual 20% (4,322 utterances) and the training folds are balanced. Those held-out
utterances are other wordings of templates trained on, which both models get nearly
all right.

Then, in the same run: the training time of postdesk's model on the largest dataset (all
of it), the time to triage one ticket as the mail pipeline does (`Triage.classify`
with a category and a priority model from a model store, plus keyword and VIP rules), and
the pipeline itself: 1,000 tickets imported as mail with and without those models active,
the difference per ticket and the triage call timed inside the file step.

    .venv/bin/python bench/classify.py [--only NAME] [--seed N] [--accuracy-only | --latency-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postdesk.classify.data import LabelledData, grouped_holdout_split, read_csv
from postdesk.classify.store import ModelStore
from postdesk.classify.training import train_model
from postdesk.classify.triage import Triage
from postdesk.config import DatabaseSettings, Settings, TriageSettings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ENDAVA = SHARED_DATA / "tickets-endava-it" / "all_tickets_first5431.csv"
MULTILANG = SHARED_DATA / "tickets-multilang-helpdesk" / "helpdesk_customer_multi_lang_tickets.csv"
SNAPPFOOD = SHARED_DATA / "persian-snappfood-comments"
BITEXT = SHARED_DATA / "intents-bitext-customer-support" / "TrainingdatasetBitextsample.csv"
TARGET_PRECISION = 0.9
MARGIN = 0.02
# At the ceiling: a baseline at or above this macro-F1 leaves no room to be MARGIN ahead
# (0.991 + 0.02 is more than 1; 0.975 + 0.02 would mean 4 errors in 5 gone). There the
# criterion is "not worse than the baseline", and the table says which rule applied.
CEILING = 0.97


@dataclass
class Row:
    dataset: str
    target: str
    protocol: str
    model: str
    result: dict[str, Any]
    seconds: float


# The split seed (`--seed`): the grouped 80/20 splits and the training folds inside them.
# Seed 1 is the published table; another seed checks that a change generalises beyond
# the one split it was first measured on.
DEFAULT_SEED = 1
SEED = DEFAULT_SEED


def _holdout(path: Path, text: list[str], label: str) -> tuple[LabelledData, LabelledData]:
    data = read_csv(path, text, label)
    train, test = grouped_holdout_split(data, 0.2, SEED)
    return data.subset(train), data.subset(test)


def _train_test(
    name: str, target: str, protocol: str, train: LabelledData, test: LabelledData, seed: int
) -> list[Row]:
    rows = []
    for baseline in (True, False):
        started = time.perf_counter()
        model = train_model(
            train, target=target, baseline=baseline, target_precision=TARGET_PRECISION, seed=seed
        )
        seconds = time.perf_counter() - started
        kind = "baseline" if baseline else "postdesk"
        result = model.evaluate(test)
        print(
            f"... {name} {target} {kind}: macro-F1 {result['macro_f1']:.4f} ({seconds:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        rows.append(Row(name, target, protocol, kind, result, seconds))
    return rows


def endava() -> list[Row]:
    rows = []
    for label in ("category", "ticket_type"):
        train, test = _holdout(ENDAVA, ["title", "body"], label)
        # `train --holdout 0.2 --seed 1` uses the seed for the split and the folds alike.
        rows += _train_test("tickets-endava-it", label, "grouped 80/20", train, test, seed=SEED)
    return rows


def multilang() -> list[Row]:
    rows = []
    for label in ("queue", "priority", "type"):
        train, test = _holdout(MULTILANG, ["subject", "body"], label)
        rows += _train_test(
            "tickets-multilang-helpdesk", label, "grouped 80/20", train, test, seed=SEED
        )
    return rows


def snappfood() -> list[Row]:
    train = read_csv(SNAPPFOOD / "dev.csv", ["comment"], "label")
    test = read_csv(SNAPPFOOD / "test.csv", ["comment"], "label")
    # The files fix the split; the seed only moves the training folds (0 for seed 1, as
    # the published table was measured).
    folds = 0 if SEED == DEFAULT_SEED else SEED
    return _train_test(
        "persian-snappfood-comments", "label", "dev -> test", train, test, seed=folds
    )


def bitext() -> list[Row]:
    train, test = _holdout(BITEXT, ["utterance"], "category")
    return _train_test(
        "intents-bitext-customer-sup", "category", "grouped 80/20", train, test, seed=SEED
    )


DATASETS: dict[str, Callable[[], list[Row]]] = {
    "endava": endava,
    "multilang": multilang,
    "snappfood": snappfood,
    "bitext": bitext,
}


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.4f}"


def print_table(rows: list[Row]) -> bool:
    """Print the comparison; True if postdesk beats the baseline everywhere and its
    confident predictions reach the target precision."""
    header = (
        f"{'dataset':<27} {'target':<12} {'protocol':<13} {'model':<9} "
        f"{'macro-F1':>8} {'accuracy':>8} {'coverage':>8} {'precision':>9} {'train s':>8}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    baseline_f1: dict[tuple[str, str], float] = {}
    for row in rows:
        r = row.result
        verdict = ""
        if row.model == "baseline":
            baseline_f1[(row.dataset, row.target)] = r["macro_f1"]
        else:
            base = baseline_f1.get((row.dataset, row.target), 1.0)
            ceiling = base >= CEILING
            beats = r["macro_f1"] >= base + (0.0 if ceiling else MARGIN)
            precise = r["confident_precision"] is None or (
                r["confident_precision"] >= TARGET_PRECISION
            )
            ok &= beats and precise
            ahead = r["macro_f1"] - base
            if ceiling:
                said = "at the ceiling, not worse" if beats else "at the ceiling, WORSE"
            else:
                said = "ahead" if beats else f"NOT ahead by {MARGIN}"
            verdict = f"  {ahead:+.4f} {said}" + ("" if precise else ", precision BELOW target")
        print(
            f"{row.dataset:<27} {row.target:<12} {row.protocol:<13} {row.model:<9} "
            f"{r['macro_f1']:>8.4f} {r['accuracy']:>8.4f} {_fmt(r['coverage']):>8} "
            f"{_fmt(r['confident_precision']):>9} {row.seconds:>8.1f}{verdict}"
        )
    return ok


def training_time() -> tuple[str, int, float]:
    """Training postdesk's model on all of the largest dataset (by text volume)."""
    candidates = {
        "tickets-endava-it category": read_csv(ENDAVA, ["title", "body"], "category"),
        "tickets-multilang-helpdesk queue": read_csv(MULTILANG, ["subject", "body"], "queue"),
        "persian-snappfood-comments dev+test": _snappfood_all(),
    }

    def volume(d: LabelledData) -> int:
        return sum(len(s) + len(b) for s, b in zip(d.subjects, d.bodies, strict=True))

    name, data = max(candidates.items(), key=lambda kv: volume(kv[1]))
    started = time.perf_counter()
    train_model(data, target="bench", target_precision=TARGET_PRECISION)
    return name, len(data), time.perf_counter() - started


def _snappfood_all() -> LabelledData:
    dev = read_csv(SNAPPFOOD / "dev.csv", ["comment"], "label")
    test = read_csv(SNAPPFOOD / "test.csv", ["comment"], "label")
    return LabelledData(
        dev.subjects + test.subjects, dev.bodies + test.bodies, dev.labels + test.labels
    )


def latency() -> tuple[float, float, float, dict[str, str]]:
    """(median, p99, max) milliseconds of Triage.classify for one ticket, and the models."""
    queue = read_csv(MULTILANG, ["subject", "body"], "queue")
    priority = read_csv(MULTILANG, ["subject", "body"], "priority")
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp)
        for data, target in ((queue, "category"), (priority, "priority")):
            version = store.add(train_model(data, target=target))
            store.promote(version)
        settings = Settings(
            path=Path(tmp) / "postdesk.toml",
            data_dir=Path(tmp),
            database=DatabaseSettings(url="sqlite:///:memory:"),
            triage=TriageSettings(
                vip_domains=("bigcorp.example",),
                keywords=(("urgent", ("urgent", "asap", "فوری")),),
                priority_levels=("low", "medium", "high", "urgent"),
            ),
        )
        triage = Triage.load(settings)
        assert triage is not None
        tickets = list(zip(queue.subjects, queue.bodies, strict=True))
        for subject, body in tickets[:50]:  # warm up
            triage.classify(subject, body, "someone@example.com")
        times = []
        for subject, body in tickets:
            started = time.perf_counter()
            triage.classify(subject, body, "someone@example.com")
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times), p99, times[-1], triage.versions


def pipeline_cost(n: int = 1000) -> tuple[int, float, float, float]:
    """The same `n` tickets (multilang subjects and bodies, as mail) imported through the
    whole pipeline with no model and with category and priority models active:
    (tickets, seconds without, seconds with, median ms of the triage step per new
    ticket: the models' call and writing what they decided)."""
    from email.message import EmailMessage

    from postdesk.classify.step import TriageStep
    from postdesk.daemon import Service, import_messages
    from postdesk.ingest.sources import ImportedMessage
    from postdesk.models.db import Database
    from postdesk.models.migrate import upgrade

    queue = read_csv(MULTILANG, ["subject", "body"], "queue")
    priority = read_csv(MULTILANG, ["subject", "body"], "priority")
    mails = []
    for i, (subject, body) in enumerate(zip(queue.subjects[:n], queue.bodies[:n], strict=True)):
        msg = EmailMessage()
        msg["From"] = f"customer{i}@example.com"
        msg["To"] = "support@example.com"
        msg["Subject"] = " ".join(subject.split()) or "(none)"
        msg["Message-ID"] = f"<bench{i}@example.com>"
        msg.set_content(body)
        mails.append(ImportedMessage(f"bench {i}", bytes(msg)))
    calls: list[float] = []
    original = TriageStep.__call__

    def timed_step(self: TriageStep, item: Any) -> None:
        started = time.perf_counter()
        try:
            original(self, item)
        finally:
            if item.opened is not None and self._triage is not None:
                calls.append((time.perf_counter() - started) * 1000)

    seconds = []
    for with_models in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                path=Path(tmp) / "postdesk.toml",
                data_dir=Path(tmp),
                database=DatabaseSettings(url=f"sqlite:///{tmp}/postdesk.db"),
            )
            if with_models:
                store = ModelStore(tmp)
                for data, target in ((queue, "category"), (priority, "priority")):
                    store.promote(store.add(train_model(data, target=target)))
            db = Database(settings.database.url)
            upgrade(db)
            service = Service(settings, db)
            service.triage.refresh()  # load the models before the clock starts
            TriageStep.__call__ = timed_step  # type: ignore[method-assign]
            try:
                started = time.perf_counter()
                result = import_messages(service, mails)
                seconds.append(time.perf_counter() - started)
            finally:
                TriageStep.__call__ = original  # type: ignore[method-assign]
                db.dispose()
            assert result.processed.created == n, result.processed
    return n, seconds[0], seconds[1], statistics.median(calls) if calls else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(DATASETS), action="append")
    parser.add_argument("--latency-only", action="store_true", help="skip the accuracy table")
    parser.add_argument(
        "--accuracy-only", action="store_true", help="skip training time and latency"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"split seed (default {DEFAULT_SEED}, the published table)",
    )
    args = parser.parse_args()
    global SEED
    SEED = args.seed
    print(f"split seed {SEED}", file=sys.stderr, flush=True)
    if not SHARED_DATA.is_dir():
        print(f"the public corpora are not at {SHARED_DATA}; nothing to measure")
        return 1
    ok = True
    if not args.latency_only:
        rows: list[Row] = []
        for name in args.only or list(DATASETS):
            print(f"... {name}", file=sys.stderr, flush=True)
            rows += DATASETS[name]()
        print()
        ok = print_table(rows)
        print()
    if args.accuracy_only:
        print("accuracy criteria met" if ok else "SOME CRITERION NOT MET")
        return 0 if ok else 1
    name, count, seconds = training_time()
    print(f"training on the largest dataset ({name}, {count} tickets): {seconds:.1f} s")
    median, p99, worst, versions = latency()
    models = ", ".join(f"{t}={v}" for t, v in versions.items())
    print(
        f"one ticket through Triage.classify ({models}, rules on): "
        f"median {median:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms"
    )
    count, without, with_models, call = pipeline_cost()
    extra = (with_models - without) / count * 1000
    print(
        f"the pipeline, {count} new tickets imported as mail: {without:.2f} s without a model, "
        f"{with_models:.2f} s with category and priority models ({extra:.2f} ms more per "
        f"ticket; the triage step: median {call:.2f} ms)"
    )
    # The criterion: training under a minute; one ticket's prediction under 5 ms, for
    # the median and the 99th percentile of the calls, and on average in the pipeline.
    ok &= seconds < 60 and median < 5 and p99 < 5 and call < 5 and extra < 5
    print("all criteria met" if ok else "SOME CRITERION NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
