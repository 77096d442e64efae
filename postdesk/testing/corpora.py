"""The public corpora tests read: ../shared/data and CPython's own email test messages.

For pytest runs only (it skips or fails the calling test): a missing corpus skips, unless
$POSTDESK_REQUIRE_SHARED says CI must have it (then it fails). $POSTDESK_SHARED_DATA
says where ../shared/data is. Every test that reads a corpus goes through
`require_corpus` or `require_cpython_email_data`, so both variables hold everywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

import pytest

SHARED_ENV = "POSTDESK_SHARED_DATA"
REQUIRE_SHARED_ENV = "POSTDESK_REQUIRE_SHARED"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def shared_data_dir() -> Path:
    """Where ../shared/data is (override with $POSTDESK_SHARED_DATA)."""
    env = os.environ.get(SHARED_ENV)
    # This file is <checkout>/postdesk/testing/corpora.py; shared/ sits beside <checkout>.
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def require_corpus(name: str) -> Path:
    """The corpus folder `name` under ../shared/data, or skip (fail in CI) when absent."""
    path = shared_data_dir() / name
    if not path.is_dir():
        _skip_or_fail(
            f"corpus {name} not found at {path} (../shared/data is absent; "
            f"${SHARED_ENV} says where it is)"
        )
    return path


def _skip_or_fail(reason: str) -> NoReturn:
    if _flag(REQUIRE_SHARED_ENV):
        pytest.fail(f"{reason}, and {REQUIRE_SHARED_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


def cpython_email_data() -> Path | None:
    """CPython's email test messages (Lib/test/test_email/data), wherever they are here.

    First the running interpreter's own test package; then the copies Debian's
    libpython3.X-testsuite packages install under /usr/lib/python3.X (the same files, in
    use whichever interpreter runs the tests; `make test` installs the package when the
    interpreter has no test package of its own, see scripts/ensure-test-data).
    """
    try:
        module = importlib.import_module("test.test_email")
    except ImportError:
        module = None
    if module is not None and module.__file__ is not None:
        path = Path(os.path.dirname(module.__file__)) / "data"
        if path.is_dir():
            return path
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path("/usr/lib") / minor, *sorted(Path("/usr/lib").glob("python3.*"))]
    for base in candidates:
        path = base / "test" / "test_email" / "data"
        if (path / "msg_01.txt").is_file():
            return path
    return None


def require_cpython_email_data() -> Path:
    """CPython's email test messages, or skip (fail in CI) when there are none here."""
    path = cpython_email_data()
    if path is None:
        _skip_or_fail(
            "CPython's email test data is not installed (no test.test_email package; on "
            "Debian, scripts/ensure-test-data installs libpython3.X-testsuite)"
        )
    return path
