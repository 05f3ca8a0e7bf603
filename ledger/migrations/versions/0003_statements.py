"""Statements by identity: SHA-256 of the DSSE PAE (what the signatures cover) -> the entry
that logged it. The primary key is what keeps one signed statement from becoming two
entries however its JSON is re-spelt, across replicas too. Append-only like every ledger
table. Existing entries are indexed in log order; a statement an older server logged twice
keeps its first entry here (the audit reports the second).

Revision ID: 0003
Revises: 0002
"""

import base64
import hashlib
import json

import sqlalchemy as sa
from alembic import op
from ceasefire.v1 import log_pb2

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PAGE = 1000


def _pae_sha256(envelope_json: bytes) -> bytes:
    # Frozen here rather than imported, so later changes to the ledger's code cannot
    # change what this migration wrote.
    doc = json.loads(envelope_json)
    kind = doc["payloadType"].encode("utf-8")
    payload = base64.b64decode(doc["payload"])
    return hashlib.sha256(b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)).digest()


def upgrade() -> None:
    statements = op.create_table(
        "statements",
        sa.Column("sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column("idx", sa.BigInteger, sa.ForeignKey("entries.idx"), nullable=False, unique=True),
    )
    conn = op.get_bind()
    seen: set[bytes] = set()
    start = 0
    while True:
        rows = conn.execute(
            sa.text("SELECT idx, entry FROM entries WHERE idx >= :s ORDER BY idx LIMIT :n"),
            {"s": start, "n": PAGE},
        ).all()
        batch = []
        for idx, data in rows:
            digest = _pae_sha256(log_pb2.LogEntry.FromString(bytes(data)).envelope)
            if digest not in seen:
                seen.add(digest)
                batch.append({"sha256": digest, "idx": idx})
        if batch:
            op.bulk_insert(statements, batch)
        if len(rows) < PAGE:
            break
        start = rows[-1][0] + 1
    if conn.dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER statements_append_only BEFORE UPDATE OR DELETE ON statements "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER statements_no_truncate BEFORE TRUNCATE ON statements "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER statements_no_{action.lower()} BEFORE {action} ON statements "
                "BEGIN SELECT RAISE(ABORT, 'statements is append-only'); END"
            )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
