"""Start a helper process of postdesk's own: the parse worker (worker.py) and the
read-ahead fetcher (readahead.py).

A helper is a Python process of its own (`python -c`), running `_child_main()` of the
module named, talking over a socket pair whose end it finds as file descriptor argv[1].
It imports from the main process's import path as it stands (argv[2], JSON): the same
postdesk, from a checkout or an installed package. It runs in its own process group, so
Ctrl-C at a terminal reaches the main process only, which ends the helper by closing the
socket (or killing it).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any


def start_child(module: str, first: Any) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start `module`'s `_child_main()` in a process and send it `first`; neither waits
    for it to be ready. Raises OSError when it cannot be started or reached."""
    if not sys.executable:
        raise OSError("no Python executable known")
    code = (
        "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
        f"from {module} import _child_main; _child_main()"
    )
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), json.dumps(sys.path)],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    try:
        conn.send(first)
    except OSError:
        conn.close()
        process.kill()
        process.wait()
        raise
    return process, conn
