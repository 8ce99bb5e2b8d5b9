"""Baseline: the schema of the state database before versioned migrations (schema_version 1).

Tables ``meta``, ``connector``, ``evse`` and ``charge_point`` exactly as the bridge created them
with ``CREATE TABLE IF NOT EXISTS``. Databases made that way carry ``meta.schema_version = 1``
and no alembic table; ``bridge.store.migrate`` stamps them at this revision.

Written with SQLAlchemy types so that PostgreSQL gets the same tables: floats are SQLite REAL
(as before) and DOUBLE PRECISION elsewhere; ``WITHOUT ROWID`` applies to SQLite only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
SQLITE = {"sqlite_with_rowid": False}


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        **SQLITE,
    )
    op.create_table(
        "connector",
        sa.Column("charge_point_id", sa.Text(), nullable=False, primary_key=True),
        sa.Column("evse_key", sa.Integer(), nullable=False, primary_key=True, autoincrement=False),
        sa.Column(
            "connector_id", sa.Integer(), nullable=False, primary_key=True, autoincrement=False
        ),
        sa.Column("ocpp_status", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text()),
        sa.Column("reported_at", sa.Text()),
        sa.Column("received_at", REAL, nullable=False),
        **SQLITE,
    )
    op.create_table(
        "evse",
        sa.Column("evse_id", sa.Text(), primary_key=True),
        sa.Column("charge_point_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("changed_at", REAL),
        sa.Column("hub_status", sa.Text()),
        sa.Column("hub_holds", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("hub_acked_at", REAL),
        sa.Column("pending_since", REAL),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_outcome", sa.Text()),
        sa.Column("last_code", sa.Text()),
        sa.Column("last_info", sa.Text()),
        sa.Column("last_push_at", REAL),
        sa.Column("parked_code", sa.Text()),
        **SQLITE,
    )
    op.create_table(
        "charge_point",
        sa.Column("charge_point_id", sa.Text(), primary_key=True),
        sa.Column("protocol", sa.Text()),
        sa.Column("connected", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("offline", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_seen", REAL),
        sa.Column("disconnected_at", REAL),
        sa.Column("boot", sa.Text()),
        **SQLITE,
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in ("charge_point", "evse", "connector", "meta"):
        op.drop_table(table)
