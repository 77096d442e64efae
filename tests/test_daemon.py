"""The long-running `postdesk run`: passes repeat, and SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import mailbox_toml, write_config

from postdesk.testing.dovecot import Dovecot, MailUser
from postdesk.testing.mailgen import generate


def _postdesk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postdesk", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_polls_until_sigterm_then_exits_cleanly(
    dovecot_server: Dovecot, mail_user: MailUser, tmp_path: Path, sqlite_url: str
) -> None:
    config = write_config(
        tmp_path,
        sqlite_url,
        mailbox_toml(dovecot_server, mail_user),
        top="[run]\npoll_interval = 0.2\n",
    )
    assert _postdesk(config, "init").returncode == 0
    mails = list(generate(30, seed=7))
    dovecot_server.fill(mail_user, [m.raw for m in mails[:10]])

    proc = subprocess.Popen(
        [sys.executable, "-m", "postdesk", "-c", str(config), "-v", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Mail delivered while the service runs is picked up by a later pass.
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline:
            listed = _postdesk(config, "tickets", "list", "--json")
            seen = sum(len(t["message_ids"]) for t in json.loads(listed.stdout or "[]"))
            if seen == 10:
                break
            time.sleep(0.2)
        assert seen == 10
        dovecot_server.fill(mail_user, [m.raw for m in mails[10:]])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = _postdesk(config, "tickets", "list", "--json")
            seen = sum(len(t["message_ids"]) for t in json.loads(listed.stdout or "[]"))
            if seen == 30:
                break
            time.sleep(0.2)
        assert seen == 30
        assert proc.poll() is None, "the service stopped on its own"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert "Traceback" not in err
