"""Alembic migrations of the results database (run by harness.results.db)."""
