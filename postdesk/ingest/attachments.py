"""Attachment names that are safe on every filesystem, and a content-addressed store for them.

Names come from strangers: they may carry paths, reserved device names, control and
bidi-override characters or hundreds of bytes. `sanitize_filename` keeps what a person
would recognise (letters of any script, including the Persian zero-width non-joiner) and
drops the rest. `AttachmentStore` keeps each distinct blob once, under
`<root>/sha256/<sha[:2]>/<sha>`, written atomically so a reader never sees half a file;
the names (one per message that carried it) are kept with the messages. Stores written
before kept a copy per name under `<root>/<sha[:2]>/<sha>/<name>`; those paths stay
valid (each attachment row records its own).

A full disk (or quota) is not the message's fault: `save` raises `DiskFull`, whose text
starts with `DISK_FULL`, so the message is quarantined with a reason that says so, and
the processor puts such messages back to pending at its next run once the store has room
for them (`AttachmentStore.has_room`): nothing is lost, and nobody has to retry by hand.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mimetypes
import shutil
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postdesk.errors import PostdeskError
from postdesk.files import (
    private_directory,
    sync_directory,
    sync_file,
    sync_filesystem,
    write_atomically,
)

# The start of a quarantine reason that the processor retries by itself (process.py).
DISK_FULL: Final = "no space left for attachments"
_DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


# From this many files written since the last flush, `flush` flushes the filesystem.
SYNCFS_FROM: Final = 8


class DiskFull(PostdeskError):
    """The filesystem holding the attachment store is full or over quota."""


def _disk_full(exc: OSError, root: Path) -> DiskFull | None:
    """`exc` as a DiskFull when it says the disk is full, else None."""
    if exc.errno not in _DISK_FULL_ERRNOS:
        return None
    return DiskFull(f"{DISK_FULL} in {root} ({exc.strerror}); retried by itself once there is room")


MAX_FILENAME_BYTES: Final = 200
# An "extension" longer than this is part of the name ("Minutes.of the meeting with ACME").
_MAX_EXTENSION_CHARS: Final = 16

_FORBIDDEN: Final = frozenset('<>:"/\\|?*')
# Format characters are invisible: bidi overrides let "invoice\u202efdp.exe" display as
# "invoiceexe.pdf". Only the zero-width (non-)joiner stays, because Persian spelling needs it.
_KEPT_FORMAT_CHARS: Final = frozenset("\u200c\u200d")
_RESERVED_WINDOWS: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
# Types the platform's mimetypes table misses or maps to an unhelpful extension.
_EXTENSIONS: Final = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "image/jpeg": ".jpg",
    "application/octet-stream": ".bin",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pgp-signature": ".asc",
    "application/ms-tnef": ".dat",
}


def sanitize_filename(name: str | None, content_type: str, index: int) -> str:
    """A filename safe to create on Linux, macOS and Windows, never empty.

    The name is NFC-normalised, stripped of any directory part, control, invisible and
    reserved characters, leading/trailing dots and spaces, kept off Windows device names
    and cut to MAX_FILENAME_BYTES of UTF-8 without losing its extension. When nothing
    usable is left the result is `attachment-<index>` plus an extension for content_type.
    """
    cleaned = _clean(name or "")
    if not cleaned:
        return f"attachment-{index}{_extension_for(content_type)}"
    stem, extension = _split_extension(cleaned)
    # Windows reserves the device name whatever follows the first dot ("con.tar.gz").
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in _RESERVED_WINDOWS:
        stem = "_" + stem
    return _fit(stem, extension)


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for char in name:
        if char in _FORBIDDEN:
            continue
        category = unicodedata.category(char)
        if category[0] == "Z" or char in "\t\n\r":
            kept.append(" ")
        elif category in ("Cc", "Cs") or (category == "Cf" and char not in _KEPT_FORMAT_CHARS):
            continue
        else:
            kept.append(char)
    return "".join(kept).strip(" .")


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if (
        not dot
        or not stem
        or not extension
        or len(extension) > _MAX_EXTENSION_CHARS
        or " " in extension
    ):
        return name, ""
    return stem, "." + extension


def _fit(stem: str, extension: str) -> str:
    budget = MAX_FILENAME_BYTES - len(extension.encode("utf-8"))
    encoded = stem.encode("utf-8")
    if len(encoded) > budget:
        # Cut on a character boundary, then re-trim: the cut may expose a trailing space
        # or dot, which Windows would silently drop.
        stem = encoded[:budget].decode("utf-8", "ignore").rstrip(" .\u200c\u200d")
        if not stem:
            stem = "attachment"
    return stem + extension


# Common in support mail, missing from the stdlib's built-in table in some versions.
_EXTRA_TYPES: Final = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".heic": "image/heic",
    ".webp": "image/webp",
    ".7z": "application/x-7z-compressed",
    ".rar": "application/vnd.rar",
}


def _extension_for(content_type: str) -> str:
    content_type = content_type.strip().lower()
    known = _EXTENSIONS.get(content_type)
    if known is not None:
        return known
    # The tables mimetypes builds at import; guess_extension() would first read the
    # system's mime.types, which is I/O and differs from machine to machine.
    for table in (_EXTRA_TYPES, mimetypes.types_map):
        for extension, mapped in table.items():
            if mapped == content_type:
                return extension
    return ""


def content_type_for(filename: str) -> str | None:
    """The content type a filename's extension suggests, from the built-in table only."""
    _, dot, extension = filename.rpartition(".")
    if not dot or not extension:
        return None
    extension = "." + extension.lower()
    return (
        _EXTRA_TYPES.get(extension)
        or mimetypes.types_map.get(extension)
        or mimetypes.common_types.get(extension)
    )


@dataclass(frozen=True)
class StoredAttachment:
    """Where an attachment blob lives in the store: sha256 hex, size, POSIX path under root."""

    sha256: str
    size: int
    relpath: str


class AttachmentStore:
    """Content-addressed attachment files under one root directory.

    Safe for several threads and processes writing the same blob at once: each writer
    writes its own temporary file in the target directory and renames it into place; the
    contents are identical by construction, so whichever rename lands last is correct.
    """

    def __init__(self, root: Path, *, defer_sync: bool = False) -> None:
        """`defer_sync`: files are flushed to disk by `flush()`, which the caller runs
        before committing rows that point to them (the processor does, before each
        commit: see FileStep.before_commit), instead of two flushes per file at once."""
        self.root = root
        self.defer_sync = defer_sync
        self._unsynced: dict[Path, None] = {}  # written by this store, not flushed yet
        self._lock = threading.Lock()

    def save(self, data: bytes) -> StoredAttachment:
        """Store data under its sha256, once whatever it is called; idempotent. Names are
        the caller's to keep (messages' attachment rows), not part of the path."""
        digest = hashlib.sha256(data).hexdigest()
        relpath = f"sha256/{digest[:2]}/{digest}"
        target = self.root / relpath
        if not self._present(target, len(data)):
            try:
                private_directory(target.parent)
                write_atomically(target, data, sync=not self.defer_sync)
            except OSError as exc:
                full = _disk_full(exc, self.root)
                if full is None:
                    raise
                raise full from exc
            if self.defer_sync:
                with self._lock:
                    self._unsynced[target] = None
        return StoredAttachment(sha256=digest, size=len(data), relpath=relpath)

    @staticmethod
    def _present(target: Path, size: int) -> bool:
        """Whether the blob is there whole. A file of another size is what a power cut
        can leave of one written without a flush (an empty file, typically): written
        again. (Its name is its content's digest, so a right-sized one is the blob.)"""
        try:
            return target.stat().st_size == size
        except FileNotFoundError:
            return False

    def flush(self) -> None:
        """Flush to disk what `save` wrote since the last flush (with `defer_sync`), then
        their directories. Raises DiskFull, or OSError: a file that cannot be flushed is
        deleted first (no committed row points to it yet), so the message that needs it
        writes it again and meets the error itself, while the others' files stay to be
        flushed by the next call."""
        with self._lock:
            # Many files (a batch full of attachments): one flush of the whole filesystem
            # in place of two per file. Not for a few: syncfs also flushes what other
            # programs wrote there (a database on the same disk), so it is kept for when
            # it saves many flushes. Where it cannot be done, or fails: file by file.
            if len(self._unsynced) >= SYNCFS_FROM and sync_filesystem(self.root):
                self._unsynced.clear()
                return
            directories: dict[Path, None] = {}
            for path in list(self._unsynced):
                try:
                    sync_file(path)
                except OSError as exc:
                    self._unsynced.pop(path, None)
                    with contextlib.suppress(OSError):
                        path.unlink()
                    full = _disk_full(exc, self.root)
                    if full is None:
                        raise
                    raise full from exc
                del self._unsynced[path]
                directories[path.parent] = None
            for directory in directories:
                sync_directory(directory)

    def has_room(self, size: int) -> bool:
        """Whether the store's filesystem has more than `size` bytes free now."""
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free > size
        except OSError:
            return False
