"""EVSE networks and groups (eRoamingEVSEAssignment).

* ``catalog_network``: one catalog object per network (name, draft/active, its groups and
  EVSEs), stored like the other catalog objects (JSON body, source, version) and followed by
  other replicas like them (``txid`` / ``written_by``).
* ``network_assignment``: what the hub acknowledged, per network and EVSE: the group it put the
  EVSE in and when. Written by the push leader only (fenced like ``evse``), read at start, so
  that an active network is never sent an EVSE the hub already assigned.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_networks"
down_revision = "0004_replicas"
branch_labels = None
depends_on = None

REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "catalog_network",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.Text(), nullable=False),
        sa.Column("txid", sa.BigInteger()),
        sa.Column("written_by", sa.Text()),
    )
    op.create_index("catalog_network_txid", "catalog_network", ["txid"])
    op.create_table(
        "network_assignment",
        sa.Column("network", sa.Text(), primary_key=True),
        sa.Column("evse_id", sa.Text(), primary_key=True),
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("acked_at", REAL),
        sa.Column("txid", sa.BigInteger()),
        sa.Column("written_by", sa.Text()),
    )
    op.create_index("network_assignment_txid", "network_assignment", ["txid"])


def downgrade() -> None:
    op.drop_index("network_assignment_txid", "network_assignment")
    op.drop_table("network_assignment")
    op.drop_index("catalog_network_txid", "catalog_network")
    op.drop_table("catalog_network")
