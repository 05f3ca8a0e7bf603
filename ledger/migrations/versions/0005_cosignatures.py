"""Cosignatures: the C2SP tlog-cosignature lines witnesses returned for a checkpoint, kept
to be served after the log's own signature. One row per checkpoint size and witness key;
like the rest of the ledger, rows are only ever added.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cosignatures",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cosignatures")
