"""EVSE data at the hub (eRoamingPushEvseData): one row per EVSE.

``record`` is the last record built from the catalog that passed the schema (JSON text; a
delete sends it too), ``digest`` its fingerprint, ``want`` whether the hub should hold it.
``hub_digest`` is what the hub holds as far as known (NULL: unknown, or nothing),
``hub_holds`` whether it may hold a record at all, ``acknowledged`` whether it confirmed holding
one (an EVSE's status goes to the hub only then). ``errors`` lists the field errors of the
current build (JSON; such a record is not pushed). The rest is the delivery bookkeeping the
``evse`` rows have too. Written by the push leader only (fenced), like ``evse``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_evse_data"
down_revision = "0005_networks"
branch_labels = None
depends_on = None

REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "evse_data",
        sa.Column("evse_id", sa.Text(), primary_key=True),
        sa.Column("charge_point_id", sa.Text(), nullable=False),
        sa.Column("record", sa.Text()),
        sa.Column("digest", sa.Text()),
        sa.Column("want", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("hub_digest", sa.Text()),
        sa.Column("hub_holds", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("acknowledged", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("pending_since", REAL),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_outcome", sa.Text()),
        sa.Column("last_code", sa.Text()),
        sa.Column("last_info", sa.Text()),
        sa.Column("last_push_at", REAL),
        sa.Column("parked_code", sa.Text()),
        sa.Column("errors", sa.Text()),
        sa.Column("txid", sa.BigInteger()),
        sa.Column("written_by", sa.Text()),
    )
    # Followers read what the leader wrote by transaction id (bridge.store.pgcluster).
    op.create_index("evse_data_txid", "evse_data", ["txid"])


def downgrade() -> None:
    op.drop_index("evse_data_txid", "evse_data")
    op.drop_table("evse_data")
