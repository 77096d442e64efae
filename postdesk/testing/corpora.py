"""The public corpora tests read: ../shared/data and CPython's own email test messages.

For pytest runs only (it skips or fails the calling test): a missing corpus skips, unless
$POSTDESK_REQUIRE_SHARED says CI must have it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

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
        reason = f"corpus {name} not found at {path} (../shared/data is absent)"
        if _flag(REQUIRE_SHARED_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_SHARED_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return path


def cpython_email_data() -> Path | None:
    """CPython's test.test_email data folder, if this Python ships its test suite."""
    try:
        module = importlib.import_module("test.test_email")
    except ImportError:
        return None
    if module.__file__ is None:
        return None
    path = Path(os.path.dirname(module.__file__)) / "data"
    return path if path.is_dir() else None
