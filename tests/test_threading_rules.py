"""Threading that only joins what belongs together (ingest/threader.py).

Header rules join a ticket only for someone on it; a stranger's reply, a reused
Message-ID, a second customer answering the same newsletter and a fresh mail with a
familiar subject each open a ticket of their own, linked to the one they pointed at.
The mailbox is configured, so the reply-to-the-list rule is on as in production.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postdesk.daemon import Service
from postdesk.ingest.textnorm import is_reply
from postdesk.models.db import Database
from postdesk.testing.cli import Cli
from postdesk.testing.config import import_mailbox_toml, settings_for
from postdesk.testing.inbox import SUPPORT_ADDRESS, ingest, mail, rule_of, ticket_of
from postdesk.testing.mail import Mail
from postdesk.tickets import show_ticket

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ALICE = "Alice <alice@example.com>"
MALLORY = "Mallory <mallory@evil.example>"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def service(db: Database, db_url: str, tmp_path: Path) -> Service:
    return Service(settings_for(tmp_path, db_url, import_mailbox_toml(SUPPORT_ADDRESS)), db)


def links_of(db: Database, number: int) -> list[dict[str, object]]:
    links: list[dict[str, object]] = show_ticket(db, number)["links"]
    return links


def test_a_strangers_reply_to_another_customers_message_opens_a_linked_ticket(
    service: Service, db: Database
) -> None:
    ingest(service, mail("a1@x", sender=ALICE, subject="My invoice", date=at(0)))
    alice = ticket_of(db, "a1@x")
    ingest(
        service,
        mail(
            "m1@x",
            sender=MALLORY,
            subject="Re: My invoice",
            reply_to="a1@x",
            references=["a1@x"],
            date=at(5),
        ),
        mail("a2@x", sender=ALICE, subject="Re: My invoice", reply_to="a1@x", date=at(10)),
    )

    stranger = ticket_of(db, "m1@x")
    assert stranger != alice
    assert rule_of(db, "m1@x") == "related"
    assert {"ticket": stranger, "kind": "related", "other": alice} in links_of(db, alice)
    assert {"ticket": stranger, "kind": "related", "other": alice} in links_of(db, stranger)
    [message] = show_ticket(db, stranger)["messages"]
    assert "mallory@evil.example is not on that ticket" in message["thread_reason"]
    # The customer's own reply still joins, and only hers is on her ticket.
    assert ticket_of(db, "a2@x") == alice
    senders = {m["from"]["email"] for m in show_ticket(db, alice)["messages"]}
    assert senders == {"alice@example.com"}


def test_a_reused_message_id_neither_joins_nor_replaces_the_message(
    service: Service, db: Database
) -> None:
    ingest(service, mail("a1@x", sender=ALICE, subject="Broken lid", body="Lid", date=at(0)))
    alice = ticket_of(db, "a1@x")
    ingest(service, mail("a1@x", sender=MALLORY, subject="Broken lid", body="Pay", date=at(5)))

    shown = show_ticket(db, alice)
    assert [(m["from"]["email"], m["text"].strip()) for m in shown["messages"]] == [
        ("alice@example.com", "Lid")
    ]
    [link] = shown["links"]
    assert link["kind"] == "related" and link["other"] == alice
    copy = show_ticket(db, int(str(link["ticket"])))["messages"]
    assert [m["from"]["email"] for m in copy] == ["mallory@evil.example"]
    assert copy[0]["thread_rule"] == "related"
    # A reply to that Message-ID still finds the customer's message, not the copy.
    ingest(service, mail("a2@x", sender=ALICE, subject="Re: Broken lid", reply_to="a1@x"))
    assert ticket_of(db, "a2@x") == alice


def test_two_customers_answering_one_newsletter_get_a_ticket_each(
    service: Service, db: Database
) -> None:
    newsletter = "spring-sale@vendor.example"  # never stored: it went to the customers
    ingest(
        service,
        mail("a1@x", sender=ALICE, subject="Re: Spring sale", reply_to=newsletter, date=at(0)),
        mail(
            "b1@x",
            sender="Bob <bob@example.org>",
            subject="Re: Spring sale",
            reply_to=newsletter,
            date=at(5),
        ),
        mail("a2@x", sender=ALICE, subject="Re: Spring sale", reply_to=newsletter, date=at(9)),
    )

    alice, bob = ticket_of(db, "a1@x"), ticket_of(db, "b1@x")
    assert alice != bob
    assert rule_of(db, "b1@x") == "related"
    assert {"ticket": bob, "kind": "related", "other": alice} in links_of(db, bob)
    # The same customer answering the newsletter again is one conversation.
    assert ticket_of(db, "a2@x") == alice
    assert rule_of(db, "a2@x") == "shared-parent"


def test_an_ancestor_deep_in_a_long_references_list_is_found(
    service: Service, db: Database
) -> None:
    """Message-IDs are looked up eight at a time (threader.CANDIDATES_AT_ONCE): a reply
    whose only known ancestor is the 22nd id it names still joins that ticket; so does a
    message whose answers, naming the same long list, arrived before it."""
    ingest(service, mail("a1@x", sender=ALICE, subject="Order 77", date=at(0)))
    alice = ticket_of(db, "a1@x")
    # Twenty ids postdesk never stored (mail between the customer and someone else),
    # then the reply: In-Reply-To the newest, References oldest first from a1@x.
    lost = [f"lost{n}@elsewhere.example" for n in range(20)]
    ingest(
        service,
        mail(
            "a2@x",
            sender=ALICE,
            subject="Where is it?",  # no subject to join by: only the headers tell
            reply_to=lost[-1],
            references=["a1@x", *lost],
            date=at(30),
        ),
    )
    assert ticket_of(db, "a2@x") == alice
    assert rule_of(db, "a2@x") == "references"
    # A message two stored ones answer, arriving after them: found by their References.
    answers = [
        mail(
            f"r{n}@x",
            sender=ALICE,
            subject="Still waiting",
            reply_to="late@x",
            references=["a1@x", *lost[:12], "late@x"],
            date=at(40 + n),
        )
        for n in range(2)
    ]
    ingest(service, *answers)
    ingest(service, mail("late@x", sender=ALICE, subject="Any news?", date=at(35)))
    assert ticket_of(db, "late@x") == alice
    assert rule_of(db, "late@x") == "referenced-by"


def test_a_ccd_colleagues_reply_joins(service: Service, db: Database) -> None:
    first = Mail(
        sender=ALICE,
        to=SUPPORT_ADDRESS,
        cc="Carol <carol@example.com>",
        subject="Order 1234 is late",
        body="Where is it?",
        date=at(0),
        message_id="a1@x",
    )
    reply = Mail(
        sender="Carol <carol@example.com>",
        to=SUPPORT_ADDRESS,
        cc=ALICE,
        subject="Re: Order 1234 is late",
        body="Any news?",
        date=at(30),
        message_id="c1@x",
        in_reply_to="a1@x",
        references=["a1@x"],
    )
    # A colleague of the same company the customer did not put on Cc is not let in.
    uncopied = Mail(
        sender="Dave <dave@example.com>",
        to=SUPPORT_ADDRESS,
        subject="Re: Order 1234 is late",
        date=at(40),
        message_id="d1@x",
        in_reply_to="a1@x",
    )
    ingest(service, bytes(first), bytes(reply), bytes(uncopied))

    assert ticket_of(db, "c1@x") == ticket_of(db, "a1@x")
    assert rule_of(db, "c1@x") == "in-reply-to"
    assert ticket_of(db, "d1@x") != ticket_of(db, "a1@x")
    assert rule_of(db, "d1@x") == "related"


def test_a_reply_to_the_list_a_conversation_runs_on_joins(service: Service, db: Database) -> None:
    post = Mail(
        sender=ALICE,
        to="users@lists.example.net",
        cc=SUPPORT_ADDRESS,
        subject="Sync fails",
        date=at(0),
        message_id="a1@x",
    )
    answer = Mail(
        sender="Erin <erin@example.net>",
        to="users@lists.example.net",
        subject="Re: Sync fails",
        date=at(20),
        message_id="e1@x",
        in_reply_to="a1@x",
    )
    # Naming only the support address is no such list.
    stranger = Mail(
        sender=MALLORY,
        to=SUPPORT_ADDRESS,
        subject="Re: Sync fails",
        date=at(30),
        message_id="m1@x",
        in_reply_to="a1@x",
    )
    ingest(service, bytes(post), bytes(answer), bytes(stranger))

    assert ticket_of(db, "e1@x") == ticket_of(db, "a1@x")
    assert ticket_of(db, "m1@x") != ticket_of(db, "a1@x")


def test_a_fresh_mail_with_a_familiar_subject_is_a_new_linked_ticket(
    service: Service, db: Database, tmp_path: Path
) -> None:
    ingest(
        service,
        mail("a1@x", sender=ALICE, subject="Refund", date=at(0)),
        # A reply from a client that drops the threading headers: matched by subject.
        mail("a2@x", sender=ALICE, subject="AW: Refund", date=at(30)),
        # The same words again, no prefix, no headers: a new request.
        mail("a3@x", sender=ALICE, subject="Refund", date=at(60)),
        mail("a4@x", sender=ALICE, subject="پاسخ: Refund", date=at(90)),
    )

    first = ticket_of(db, "a1@x")
    assert ticket_of(db, "a2@x") == first
    assert rule_of(db, "a2@x") == "subject"
    second = ticket_of(db, "a3@x")
    assert second != first
    assert rule_of(db, "a3@x") == "related"
    assert {"ticket": second, "kind": "related", "other": first} in links_of(db, second)
    # A later header-less reply goes to the most recent open ticket of that subject.
    assert ticket_of(db, "a4@x") == second
    # `tickets show` lists the link on both sides.
    cli = Cli(tmp_path / "postdesk.toml")
    assert f"Related to #{first}\n" in cli("tickets", "show", str(second)).output
    assert f"Related to #{second}\n" in cli("tickets", "show", str(first)).output


def test_reply_headers_that_lead_somewhere_keep_the_subject_rule_out(
    service: Service, db: Database
) -> None:
    """A stranger's Re: with the customer's subject, refused on its headers, does not get
    in through the subject rule either (it is not theirs anyway: a new contact)."""
    ingest(service, mail("a1@x", sender=ALICE, subject="Refund", date=at(0)))
    ingest(
        service,
        mail("m1@x", sender=MALLORY, subject="Re: Refund", reply_to="a1@x", date=at(5)),
        mail("m2@x", sender=MALLORY, subject="Re: Refund", reply_to="a1@x", date=at(6)),
    )
    assert ticket_of(db, "m1@x") != ticket_of(db, "a1@x")
    # Mallory's second message answers Alice's, whose ticket Mallory is still not on.
    assert ticket_of(db, "m2@x") != ticket_of(db, "a1@x")


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Re: Refund", True),
        ("AW: Refund", True),
        ("پاسخ: بازپرداخت", True),
        ("[#12] RE[2]: Refund", True),
        ("Refund", False),
        ("Fwd: Refund", False),
        ("Regarding my refund", False),
    ],
)
def test_reply_prefixes(subject: str, reply: bool) -> None:
    assert is_reply(subject) is reply


def test_the_subject_rule_seeks_its_index_on_sqlite(sqlite_url: str) -> None:
    """The rule's lookup uses (requester_id, subject_key, last_message_at): a plan on
    (requester_id, last_message_at) would walk all of a requester's recent tickets,
    which grows with the mailbox for a shared address."""
    from postdesk.ingest.threader import _SAME_SUBJECT
    from postdesk.models.migrate import upgrade

    db = Database(sqlite_url)
    upgrade(db)
    try:
        with db.engine.connect() as conn:
            sql = _SAME_SUBJECT._for(conn.dialect).sql
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(
                "EXPLAIN QUERY PLAN " + sql,
                (1, "key", "solved", "closed", "2026-01-01 00:00:00.000000", 1, 0),
            )
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    finally:
        db.dispose()
    assert "subject_key=?" in plan, plan
