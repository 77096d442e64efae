"""`make demo` end to end: the real commands on a private Dovecot, in a scratch directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # the whole `make demo` run in a subprocess, ~15 s
def test_demo_threads_triages_and_quarantines(tmp_path: Path, dovecot_binary: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "postdesk.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "5 new ticket(s), 2 added to tickets, 1 quarantined" in out
    assert "category-1 is now the active category model" in out
    # Alice's order and Maryam's (Persian) order are deliveries, Bob's VAT question is
    # billing, Reza's windows-1256 login problem is account; Dan's note is left to a person.
    assert "categorized by the model   4  (1 account, 1 billing, 2 delivery)" in out
    assert "needs triage (unsure)      1" in out
    assert "priority set by a rule     1" in out  # "فوری" in Maryam's mail
    assert "Category: delivery (model" in out
    assert "IMAP: 0 left in INBOX, 8 moved to Processed after commit" in out
    # Every customer who opened a ticket got its number, and Sara heard of every
    # customer message, through the outbox and SMTP.
    assert "SMTP sink received         12 (5 acknowledgements to customers, 7 notif" in out
    # Sara answers every new ticket from the CLI, solving three (each gets the survey).
    assert "outbox: 8 sent, 0 to retry, 0 failed" in out
    assert out.count("and the satisfaction survey on ticket") == 3
    assert "KPIs " in out and "queue support                   5" in out
    # A QA round: three solved tickets, reviewed by two people, and their agreement.
    assert "sampled tickets #1, #3, #5 for two reviewers" in out
    assert "imported 6 review(s) (42 ratings) of 3 ticket(s) by 2 reviewer(s)" in out
    assert "overall             21" in out
    # Reviews scored elsewhere for the drawn tickets count in the weighted IQS.
    assert "from 3 reviewed ticket(s) (6 review(s)), weighted by 1 / inclusion" in out
    # The servers are gone; the database and config stay for exploring.
    assert (tmp_path / "demo-run" / "postdesk.db").is_file()
    assert not (tmp_path / "demo-run" / "dovecot").exists()
