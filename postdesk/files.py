"""Writing files so that a crash never leaves half of one: temporary file, fsync, rename.

Used for attachments (content-addressed, written once), the model store's model files,
metadata and state.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(target: Path, data: bytes) -> None:
    """Replace `target` with `data`: readers see the old file or the new one, whole.

    The data goes to a private temporary file in the same directory, is flushed to disk
    and renamed over `target`; then the directory is flushed, so that the rename itself
    survives a power cut. Raises OSError; the temporary file never stays behind.
    """
    directory = target.parent
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot flush a directory; the rename is still atomic
    finally:
        os.close(fd)
