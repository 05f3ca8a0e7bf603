"""Sighting keys: each incident report filed by grid cell and day, so that the search for a
new report's likely duplicates reads the reports near it in place and time instead of
scanning the log. Existing reports are filed from their stored place and window.
Append-only like every ledger table. And an index on evidence_refs by entry, to read the
evidence a candidate names.

Revision ID: 0004
Revises: 0003
"""

import math

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PAGE = 1000
# Frozen here rather than imported (see ledger/duplicates.py, whose filing these match), so
# later changes to the ledger's code cannot change what this migration wrote.
CELL_DEG = 0.05
DAY_US = 86_400 * 1_000_000
MAX_DAYS_FILED = 8
LONG_WINDOWS = -(10**9)


def _filed_under(lat: float, lon: float, start_us: int, end_us: int) -> list[tuple[int, int]]:
    first, last = start_us // DAY_US, end_us // DAY_US
    days = range(first, last + 1) if last - first < MAX_DAYS_FILED else [LONG_WINDOWS]
    cell = math.floor(lat / CELL_DEG) * 10_000 + math.floor(lon / CELL_DEG)
    return [(cell, day) for day in days]


def upgrade() -> None:
    keys = op.create_table(
        "sighting_keys",
        sa.Column("cell", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
    )
    op.create_index("evidence_refs_idx", "evidence_refs", ["idx"])
    conn = op.get_bind()
    start = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT idx, latitude, longitude, window_start_us, window_end_us FROM incidents "
                "WHERE idx >= :s ORDER BY idx LIMIT :n"
            ),
            {"s": start, "n": PAGE},
        ).all()
        batch = [
            {"cell": cell, "day": day, "idx": idx}
            for idx, lat, lon, t0, t1 in rows
            for cell, day in _filed_under(lat, lon, t0, t1)
        ]
        if batch:
            op.bulk_insert(keys, batch)
        if len(rows) < PAGE:
            break
        start = rows[-1][0] + 1
    if conn.dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER sighting_keys_append_only BEFORE UPDATE OR DELETE ON sighting_keys "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER sighting_keys_no_truncate BEFORE TRUNCATE ON sighting_keys "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER sighting_keys_no_{action.lower()} BEFORE {action} ON "
                "sighting_keys BEGIN SELECT RAISE(ABORT, 'sighting_keys is append-only'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
