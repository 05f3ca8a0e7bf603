"""Incident queries: what the Timeline filters read besides the incidents row, and a spatial
index of the incidents' anchor points.

- incident_facts: per incident report, the party it blames, the side and the distance to the
  border (and nearest segment) its entry's geo facts record, whether it likely duplicates an
  earlier report, and its narrative case folded. Append-only like every ledger table.
- SQLite: an R*Tree virtual table of the anchor points, incident_places (a virtual table
  takes no trigger: it is derived, and rebuilt from incidents if ever in doubt).
  PostgreSQL: a GiST index on point(longitude, latitude) of incidents (built-in geometric
  types; no PostGIS).

Existing reports are filed from their stored entries, a page at a time.

Revision ID: 0007
Revises: 0006
"""

import base64
import json

import sqlalchemy as sa
from alembic import op
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PAGE = 500


# Frozen here rather than imported (see ledger/geofacts.py `side` and ledger/service.py
# `incident_row`, whose rows these match), so later changes to the ledger's code cannot
# change what this migration wrote. The protobuf wire format is the log's own contract.
def _side(geo: log_pb2.GeoFacts) -> str:
    if geo.ambiguous:
        return "ambiguous"
    if geo.shares:
        return next((s.territory or "neither" for s in geo.shares if s.share > 0.5), "ambiguous")
    return geo.territory or "neither"


def _facts(idx: int, data: bytes) -> dict[str, object]:
    entry = log_pb2.LogEntry.FromString(data)
    envelope = json.loads(entry.envelope)
    report = pb.IncidentReport.FromString(base64.b64decode(envelope["payload"]))
    geo = entry.validation.geo
    return {
        "idx": idx,
        "blamed": report.alleged_responsible_party,
        "side": _side(geo),
        "border_m": geo.distance_to_border_m if geo.nearest_segment else None,
        "segment": geo.nearest_segment,
        "likely_duplicate": len(entry.validation.likely_duplicates) > 0,
        "narrative": report.narrative.casefold(),
    }


def upgrade() -> None:
    facts = op.create_table(
        "incident_facts",
        sa.Column(
            "idx",
            sa.BigInteger,
            sa.ForeignKey("entries.idx"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("blamed", sa.String(16), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("border_m", sa.Double, nullable=True),
        sa.Column("segment", sa.Text, nullable=False),
        sa.Column("likely_duplicate", sa.Boolean, nullable=False),
        sa.Column("narrative", sa.Text, nullable=False),
    )
    op.create_index("incident_facts_border", "incident_facts", ["border_m"])
    op.create_index("incident_facts_segment", "incident_facts", ["segment", "border_m"])
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    places = None
    if sqlite:
        op.execute(
            "CREATE VIRTUAL TABLE incident_places USING rtree(idx, min_lat, max_lat, "
            "min_lon, max_lon)"
        )
        places = sa.table(
            "incident_places",
            *(sa.column(c) for c in ("idx", "min_lat", "max_lat", "min_lon", "max_lon")),
        )
    else:
        op.execute(
            "CREATE INDEX incidents_place ON incidents USING gist (point(longitude, latitude))"
        )
    start = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT i.idx, i.latitude, i.longitude, e.entry FROM incidents i "
                "JOIN entries e ON e.idx = i.idx WHERE i.idx >= :s ORDER BY i.idx LIMIT :n"
            ),
            {"s": start, "n": PAGE},
        ).all()
        if rows:
            op.bulk_insert(facts, [_facts(idx, bytes(data)) for idx, _, _, data in rows])
            if places is not None:
                op.bulk_insert(
                    places,
                    [
                        {"idx": idx, "min_lat": lat, "max_lat": lat, "min_lon": lon, "max_lon": lon}
                        for idx, lat, lon, _ in rows
                    ],
                )
        if len(rows) < PAGE:
            break
        start = rows[-1][0] + 1
    if sqlite:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER incident_facts_no_{action.lower()} BEFORE {action} ON "
                "incident_facts BEGIN SELECT RAISE(ABORT, 'incident_facts is append-only'); END"
            )
    else:
        op.execute(
            "CREATE TRIGGER incident_facts_append_only BEFORE UPDATE OR DELETE ON incident_facts "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER incident_facts_no_truncate BEFORE TRUNCATE ON incident_facts "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()"
        )


def downgrade() -> None:
    raise NotImplementedError("the ledger's schema is never downgraded: it would lose history")
