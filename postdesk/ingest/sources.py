"""`postdesk import`: read mail from files on disk into the raw store.

Accepted inputs, decided by content rather than by name:
- a single message file (`.eml`, or any file whose first line looks like a header);
- an mbox file (first line starts with ``From ``), split with the standard library;
- a Maildir (a directory holding `cur/` and `new/`; `tmp/` is skipped, as MUAs do);
- a directory tree of any of the above (hidden files and directories are skipped).

Imported mail goes through the same raw store as fetched mail, so importing a file twice,
or importing mail that also arrives over IMAP, stores it once.
"""

from __future__ import annotations

import mailbox
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postdesk.errors import ImportSourceError

_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_MAIL_FIELDS = re.compile(
    rb"^(from|date|message-id|subject|to|received|return-path|delivered-to|mime-version):",
    re.IGNORECASE | re.MULTILINE,
)
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class ImportedMessage:
    """One message found on disk and where it came from (for the raw store's origin)."""

    origin: str
    raw: bytes


def _header_block(head: bytes, *, cut: bool) -> bytes | None:
    """The header block `head` starts with, or None if its lines are not all headers.

    `cut` says the sniff window may have cut the last line short.
    """
    block = head.lstrip(b"\r\n").replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    lines = block.split(b"\n")
    if lines[-1] == b"" or (cut and len(lines) > 1):
        # A header-only message ends with a newline and no blank line; and the last
        # line may be cut short by the sniff window.
        lines = lines[:-1]
    if not lines or not _HEADER_LINE.match(lines[0]):
        return None
    for line in lines[1:]:
        if not (line[:1] in (b" ", b"\t") or _HEADER_LINE.match(line)):
            return None
    return block


def looks_like_message(head: bytes) -> bool:
    """Whether `head` starts with a mail header block.

    Every line up to the first blank one (or the end of `head`) must be a header field
    or a folded continuation, and at least one must be a field every mail has (From,
    Date, Message-ID, Received, ...): a text file that happens to start with "word:" is
    not mail.
    """
    block = _header_block(head, cut=len(head) >= _SNIFF_BYTES)
    return block is not None and _MAIL_FIELDS.search(block) is not None


def _kind(path: Path) -> str | None:
    """'mbox', 'message' or None (not mail) judged from the first bytes of the file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise ImportSourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head.startswith(b"From "):
        # An mbox's "From " line is followed by the first message's header block; a
        # text file that merely starts with the word "From" is not mail.
        rest = head.partition(b"\n")[2]
        if _header_block(rest, cut=len(head) >= _SNIFF_BYTES) is not None:
            return "mbox"
        return None
    if looks_like_message(head):
        return "message"
    return None


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _mbox_messages(path: Path) -> Iterator[ImportedMessage]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys(), start=1):
            yield ImportedMessage(f"{path}#{index}", box.get_bytes(key))
    finally:
        box.close()


# Files mail servers and clients keep inside Maildirs; not mail, not worth a mention.
_MAILDIR_CONTROL = re.compile(r"^(dovecot|courier|maildirfolder$|subscriptions$)", re.I)


def _file_messages(
    path: Path, *, explicit: bool, skipped: list[Path] | None
) -> Iterator[ImportedMessage]:
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise ImportSourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if empty:
        if explicit:
            raise ImportSourceError(f"{path}: the file is empty; there is nothing to import")
        if skipped is not None and not _MAILDIR_CONTROL.match(path.name):
            skipped.append(path)
        return
    kind = _kind(path)
    if kind is None and path.suffix.lower() == ".eml":
        # The name says it is a message: store it and let processing quarantine it
        # with a reason, rather than drop it here.
        kind = "message"
    if kind == "mbox":
        yield from _mbox_messages(path)
    elif kind == "message":
        yield ImportedMessage(str(path), path.read_bytes())
    elif explicit:
        raise ImportSourceError(
            f"{path}: neither a message (no header on its first line) nor an mbox file"
        )
    elif skipped is not None and not _MAILDIR_CONTROL.match(path.name):
        skipped.append(path)


def _walk(root: Path) -> Iterator[Path]:
    """Every non-hidden file under `root` in a stable order, skipping Maildir tmp/."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        skip_tmp = _is_maildir(here)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not (skip_tmp and d == "tmp")
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def read_messages(
    path: str | os.PathLike[str], *, skipped: list[Path] | None = None
) -> Iterator[ImportedMessage]:
    """Yield every message under `path` (file, mbox, Maildir or directory tree).

    Files met while walking a directory that are not mail (or are empty) are left out;
    when `skipped` is given they are appended to it, so the caller can say so. A
    non-empty `.eml` file is always taken as a message. A file named explicitly that is
    empty or not mail is an ImportSourceError saying which.
    """
    root = Path(path)
    if not root.exists():
        raise ImportSourceError(f"{root}: no such file or directory")
    if root.is_file():
        yield from _file_messages(root, explicit=True, skipped=skipped)
        return
    if not root.is_dir():
        raise ImportSourceError(f"{root}: not a file or directory")
    for file in _walk(root):
        yield from _file_messages(file, explicit=False, skipped=skipped)
