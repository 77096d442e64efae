"""Owner names of other processes, for tests of leases and outbox claims (postdesk/owner.py)."""

from __future__ import annotations

import subprocess
import sys


def ended_owner() -> str:
    """The owner name of a postdesk process that ran on this machine and has ended."""
    code = "from postdesk.owner import make_owner; print(make_owner())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()
