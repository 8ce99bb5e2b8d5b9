"""Alembic environment of the state database.

Online, the caller hands over an open SQLAlchemy connection (``config.attributes["connection"]``,
see ``bridge.store.migrate``); offline (``alembic upgrade --sql``) SQL is rendered for the URL
in ``config.attributes["url"]``, e.g. to review what a PostgreSQL database would get.
"""

from __future__ import annotations

from alembic import context

config = context.config

if context.is_offline_mode():
    context.configure(
        url=config.attributes.get("url", "sqlite://"),
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes["connection"]
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
