"""Benchmark: pairwise threading precision and recall, generated and real mail.

Imports, each into a fresh SQLite database, and compares the tickets with the truth:

- generated support mail (postdesk.testing.threadgen: replies with and without headers,
  a customer's fresh mail with a familiar subject, Cc'd colleagues, strangers, answers to
  a newsletter), with the wrong decisions counted by situation;
- notmuch's test corpora (../shared/data/threading-notmuch: mailing-list threads with
  notmuch's own threading as the truth), per corpus.

A pair is two messages; it is "found" when they share a ticket and "true" when they share
a conversation. Precision = found and true / found; recall = found and true / true.
To compare with another version of postdesk, run the same file with PYTHONPATH pointing at
that checkout (with postdesk/testing/threadgen.py copied in, if it predates it).

    .venv/bin/python bench/thread_pairs.py [--messages 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from postdesk.daemon import Service, import_messages
from postdesk.ingest.sources import ImportedMessage, read_messages
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.testing.config import import_mailbox_toml, settings_for
from postdesk.testing.threadgen import SUPPORT, generate_threads
from postdesk.tickets import list_tickets

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pairs(groups: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    out: set[frozenset[str]] = set()
    for group in groups:
        members = sorted(set(group))
        out.update(frozenset((a, b)) for i, a in enumerate(members) for b in members[i + 1 :])
    return out


def _import(messages: list[ImportedMessage]) -> list[set[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        db = Database(url)
        upgrade(db)
        try:
            import_messages(
                Service(settings_for(Path(tmp), url, import_mailbox_toml(SUPPORT)), db), messages
            )
            return [set(t["message_ids"]) for t in list_tickets(db)]
        finally:
            db.dispose()


def _score(name: str, truth: list[set[str]], found: list[set[str]]) -> tuple[set, set]:
    want, got = _pairs(truth), _pairs(found)
    both = len(want & got)
    precision = both / len(got) if got else 1.0
    recall = both / len(want) if want else 1.0
    print(
        f"{name:<22} precision {precision:.4f}  recall {recall:.4f}  "
        f"({len(want)} true pairs, {len(got)} found, {len(found)} tickets for {len(truth)})"
    )
    return want, got


def generated(count: int, seed: int) -> None:
    mails = list(generate_threads(count, seed=seed))
    by_thread: dict[int, set[str]] = {}
    situation = {m.message_id: m.situation for m in mails}
    for m in mails:
        by_thread.setdefault(m.thread, set()).add(m.message_id)
    found = _import([ImportedMessage(f"gen/{m.message_id}", m.raw) for m in mails])
    want, got = _score(f"generated ({count})", list(by_thread.values()), found)
    # Which situation the later message of each wrong pair was in.
    order = {m.message_id: n for n, m in enumerate(mails)}
    joined: Counter[str] = Counter()
    split: Counter[str] = Counter()
    for pair in got - want:
        joined[situation[max(pair, key=order.__getitem__)]] += 1
    for pair in want - got:
        split[situation[max(pair, key=order.__getitem__)]] += 1
    print(f"  situations: {dict(sorted(Counter(situation.values()).items()))}")
    print(f"  wrongly joined pairs by situation: {dict(joined)}")
    print(f"  wrongly split pairs by situation: {dict(split)}")


def notmuch() -> None:
    root = SHARED_DATA / "threading-notmuch"
    if not root.is_dir():
        print(f"notmuch corpora not found at {root}: skipped")
        return
    corpora = json.loads((root / "threads_ground_truth.json").read_text("utf-8"))["corpora"]
    all_truth: list[set[str]] = []
    all_found: list[set[str]] = []
    for corpus, data in corpora.items():
        truth = [{m["message_id"] for m in t["messages"]} for t in data["threads"]]
        found = _import(list(read_messages(root / corpus)))
        _score(f"notmuch {corpus}", truth, found)
        all_truth += truth
        all_found += found
    _score("notmuch (all)", all_truth, all_found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    generated(args.messages, args.seed)
    notmuch()


if __name__ == "__main__":
    main()
