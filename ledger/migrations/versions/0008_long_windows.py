"""Incident-time queries read what they return: a partial index of the incidents whose
window is longer than a day, by window end.

A Timeline query from time S looks for windows ending at or after S. A window of at most a
day that does so starts at or after S - 1 day, so those are found by a range of the
window-start index (incidents_window, incidents_party); the few longer ones are found
through this index (see LedgerStore.timeline). Before it, the start could only be bounded
by the longest window allowed (366 days): a query for the last day read a year.

The index is built from the rows already there; nothing is written. IF NOT EXISTS: a test
that rewinds a database to an older revision keeps later indexes it does not know of.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen here rather than imported (ledger/queries.py SHORT_WINDOW_US): the query must
# repeat this predicate word for word for SQLite to use the index.
SHORT_WINDOW_US = 86_400 * 1_000_000


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS incidents_long_window ON incidents (window_end_us) "
        f"WHERE window_end_us - window_start_us > {SHORT_WINDOW_US}"
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
