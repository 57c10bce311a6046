"""Alembic migrations for read models, projection tracking and data keys."""
