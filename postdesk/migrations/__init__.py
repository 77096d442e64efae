"""Alembic migrations of postdesk's schema.

They ship inside the package so `postdesk init` works after a plain pip install.
"""
