"""Advance notices: where and when each notified activity runs, so that an incident's
dossier can show the notices logged before it that overlap its time and place.
Append-only like every ledger table.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("party", sa.String(16), nullable=False),
        sa.Column("activity", sa.Integer, nullable=False),
        sa.Column("window_start_us", sa.BigInteger, nullable=False),
        sa.Column("window_end_us", sa.BigInteger, nullable=False),
        sa.Column("latitude", sa.Double, nullable=False),
        sa.Column("longitude", sa.Double, nullable=False),
        sa.Column("radius_m", sa.Double, nullable=False),
    )
    op.create_index("notices_window", "notices", ["window_end_us", "window_start_us"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER notices_append_only BEFORE UPDATE OR DELETE ON notices "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER notices_no_truncate BEFORE TRUNCATE ON notices "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER notices_no_{action.lower()} BEFORE {action} ON notices "
                "BEGIN SELECT RAISE(ABORT, 'notices is append-only'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
