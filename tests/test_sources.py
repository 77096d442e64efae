"""Import sources: which files on disk are mail, and how mbox and Maildir are split."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from postdesk.errors import ImportSourceError
from postdesk.ingest.sources import ImportedMessage, looks_like_message, read_messages
from postdesk.testing.mail import Mail


def make_message(n: int, *, subject: str | None = None) -> EmailMessage:
    return Mail(
        sender=f"Customer {n} <c{n}@example.org>",
        to="support@example.com",
        subject=subject or f"Question {n}",
        message_id=f"m{n}@example.org",
        date="Mon, 01 Jan 2024 10:00:00 +0000",
        body=f"Body of message {n}\n",
    ).message()


def write_eml(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(make_message(n)))
    return path


def message_ids(found: list[ImportedMessage]) -> list[str]:
    ids = []
    for item in found:
        for line in item.raw.splitlines():
            if line.lower().startswith(b"message-id:"):
                ids.append(line.split(b":", 1)[1].strip().decode())
    return ids


# --- looks_like_message ----------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"From: a@example.org\nSubject: hi\n\nbody\n",
        b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
        b"Received: from x\n\tby y; Mon, 1 Jan 2024\nMessage-ID: <1@x>\n\nbody",
        b"\r\n\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\nX-Thing: 1\n\nbody",
        # header only, no body and no blank line (RFC 5322 allows it)
        b"From: a@example.org\nSubject: no body\n",
        b"From: a@example.org\r\nSubject: no body\r\n",
        b"Message-ID: <1@x>",
    ],
)
def test_looks_like_message_accepts_header_blocks(head: bytes) -> None:
    assert looks_like_message(head)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\n",
        b"hello world\n",
        b"Note: buy milk\nTodo: call Sara\n\nthe rest\n",  # header-shaped, no mail field
        b"From: a@example.org\nthis line is prose\n\nbody",
        b"From the desk of Sara\n\nDear all,\n",
        b" From: a@example.org\n\nbody",  # continuation line first
        b"\x89PNG\r\n\x1a\n\x00\x00",
    ],
)
def test_looks_like_message_rejects_other_text(head: bytes) -> None:
    assert not looks_like_message(head)


def test_looks_like_message_tolerates_a_header_cut_by_the_sniff_window() -> None:
    long_header = b"X-Long: " + b"a" * 10000
    head = (b"From: a@example.org\nSubject: s\n" + long_header)[:8192]
    assert looks_like_message(head)


# --- single files ----------------------------------------------------------------------


def test_single_eml_file(tmp_path: Path) -> None:
    path = write_eml(tmp_path / "one.eml", 1)
    found = list(read_messages(path))
    assert [m.origin for m in found] == [str(path)]
    assert found[0].raw == path.read_bytes()


def test_message_file_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    path = write_eml(tmp_path / "no-extension", 1)
    assert message_ids(list(read_messages(path))) == ["<m1@example.org>"]


def test_explicit_non_mail_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Some notes\nnothing to see\n", encoding="utf-8")
    with pytest.raises(ImportSourceError) as excinfo:
        list(read_messages(path))
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message


def test_explicit_text_file_starting_with_from_is_not_an_mbox(tmp_path: Path) -> None:
    path = tmp_path / "letter.txt"
    path.write_text("From the desk of Sara\n\nDear all,\nplease read.\n", encoding="utf-8")
    with pytest.raises(ImportSourceError, match=r"letter\.txt"):
        list(read_messages(path))


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImportSourceError, match="no such file or directory"):
        list(read_messages(tmp_path / "absent"))


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.eml"
    path.write_bytes(b"")
    with pytest.raises(ImportSourceError):
        list(read_messages(path))


# --- mbox --------------------------------------------------------------------------------


def build_mbox(path: Path, numbers: list[int]) -> Path:
    box = mailbox.mbox(path)
    try:
        for n in numbers:
            box.add(mailbox.mboxMessage(make_message(n)))
        box.flush()
    finally:
        box.close()
    return path


def test_mbox_is_split_into_messages_in_order(tmp_path: Path) -> None:
    path = build_mbox(tmp_path / "archive.mbox", [1, 2, 3])
    found = list(read_messages(path))
    assert [m.origin for m in found] == [f"{path}#1", f"{path}#2", f"{path}#3"]
    assert message_ids(found) == ["<m1@example.org>", "<m2@example.org>", "<m3@example.org>"]
    # The mbox "From " separator line is not part of a message.
    assert all(not m.raw.startswith(b"From ") for m in found)


def test_mbox_body_line_starting_with_from_stays_in_its_message(tmp_path: Path) -> None:
    msg = make_message(1)
    msg.set_content("Hello\nFrom here on, it is one message.\n")
    box = mailbox.mbox(tmp_path / "box")
    box.add(mailbox.mboxMessage(msg))
    box.add(mailbox.mboxMessage(make_message(2)))
    box.close()
    found = list(read_messages(tmp_path / "box"))
    assert len(found) == 2
    assert b"From here on" in found[0].raw


def test_mbox_found_while_walking_a_directory(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    build_mbox(tmp_path / "archive" / "inbox", [7, 8])
    found = list(read_messages(tmp_path))
    assert message_ids(found) == ["<m7@example.org>", "<m8@example.org>"]


# --- Maildir -------------------------------------------------------------------------------


def build_maildir(path: Path, numbers: list[int]) -> mailbox.Maildir:
    box = mailbox.Maildir(path, create=True)
    for n in numbers:
        box.add(mailbox.MaildirMessage(make_message(n)))
    return box


def test_maildir_reads_new_and_cur_and_skips_tmp(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    box = build_maildir(root, [1, 2])
    # Move one message to cur/ the way a mail client does after reading it.
    key = sorted(box.keys())[0]
    msg = box[key]
    msg.set_subdir("cur")
    msg.add_flag("S")
    box[key] = msg
    assert list((root / "cur").iterdir()) and list((root / "new").iterdir())
    # A message still being delivered sits in tmp/ and must not be imported.
    write_eml(root / "tmp" / "1700000000.P1.host", 99)
    found = list(read_messages(root))
    assert len(found) == 2
    assert sorted(message_ids(found)) == ["<m1@example.org>", "<m2@example.org>"]
    assert {Path(m.origin).parent.name for m in found} == {"cur", "new"}


def test_tmp_directory_outside_a_maildir_is_read(tmp_path: Path) -> None:
    write_eml(tmp_path / "exports" / "tmp" / "a.eml", 5)
    assert message_ids(list(read_messages(tmp_path / "exports"))) == ["<m5@example.org>"]


def test_maildir_bookkeeping_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    build_maildir(root, [1])
    (root / "dovecot-uidlist").write_text("3 V1700000000 N2 G0123\n1 :1700000000.M1\n")
    (root / "dovecot.index.log").write_bytes(b"\x01\x02\x00\x00binary")
    (root / "maildirfolder").write_bytes(b"")
    skipped: list[Path] = []
    found = list(read_messages(root, skipped=skipped))
    assert len(found) == 1
    assert skipped == []  # bookkeeping is not worth reporting
    assert message_ids(found) == ["<m1@example.org>"]


# --- directory trees ---------------------------------------------------------------------


def test_nested_directories_are_walked_in_a_stable_order(tmp_path: Path) -> None:
    write_eml(tmp_path / "b" / "2.eml", 2)
    write_eml(tmp_path / "a" / "deeper" / "still" / "1.eml", 1)
    write_eml(tmp_path / "c.eml", 3)
    build_maildir(tmp_path / "a" / "md", [4])
    found = list(read_messages(tmp_path))
    assert sorted(message_ids(found)) == [f"<m{n}@example.org>" for n in (1, 2, 3, 4)]
    assert [m.origin for m in found] == [m.origin for m in read_messages(tmp_path)]


def test_hidden_files_and_directories_are_skipped(tmp_path: Path) -> None:
    write_eml(tmp_path / "visible.eml", 1)
    write_eml(tmp_path / ".hidden.eml", 2)
    write_eml(tmp_path / ".git" / "mail.eml", 3)
    write_eml(tmp_path / "sub" / ".DS_Store", 4)
    assert [m.origin for m in read_messages(tmp_path)] == [str(tmp_path / "visible.eml")]


def test_non_mail_files_are_skipped_when_walking(tmp_path: Path) -> None:
    write_eml(tmp_path / "real.eml", 1)
    (tmp_path / "README.txt").write_text("This folder holds exported mail.\n")
    (tmp_path / "config.ini").write_text("Name: value\nOther: thing\n")
    (tmp_path / "letter.txt").write_text("From the desk of Sara\n\nDear all,\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "empty").write_bytes(b"")
    skipped: list[Path] = []
    assert [m.origin for m in read_messages(tmp_path, skipped=skipped)] == [
        str(tmp_path / "real.eml")
    ]
    names = ["README.txt", "config.ini", "empty", "image.png", "letter.txt"]
    assert sorted(p.name for p in skipped) == names


def test_eml_file_is_taken_as_mail_even_when_it_does_not_look_like_it(tmp_path: Path) -> None:
    # The name declares a message: it is read (processing quarantines it with a reason)
    # instead of vanishing from the import.
    (tmp_path / "broken.eml").write_bytes(b"this export lost its headers\r\n")
    skipped: list[Path] = []
    assert [m.raw for m in read_messages(tmp_path, skipped=skipped)] == [
        b"this export lost its headers\r\n"
    ]
    assert skipped == []


def test_header_only_message_is_read_when_walking(tmp_path: Path) -> None:
    (tmp_path / "headers-only.eml").write_bytes(
        b"From: a@example.org\r\nSubject: nothing else\r\nMessage-ID: <h@x>\r\n"
    )
    assert message_ids(list(read_messages(tmp_path))) == ["<h@x>"]


def test_empty_directory_yields_nothing(tmp_path: Path) -> None:
    assert list(read_messages(tmp_path)) == []


def test_long_header_blocks_are_recognised(tmp_path: Path) -> None:
    # More header than the sniff window holds, in a message file and at the top of an mbox.
    msg = make_message(1)
    for hop in range(120):
        msg["Received"] = f"from relay{hop}.example.net by mx.example.com; Mon, 1 Jan 2024"
    raw = bytes(msg)
    assert raw.index(b"\n\n") > 8192
    (tmp_path / "long.eml").write_bytes(raw)
    box = mailbox.mbox(tmp_path / "long.mbox")
    box.add(mailbox.mboxMessage(msg))
    box.add(mailbox.mboxMessage(make_message(2)))
    box.close()
    assert len(list(read_messages(tmp_path / "long.eml"))) == 1
    assert message_ids(list(read_messages(tmp_path / "long.mbox"))) == [
        "<m1@example.org>",
        "<m2@example.org>",
    ]
