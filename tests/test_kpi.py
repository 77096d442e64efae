"""`postdesk kpi` (issue 13, criterion 4): the figures of a small fixed ticket history,
built from imported mail with Date headers and status changes made with `tickets set`,
match values computed by hand, including a first response across a weekend in business
time, on SQLite and PostgreSQL.

The calendar is Monday-Friday 09:00-17:00 UTC, so business seconds are easy to count.
March 2026: Monday the 2nd to Sunday the 15th is the period (`--until` 2026-03-15 takes
the whole day, so "as of" is Monday 16 March 00:00 UTC).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.mail import Mail
from postdesk.tickets.lifecycle import record_csat

SUPPORT = "support@support.example"
SARA = "sara@agents.example"
REZA = "reza@agents.example"
MAILBOX = (
    f'[[mailbox]]\nname = "support"\naddress = "{SUPPORT}"\n'
    'host = "127.0.0.1"\nport = 1\nsecurity = "none"\nusername = "u"\npassword = "p"\n'
    'calendar = "office"\n'
)
AGENTS = (
    f'[[agent]]\nemail = "{SARA}"\nname = "Sara"\n\n[[agent]]\nemail = "{REZA}"\nname = "Reza"\n'
)
SLA = """
[sla]
default_priority = "normal"

[sla.targets]
urgent = { first_response = "1h", resolution = "4h" }
high   = { first_response = "2h", resolution = "8h" }
normal = { first_response = "4h", resolution = "16h" }
low    = { first_response = "8h", resolution = "40h" }

[calendar.office]
timezone = "UTC"
week = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
"""  # noqa: E501
PERIOD = ("--since", "2026-03-02", "--until", "2026-03-15")


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def mail(mid: str, when: datetime, sender: str, reply_to: str | None = None) -> bytes:
    return bytes(
        Mail(
            sender=sender,
            to=SUPPORT,
            subject=f"Question {mid.split('@')[0]}",
            body="Hello.",
            date=when,
            message_id=mid,
            in_reply_to=reply_to,
            references=(reply_to,) if reply_to else (),
        )
    )


class History:
    """Imports mail and changes statuses with the lifecycle's clock set to a fixed time."""

    def __init__(self, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cli, self.tmp_path, self.monkeypatch = cli, tmp_path, monkeypatch
        self.batches = 0

    def imported(self, *raws: bytes) -> None:
        self.batches += 1
        folder = self.tmp_path / f"mail{self.batches}"
        folder.mkdir()
        for i, raw in enumerate(raws):
            (folder / f"{i}.eml").write_bytes(raw)
        self.cli("import", str(folder), "--mailbox", "support")

    def number(self, mid: str) -> int:
        for row in self.cli.json("tickets", "list"):
            if mid in row["message_ids"]:
                return int(row["number"])
        raise AssertionError(mid)

    def set(self, number: int, when: datetime, *args: str) -> None:
        self.monkeypatch.setattr("postdesk.tickets.lifecycle.utcnow", lambda: when)
        self.cli("tickets", "set", str(number), *args)
        self.monkeypatch.undo()

    def csat(self, number: int, score: int, when: datetime) -> None:
        db = self.cli.database()
        try:
            with db.transaction() as session:
                record_csat(session.connection(), number, score, "", actor="x", at=when)
        finally:
            db.dispose()


ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
DAVE, ERIN, FRANK, GINA = (f"{n}@example.com" for n in ("dave", "erin", "frank", "gina"))


@pytest.fixture
def history(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[History]:
    cli = Cli(write_config(tmp_path, db_url, MAILBOX, AGENTS, SLA))
    cli("init")
    h = History(cli, tmp_path, monkeypatch)
    # E (before the period, never answered): backlog > 30 days.
    # B: Mon 2 Mar 09:00, Sara answers at 10:00 and again at 12:00 after Bob's follow-up.
    h.imported(
        mail("e1@example.com", at(1, 10, month=2), ERIN),
        mail("b1@example.com", at(2, 9), BOB),
        mail("b2@example.com", at(2, 10), SARA, "b1@example.com"),
        mail("b3@example.com", at(2, 11), BOB, "b2@example.com"),
        mail("b4@example.com", at(2, 12), SARA, "b3@example.com"),
    )
    b = h.number("b1@example.com")
    h.set(b, at(2, 13), "--status", "solved", "--assign", REZA)
    # Bob writes again on Tuesday 09:00: reopened; solved again at 10:00.
    h.imported(
        mail("b5@example.com", at(3, 9), BOB, "b4@example.com"),
        mail("c1@example.com", at(3, 9), CAROL),  # C: never answered
    )
    h.set(b, at(3, 10), "--status", "solved")
    # A: Friday 6 Mar 16:00, answered on Monday 9 Mar 10:00, solved at 11:00.
    h.imported(
        mail("a1@example.com", at(6, 16), ALICE),
        mail("a2@example.com", at(9, 10), SARA, "a1@example.com"),
    )
    a = h.number("a1@example.com")
    h.set(a, at(9, 11), "--status", "solved", "--assign", SARA)
    h.csat(a, 3, at(10, 12))
    # F: Tue 10 Mar 09:00, answered 09:30, solved 10:00, CSAT 5.
    h.imported(
        mail("f1@example.com", at(10, 9), FRANK),
        mail("f2@example.com", at(10, 9, 30), SARA, "f1@example.com"),
    )
    f = h.number("f1@example.com")
    h.set(f, at(10, 10), "--status", "solved", "--assign", SARA)
    h.csat(f, 5, at(11, 8))
    # D: Friday 13 Mar 17:30, after hours; G: Sunday 15 Mar 12:00. Both unanswered.
    h.imported(
        mail("d1@example.com", at(13, 17, 30), DAVE), mail("g1@example.com", at(15, 12), GINA)
    )
    yield h


def test_kpi_figures_match_the_hand_computed_values(history: History) -> None:
    report = history.cli.json("kpi", *PERIOD)
    assert set(report) == {
        "volume",
        "first_response",
        "resolution",
        "one_touch_rate",
        "reopen_rate",
        "sla_breach_rate",
        "backlog",
        "csat",
        "by_queue",
        "by_agent",
    }
    # Created in the period: A, B, C, D, F, G (E is from February).
    assert report["volume"] == 6
    # Answered: F 30 min, B 1 h, A Fri 16:00 -> Mon 10:00 = 66 h in calendar time, but in
    # business time only Fri 16-17 and Mon 9-10: 2 h. The weekend does not count.
    # Percentiles: numpy linear; p90 of 3 values is at rank 1.8: x1 + 0.8 (x2 - x1).
    assert report["first_response"] == {
        "n": 3,
        "median_s": 3600.0,
        "p90_s": 3600 + 0.8 * (66 * 3600 - 3600),  # 190800
        "median_business_s": 3600.0,
        "p90_business_s": 3600 + 0.8 * (7200 - 3600),  # 6480
    }
    # Solved in the period (last solve): F 1 h (1 h business); B Mon 09:00 -> Tue 10:00
    # = 25 h (Mon 8 h + Tue 1 h = 9 h business); A Fri 16:00 -> Mon 11:00 = 67 h (3 h).
    assert report["resolution"] == {
        "n": 3,
        "median_s": 25 * 3600.0,
        "p90_s": 25 * 3600 + 0.8 * (67 * 3600 - 25 * 3600),  # 210960
        "median_business_s": 3 * 3600.0,
        "p90_business_s": 3 * 3600 + 0.8 * (9 * 3600 - 3 * 3600),  # 28080
    }
    # A and F had one reply, B two.
    assert report["one_touch_rate"] == round(2 / 3, 4)
    # Of A, B, F (first solved in the period) B was reopened.
    assert report["reopen_rate"] == round(1 / 3, 4)
    # Normal: 4 h to the first response. C (Tue 09:00, never answered) breached at 13:00;
    # D (Fri 17:30) and G (Sunday) have had no business time yet by Monday 00:00.
    assert report["sla_breach_rate"] == round(1 / 6, 4)
    # Open at Mon 16 Mar 00:00: G 12 h, D 2 d 6.5 h, C 12 d 15 h, E 43 d 14 h.
    assert report["backlog"] == {"lt_1d": 1, "1d_7d": 1, "7d_30d": 1, "gt_30d": 1, "total": 4}
    assert report["csat"] == {"responses": 2, "mean": 4.0, "share_4_5": 0.5}

    assert list(report["by_queue"]) == ["support"]
    assert report["by_queue"]["support"] == {
        k: v for k, v in report.items() if k not in ("by_queue", "by_agent")
    }
    agents = report["by_agent"]
    assert sorted(agents) == ["-", REZA, SARA]
    sara, reza, nobody = agents[SARA], agents[REZA], agents["-"]
    assert (sara["volume"], reza["volume"], nobody["volume"]) == (2, 1, 3)
    assert sara["first_response"]["median_s"] == (1800 + 66 * 3600) / 2
    assert sara["first_response"]["median_business_s"] == (1800 + 7200) / 2
    assert (sara["one_touch_rate"], reza["one_touch_rate"]) == (1.0, 0.0)
    assert (sara["reopen_rate"], reza["reopen_rate"]) == (0.0, 1.0)
    assert nobody["backlog"]["total"] == 4
    assert nobody["sla_breach_rate"] == round(1 / 3, 4)
    assert nobody["first_response"]["median_s"] is None
    assert sara["csat"] == {"responses": 2, "mean": 4.0, "share_4_5": 0.5}

    # --agent narrows every figure to that agent's tickets.
    only_reza = history.cli.json("kpi", *PERIOD, "--agent", REZA)
    assert only_reza["volume"] == 1
    assert only_reza["resolution"]["median_business_s"] == 9 * 3600
    assert list(only_reza["by_agent"]) == [REZA]


def test_an_earlier_period_reads_the_history_as_it_stood(history: History) -> None:
    # The first week only (Mon 2 - Sun 8 March; as of Mon 9 Mar 00:00): B and C created,
    # A too (Friday); B solved (reopened and solved again on Tuesday, in the week).
    report = history.cli.json("kpi", "--since", "2026-03-02", "--until", "2026-03-08")
    assert report["volume"] == 3
    assert report["first_response"]["n"] == 1  # A's answer came on the 9th
    assert report["resolution"]["median_s"] == 25 * 3600
    assert report["reopen_rate"] == 1.0
    # Open then: A (2 d 8 h), C (5 d 15 h), E.
    assert report["backlog"] == {"lt_1d": 0, "1d_7d": 2, "7d_30d": 0, "gt_30d": 1, "total": 3}
    # A: Fri 16:00 + 4 business hours -> due Mon 12:00, after "as of": not breached yet.
    assert report["sla_breach_rate"] == round(1 / 3, 4)
    assert report["csat"]["responses"] == 0


def test_the_plain_table(history: History) -> None:
    text = history.cli("kpi", *PERIOD).stdout
    lines = text.splitlines()
    assert lines[0] == "KPIs 2026-03-02 to 2026-03-15 (UTC)"
    row = next(line for line in lines if line.startswith("all "))
    assert row.split()[1:4] == ["6", "1:00:00", "2d"]
    assert "backlog by age: <1d 1, 1-7d 1, 7-30d 1, >30d 1" in text
    assert f"agent {SARA}" in text
    assert "CSAT 4-5: 50%" in text


def test_sla_breaches_reach_the_kpis_and_qa_risk_sampling(history: History) -> None:
    # A made urgent: 1 h to the first response, and its answer took 2 business hours.
    a = history.number("a1@example.com")
    history.cli("tickets", "set", str(a), "--priority", "urgent")
    assert history.cli.json("kpi", *PERIOD)["sla_breach_rate"] == round(2 / 6, 4)
    drawn = history.cli.json("qa", "sample", *PERIOD, "--n", "3", "--risk", "--dry-run", "--json")
    assert drawn["frame_size"] == 3
    risks = {t["ticket"]: t["risk"] for t in drawn["tickets"]}
    assert "sla-breach" in risks[a]
    assert [n for n, r in risks.items() if "sla-breach" in r] == [a]


def test_replies_sent_through_the_outbox_are_agent_responses(tmp_path: Path, db_url: str) -> None:
    # `tickets reply` queues an outgoing message of outbox kind "reply" (never sent here);
    # with an agent's own imported mail before it, the ticket has two responses.
    smtp = '[smtp]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\n'
    cli = Cli(write_config(tmp_path, db_url, MAILBOX, AGENTS, SLA, smtp))
    cli("init")
    h = History(cli, tmp_path, pytest.MonkeyPatch())
    now = datetime.now(UTC).replace(microsecond=0)
    h.imported(
        mail("one@example.com", now - timedelta(hours=2), ALICE),
        mail("two@example.com", now - timedelta(hours=3), BOB),
        mail("two-a@example.com", now - timedelta(hours=1), SARA, "two@example.com"),
    )

    def reply_and_solve(mid: str) -> None:
        number = str(h.number(mid))
        cli("tickets", "reply", number, "--as", SARA, "Fixed, sorry about that.")
        cli("tickets", "set", number, "--status", "solved")

    reply_and_solve("one@example.com")  # one response: the reply
    report = cli.json("kpi")
    assert (report["resolution"]["n"], report["one_touch_rate"]) == (1, 1.0)
    reply_and_solve("two@example.com")  # two: Sara's own mail, then the reply
    report = cli.json("kpi")
    assert (report["resolution"]["n"], report["one_touch_rate"]) == (2, 0.5)
    assert report["first_response"]["n"] == 2


def test_csv_tsv_and_columns(history: History) -> None:
    report = history.cli.json("kpi", *PERIOD)
    rows = list(csv.DictReader(io.StringIO(history.cli("kpi", *PERIOD, "--format", "csv").stdout)))
    assert rows[0]["group_kind"] == "all" and int(rows[0]["volume"]) == report["volume"]
    agents = {r["group"]: r for r in rows if r["group_kind"] == "agent"}
    assert set(agents) == set(report["by_agent"])
    assert float(rows[0]["frt_median_s"]) == report["first_response"]["median_s"]
    tsv = history.cli("kpi", *PERIOD, "--format", "tsv").stdout.splitlines()
    assert len(tsv) == len(rows) + 1 and all(len(line.split("\t")) == 15 for line in tsv)
    chosen = history.cli.json("kpi", *PERIOD, "--columns", "group,volume")
    assert chosen[0] == {"group": "all", "volume": report["volume"]}
    table = history.cli("kpi", *PERIOD, "--columns", "group,volume,frt_median_s").stdout
    assert table.splitlines()[1].split() == ["group", "volume", "frt_median_s"]
    assert table.splitlines()[2].split() == ["all", str(report["volume"]), "1:00:00"]
    assert "unknown column 'x'" in history.cli("kpi", *PERIOD, "--columns", "x", code=1).stderr
