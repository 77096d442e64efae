"""Writing files so that a crash never leaves half of one: temporary file, fsync, rename.

Used for attachments (content-addressed, written once), the model store's model files,
metadata and state.

Everything postdesk keeps holds customers' mail or what was learnt from it, so what it
creates is its owner's only, whatever the umask: files 0600 (`write_atomically`,
`private_file`), directories 0700 (`private_directory`). Existing files and directories
keep the modes an operator gave them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_directory(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700; raises OSError."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # made at the same moment by another process
        # mkdir applies the umask, which could take bits away but never add them; set
        # the mode anyway so that an unusual umask (0o200...) cannot lock the owner out.
        os.chmod(directory, DIRECTORY_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (e.g. a SQLite database before
    SQLite opens it: its journal and WAL files then get the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def write_atomically(target: Path, data: bytes, *, sync: bool = True) -> None:
    """Replace `target` with `data`: readers see the old file or the new one, whole.

    The data goes to a private temporary file in the same directory, is flushed to disk
    and renamed over `target`; then the directory is flushed, so that the rename itself
    survives a power cut. Raises OSError; the temporary file never stays behind.

    `sync=False` leaves both flushes to the caller (`sync_file`, `sync_directory`), who
    writes many files and flushes them together before anything that points to them is
    committed: back to back, the flushes share the filesystem's journal commits and cost
    a fraction of one pair per file. A reader still never sees half a file (the rename
    is atomic); only a power cut before that flush can lose the file.
    """
    directory = target.parent
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    if sync:
        _fsync_directory(directory)


def sync_file(path: Path) -> None:
    """Flush a file written with `write_atomically(..., sync=False)` to disk; its
    directory is flushed apart (`sync_directory`), once for many files. Raises OSError (a
    full disk can surface here, on filesystems that allocate late)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(directory: Path) -> None:
    """Flush a directory, so that the renames into it survive a power cut."""
    _fsync_directory(directory)


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_syncfs = _load_syncfs()


def sync_filesystem(path: Path) -> bool:
    """Flush everything written to the filesystem holding `path` (Linux's syncfs), in
    one call: for many small files, cheaper than a flush per file and per directory.
    False where that is not available or it failed (then flush file by file: that also
    tells which file failed)."""
    if _syncfs is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _syncfs(fd) == 0
    finally:
        os.close(fd)


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
