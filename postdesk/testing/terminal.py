"""Running `postdesk` in a pseudo-terminal, as a person at a keyboard would (pexpect).

`spawn_postdesk(config, "qa", "score", ...)` starts `python -m postdesk -c CONFIG ...` from
this source tree in a pty of a fixed size, with prompt_toolkit's cursor-position requests
off (nothing answers them in a pty) and a developer's $POSTDESK_CONFIG removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

import postdesk

SOURCE_ROOT = Path(postdesk.__file__).resolve().parents[1]


def spawn_postdesk(
    config: Path, *args: str, columns: int = 110, rows: int = 40, timeout: float = 15
) -> pexpect.spawn:
    """`postdesk -c config *args` running in a pseudo-terminal (text mode, UTF-8)."""
    env = {k: v for k, v in os.environ.items() if k != "POSTDESK_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", LANG="C.UTF-8")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "postdesk", "-c", str(config), *args],
        env=env,
        dimensions=(rows, columns),
        encoding="utf-8",
        timeout=timeout,
    )
    child.delaybeforesend = None  # every key waits for its prompt anyway
    if log := os.environ.get("POSTDESK_PTY_LOG"):  # a copy of what the terminal showed
        child.logfile_read = open(log, "a", encoding="utf-8")  # noqa: SIM115
    return child
