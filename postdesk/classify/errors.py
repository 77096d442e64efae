"""The errors triage raises on purpose (each a one-line PostdeskError)."""

from __future__ import annotations

from postdesk.errors import PostdeskError


class ModelError(PostdeskError):
    """A model is missing, unknown, unreadable, or not one postdesk trusts to load."""


class TrainingDataError(PostdeskError):
    """Training or evaluation data is missing, malformed or too small to learn from."""
