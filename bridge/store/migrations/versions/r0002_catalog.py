"""The charge-station catalog: locations, charge stations (with their EVSEs), templates.

Each object is one row: its key columns, the object as JSON text (validated by the pydantic
models of ``bridge.catalog`` on every read), where it came from (``api`` or ``file``), a
version that increases with every change (the ETag) and ``last_updated``. JSON in a TEXT column
reads the same in SQLite and PostgreSQL.

``meta.schema_version`` becomes 2 so that a bridge from before versioned migrations, which only
knows version 1, refuses this database instead of running without the catalog.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_catalog"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def _object(name: str, *extra: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Text(), primary_key=True),
        *extra,
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.Text(), nullable=False),
    )


def upgrade() -> None:
    _object("catalog_location")
    _object(
        "catalog_station",
        sa.Column("location_id", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text()),
    )
    _object("catalog_template")
    op.create_index("catalog_station_location", "catalog_station", ["location_id"])
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("catalog_station_location", "catalog_station")
    for table in ("catalog_template", "catalog_station", "catalog_location"):
        op.drop_table(table)
    op.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
