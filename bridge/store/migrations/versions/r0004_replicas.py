"""Replicas on one PostgreSQL database: the push lease, the replicas, the change feed.

* ``lease``: one row per lease (``push``: who may send to the hub). ``epoch`` grows with every
  new holder, so a deposed leader's late writes are refused; ``expires_at`` is in the
  database's clock; ``in_flight`` names the hub request the holder has out (an EvseID, or
  ``fullLoad``), so that the next leader knows whose hub status is unknown.
* ``replica``: every running replica, its heartbeat and role (the leader notices dead ones).
* ``charge_point.replica``: which replica holds the charger's connection.
* ``txid`` / ``written_by`` on the rows other replicas follow (connectors, charge points,
  EVSEs, catalog objects): the writing transaction and replica, so that each replica reads
  exactly what the others changed (``bridge.cluster.feed``).

SQLite gets the same tables and columns (one process: they stay unused but keep both
schemas one).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_replicas"
down_revision = "0002_catalog"
branch_labels = None
depends_on = None

REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
FOLLOWED = ("connector", "charge_point", "evse", "catalog_location", "catalog_station",
            "catalog_template")  # fmt: skip


def upgrade() -> None:
    lease = op.create_table(
        "lease",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("holder", sa.Text()),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("expires_at", REAL),
        sa.Column("acquired_at", REAL),
        sa.Column("in_flight", sa.Text()),
    )
    op.bulk_insert(lease, [{"name": "push", "holder": None, "epoch": 0}])
    op.create_table(
        "replica",
        sa.Column("replica_id", sa.Text(), primary_key=True),
        sa.Column("host", sa.Text()),
        sa.Column("pid", sa.Integer()),
        sa.Column("started_at", REAL),
        sa.Column("heartbeat_at", REAL),
        sa.Column("role", sa.Text()),
        sa.Column("ops_url", sa.Text()),
    )
    with op.batch_alter_table("charge_point") as batch:
        batch.add_column(sa.Column("replica", sa.Text()))
    for table in FOLLOWED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("txid", sa.BigInteger()))
            batch.add_column(sa.Column("written_by", sa.Text()))
        op.create_index(f"{table}_txid", table, ["txid"])


def downgrade() -> None:
    for table in FOLLOWED:
        op.drop_index(f"{table}_txid", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("written_by")
            batch.drop_column("txid")
    with op.batch_alter_table("charge_point") as batch:
        batch.drop_column("replica")
    op.drop_table("replica")
    op.drop_table("lease")
