"""What postdesk creates is its owner's only (postdesk/files.py): the SQLite database and
its journal files, the data directory, attachments, the reply-token key and model files
are 0600 / 0700 whatever the umask of the process that made them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from postdesk.classify.store import ModelStore
from postdesk.classify.training import TrainedModel
from postdesk.files import private_directory
from postdesk.testing.cli import Cli
from postdesk.testing.config import write_config
from postdesk.testing.inbox import mail


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service unit: everything readable by everyone."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_database_data_dir_attachments_and_key_are_owner_only(tmp_path: Path) -> None:
    db_file = tmp_path / "db" / "postdesk.db"
    db_file.parent.mkdir()
    config = write_config(tmp_path, f"sqlite:///{db_file}")
    cli = Cli(config)
    cli("init")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "1.eml").write_bytes(mail("p1@x", attachment=("scan.pdf", b"%PDF-1.4 " * 100)))
    cli("import", str(inbox))

    data_dir = tmp_path / "data"
    assert mode(db_file) == 0o600
    journals = [p for p in db_file.parent.iterdir() if p != db_file]
    for journal in journals:  # -wal and -shm while a connection is open, if any
        assert mode(journal) == 0o600, journal
    assert mode(data_dir) == 0o700
    created = [p for p in data_dir.rglob("*")]
    assert any(p.is_file() and "attachments" in p.parts for p in created)
    for path in created:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.usefixtures("open_umask")
def test_model_store_is_owner_only(tmp_path: Path) -> None:
    pipeline = Pipeline([("model", DummyClassifier())]).fit(["a", "b"], ["x", "y"])
    store = ModelStore(tmp_path / "data" / "models")
    store.promote(store.add(TrainedModel(pipeline, {"target": "category"})))

    assert mode(tmp_path / "data") == 0o700
    for path in [store.root, *store.root.rglob("*")]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_existing_directories_keep_their_modes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o750)  # an operator's choice, e.g. for a backup group
    private_directory(shared / "a" / "b")
    assert mode(shared) == 0o750
    assert mode(shared / "a") == 0o700 and mode(shared / "a" / "b") == 0o700
