"""Initial schema: entries, Merkle nodes, tree state, checkpoints, incident and evidence
indexes, blobs.

Append-only is enforced inside the database: triggers reject UPDATE and DELETE (and, on
PostgreSQL, TRUNCATE) on every ledger table. tree_state is the one mutable row, and its
trigger refuses to let the tree shrink.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = (
    "entries",
    "tree_nodes",
    "checkpoints",
    "incidents",
    "links",
    "evidence_refs",
    "blobs",
)


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("envelope_sha256", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("integrated_time_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
    )
    op.create_index("entries_kind", "entries", ["kind", "idx"])
    op.create_table(
        "tree_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "tree_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.Column("last_leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("last_time_us", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="tree_state_single_row"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_table(
        "links",
        sa.Column("target_idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("response", sa.Integer, nullable=False),
    )
    op.create_table(
        "evidence_refs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("party", sa.String(16), nullable=False),
        sa.Column("category", sa.Integer, nullable=False),
        sa.Column("window_start_us", sa.BigInteger, nullable=False),
        sa.Column("window_end_us", sa.BigInteger, nullable=False),
        sa.Column("latitude", sa.Double, nullable=False),
        sa.Column("longitude", sa.Double, nullable=False),
        sa.Column("territory", sa.String(16), nullable=False),
    )
    op.create_index("incidents_window", "incidents", ["window_start_us", "window_end_us"])
    op.create_index("incidents_party", "incidents", ["party", "window_start_us"])

    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table in APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    op.execute(
        "CREATE TRIGGER tree_state_no_shrink BEFORE UPDATE ON tree_state "
        "WHEN NEW.size < OLD.size BEGIN SELECT RAISE(ABORT, 'the tree cannot shrink'); END"
    )
    op.execute(
        "CREATE TRIGGER tree_state_no_delete BEFORE DELETE ON tree_state "
        "BEGIN SELECT RAISE(ABORT, 'tree_state cannot be deleted'); END"
    )


def _postgres_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'P0001';
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION ledger_no_shrink() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' OR NEW.size < OLD.size THEN
            RAISE EXCEPTION 'the tree cannot shrink' USING ERRCODE = 'P0001';
          END IF;
          RETURN NEW;
        END $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    op.execute(
        "CREATE TRIGGER tree_state_no_shrink BEFORE UPDATE OR DELETE ON tree_state "
        "FOR EACH ROW EXECUTE FUNCTION ledger_no_shrink()"
    )
    op.execute(
        "CREATE TRIGGER tree_state_no_truncate BEFORE TRUNCATE ON tree_state "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
