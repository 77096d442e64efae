"""Who holds a lease is known by a random instance id, not by host name and pid
(postdesk/owner.py): real processes are started and ended here to check it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postdesk.owner import _sweep, instance_directory, make_owner, owner_is_dead

HOLDER = (
    "import sys, time\n"
    "from postdesk.owner import make_owner\n"
    "print(make_owner(), flush=True)\n"
    "if sys.argv[1] == 'live':\n"
    "    time.sleep(120)\n"
)


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    """Another postdesk process on this machine that holds an owner name and lives."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "live"], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_live_holder_on_this_machine_is_alive(holder: subprocess.Popen[str]) -> None:
    assert holder.stdout is not None
    owner = holder.stdout.readline().strip()
    assert owner_is_dead(owner) is False
    # Killed (SIGKILL: no chance to clean up), it is known to be gone at once.
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert owner_is_dead(owner) is True
    # And stays so for every row or lease it held.
    assert owner_is_dead(owner) is True


def test_a_holder_that_ended_is_dead() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HOLDER, "exit"], capture_output=True, text=True, check=True
    )
    owner = done.stdout.strip()
    assert owner_is_dead(owner) is True


def test_a_holder_on_another_machine_with_the_same_name_is_not_taken_for_dead() -> None:
    """Same host name, a pid that does not exist here: the old check said dead; the
    instance has no lock file on this machine, so only the expiry can tell."""
    other = f"{socket.gethostname()}:{_ended_pid()}:{'ab' * 16}:0badcafe"
    assert not (instance_directory() / f"{'ab' * 16}.lock").exists()
    assert owner_is_dead(other) is False


def test_owner_names_of_this_process_are_alive_and_distinct() -> None:
    first, second = make_owner(), make_owner()
    assert first != second
    assert first.split(":")[2] == second.split(":")[2]  # one instance per process
    assert not owner_is_dead(first) and not owner_is_dead(second)
    # Owner names of older versions (host:pid:start:random) wait for the expiry.
    legacy = f"{socket.gethostname()}:{_ended_pid()}:12345:deadbeef"
    assert owner_is_dead(legacy) is False
    assert os.getpid() == int(first.split(":")[1])


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_day_old_lock_files_of_ended_processes_are_swept(tmp_path: Path) -> None:
    old, fresh = tmp_path / f"{'1' * 32}.lock", tmp_path / f"{'2' * 32}.lock"
    for path in (old, fresh):
        path.touch()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    _sweep(tmp_path, "0" * 32)
    assert not old.exists()
    assert fresh.exists()  # a recent one still tells others its holder ended
