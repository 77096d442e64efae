"""The attachment store's deferred flush: written at once, flushed before the commit.

The processor's file step writes attachments with `defer_sync=True` and flushes them all
in `before_commit`, just before the transaction whose rows point to them commits (the
flushes of a batch then share the filesystem's journal commits: bench/ingest.py shows
the cost). These tests check the bookkeeping on a real filesystem; one makes a flush
fail, which no real filesystem does on cue, by replacing the flush function.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from postdesk.config import load_settings
from postdesk.files import sync_filesystem
from postdesk.ingest import attachments as attachments_module
from postdesk.ingest.attachments import SYNCFS_FROM, AttachmentStore, DiskFull
from postdesk.ingest.process import Processor
from postdesk.ingest.steps import FileStep
from postdesk.ingest.store import Incoming, store_many
from postdesk.models.db import Database
from postdesk.models.migrate import upgrade
from postdesk.pipeline import steps as pipeline_steps
from postdesk.testing.config import write_config
from postdesk.testing.mail import Attachment, Mail


def test_deferred_files_are_written_at_once_and_flushed_by_flush(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "a", defer_sync=True)
    first = store.save(b"first blob")
    second = store.save(b"second blob")
    again = store.save(b"first blob")  # the same content: one file, one flush
    assert again == first
    for stored, data in ((first, b"first blob"), (second, b"second blob")):
        assert (tmp_path / "a" / stored.relpath).read_bytes() == data
    assert set(store._unsynced) == {
        tmp_path / "a" / first.relpath,
        tmp_path / "a" / second.relpath,
    }
    store.flush()
    assert not store._unsynced
    store.flush()  # nothing left: a no-op


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_many_files_are_flushed_with_one_filesystem_flush_on_linux(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AttachmentStore(tmp_path / "a", defer_sync=True)
    for n in range(SYNCFS_FROM):
        store.save(f"blob {n}".encode())
    assert sync_filesystem(tmp_path)  # the real call succeeds here
    one_by_one: list[Path] = []
    real = attachments_module.sync_file

    def sync_file(path: Path) -> None:
        one_by_one.append(path)
        real(path)

    monkeypatch.setattr(attachments_module, "sync_file", sync_file)
    store.flush()
    assert not store._unsynced
    assert one_by_one == []  # no flush per file: one for the filesystem
    for n in range(SYNCFS_FROM - 1):
        store.save(f"few {n}".encode())
    store.flush()  # a few files: each flushed alone, not the whole filesystem
    assert len(one_by_one) == SYNCFS_FROM - 1


def test_immediate_mode_leaves_nothing_to_flush(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "a")
    stored = store.save(b"blob")
    assert (tmp_path / "a" / stored.relpath).read_bytes() == b"blob"
    assert not store._unsynced


def test_a_file_cut_short_is_written_again(tmp_path: Path) -> None:
    """What a power cut can leave of a file written without a flush (an empty file under
    the blob's name) is not taken for the blob."""
    store = AttachmentStore(tmp_path / "a", defer_sync=True)
    stored = store.save(b"the whole attachment")
    store.flush()
    target = tmp_path / "a" / stored.relpath
    target.write_bytes(b"")
    assert store.save(b"the whole attachment") == stored
    assert target.read_bytes() == b"the whole attachment"
    assert target in store._unsynced


def test_a_flush_that_fails_deletes_that_file_and_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk met at the flush (filesystems that allocate late): the file that could
    not be flushed is deleted, so the message needing it writes it again and meets the
    error itself; the others stay to be flushed."""
    store = AttachmentStore(tmp_path / "a", defer_sync=True)
    good = tmp_path / "a" / store.save(b"fits").relpath
    bad = tmp_path / "a" / store.save(b"does not fit").relpath
    real = attachments_module.sync_file
    # File by file, as where syncfs(2) is missing or fails (it cannot say which file).
    monkeypatch.setattr(attachments_module, "sync_filesystem", lambda path: False)

    def sync_file(path: Path) -> None:
        if path == bad:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(attachments_module, "sync_file", sync_file)
    with pytest.raises(DiskFull, match="no space left for attachments"):
        store.flush()
    assert not bad.exists()
    assert good.read_bytes() == b"fits"
    assert bad not in store._unsynced
    monkeypatch.setattr(attachments_module, "sync_file", real)
    store.flush()
    assert not store._unsynced


def test_processing_flushes_attachments_before_it_commits(tmp_path: Path) -> None:
    """Through the real pipeline: after a processing pass nothing is left unflushed."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'pd.db'}")
    settings = load_settings(config)
    db = Database(settings.database.url)
    try:
        upgrade(db)
        built = pipeline_steps(settings)
        (file_step,) = [s for s in built if isinstance(s, FileStep)]
        assert file_step.attachments.defer_sync
        raw = bytes(
            Mail(
                sender="Customer <c@customers.example>",
                to="support@example.com",
                subject="Invoice attached",
                body="Please see the attachment.\n",
                attachments=[Attachment("invoice.pdf", b"%PDF-1.4 not really")],
            )
        )
        with db.transaction() as session:
            store_many(session, [Incoming(raw, "test")], source="import", mailbox_id=None)
        result = Processor(db, built).run()
        assert result.processed == 1
        assert not file_step.attachments._unsynced
        blobs = list((settings.data_dir / "attachments").rglob("*"))
        assert any(p.is_file() and p.read_bytes() == b"%PDF-1.4 not really" for p in blobs)
    finally:
        db.dispose()
