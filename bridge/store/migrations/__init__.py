"""Versioned migrations of the state database (alembic); see ``bridge.store.migrate``."""
