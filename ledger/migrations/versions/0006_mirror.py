"""Mirrors: a database loaded from a log's offline bundles (`ceasefire mirror init`) holds
one row naming the log it copies. Such a database is served read-only and is never a
log of its own: it has no log key, and its checkpoints are the log's signed notes.
Insert-only like every ledger table.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_of",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin", sa.Text, nullable=False),
        # SHA-256 (hex) of entry 0's envelope: a later bundle must have the same.
        sa.Column("trust_root_sha256", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="mirror_of_single_row"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER mirror_of_append_only BEFORE UPDATE OR DELETE ON mirror_of "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER mirror_of_no_truncate BEFORE TRUNCATE ON mirror_of "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER mirror_of_no_{action.lower()} BEFORE {action} ON mirror_of "
                "BEGIN SELECT RAISE(ABORT, 'mirror_of is append-only'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
