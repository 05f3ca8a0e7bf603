"""Exports (GeoJSON, CSV, GeoPackage) and pictures (map PNG and HTML, weekly chart) of
incidents read from a real server: read back with geopandas, pyogrio, the csv module and
Pillow, and compared with the reports that were signed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from matplotlib.markers import MarkerStyle
from nacl.signing import SigningKey
from PIL import Image

from clients import exports, pictures
from clients.cli import main
from clients.client import LedgerClient
from clients.exports import COLUMNS, Checkpoint
from clients.exports_cli import read_query
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import incidents, statements
from ledger.clock import now_us, to_timestamp, to_us
from ledger.formats import dsse, merkle
from tests.conftest import RunningLedger
from tests.reports import report, signed

FRONTIER = "implies no position on any frontier"
DAY_US = 86_400 * 1_000_000


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what the server stores in is not what these tests are about."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _counts(low: int, best: int, high: int) -> pb.CountRange:
    return pb.CountRange(low=low, best=best, high=high)


def _submit(running: RunningLedger, kind: str, statement: Message, key: SigningKey) -> int:
    envelope = dsse.sign(kind, statement.SerializeToString(), [key])
    return running.client.submit(envelope.to_json()).receipt.index


@dataclass(frozen=True)
class Want:
    """What a report's row must say, worked out by hand from docs/investigators.md (the
    crosswalk) and from where the place is: not computed by the code under test."""

    side: str
    time_precision: int  # ACLED
    date_prec: int  # UCDP GED
    where_prec: int  # UCDP GED
    event_day: int  # ACLED event_date: days after the window's start date


class Logged(dict[int, pb.IncidentReport]):
    """The reports logged by index, with what each row must say and the history made."""

    def __init__(self) -> None:
        super().__init__()
        self.want: dict[int, Want] = {}
        self.status: dict[int, str] = {}
        self.retracted_at: dict[int, int] = {}


def _on_one_day(r: pb.IncidentReport) -> pb.IncidentReport:
    """A short window moved an hour back if it straddles midnight (UTC), so that its
    crosswalk codes are those of one day whatever the hour the test runs at."""
    if to_us(r.window.start) // DAY_US != to_us(r.window.end) // DAY_US:
        r.window.start.seconds -= 3600
        r.window.end.seconds -= 3600
    return r


def _window(
    r: pb.IncidentReport, start: datetime, end: datetime, precision: pb.TimePrecision.ValueType
) -> pb.IncidentReport:
    r.window.CopyFrom(
        pb.TimeWindow(
            start=to_timestamp(int(start.timestamp() * 1e6)),
            end=to_timestamp(int(end.timestamp() * 1e6)),
            precision=precision,
        )
    )
    return r


def _reports() -> list[tuple[pb.IncidentReport, Want]]:
    """Points on both sides, a polygon (given clockwise), a line, an observation sector;
    several categories, casualties, precisions and weeks; a window of one week and two of
    several days, so that every crosswalk code differs from a report's to another's."""
    berd = report("ARM", blames="AZE", hours_ago=5)
    berd.casualties.CopyFrom(
        pb.Casualties(civilians_killed=_counts(1, 2, 3), military_injured=_counts(0, 1, 4))
    )
    gazakh = report(
        "AZE", lat=41.0933, lon=45.3661, hours_ago=30, blames="ARM",
        category=pb.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY,
    )  # fmt: skip
    gazakh.location.precision = pb.LOCATION_PRECISION_EXACT
    gazakh.casualties.military_killed.CopyFrom(_counts(2, 2, 5))
    sadarak = report(
        "AZE", lat=39.7117, lon=44.8867, hours_ago=200, blames="ARM",
        category=pb.INCIDENT_CATEGORY_SNIPER,
    )  # fmt: skip
    sadarak.window.precision = pb.TIME_PRECISION_DAY
    kapan = report(
        "ARM", lat=39.2075, lon=46.4058, hours_ago=400, blames="AZE",
        category=pb.INCIDENT_CATEGORY_DRONE_STRIKE,
    )  # fmt: skip
    kapan.location.precision = pb.LOCATION_PRECISION_REGION
    kapan.location.uncertainty_m = 20_000
    polygon = report("ARM", hours_ago=50, category=pb.INCIDENT_CATEGORY_PROPERTY_DAMAGE)
    polygon.location.polygon.CopyFrom(
        pb.GeoPolygon(
            points=[  # clockwise: the export must turn it counter-clockwise (RFC 7946)
                pb.GeoPoint(latitude=40.87, longitude=45.38),
                pb.GeoPoint(latitude=40.89, longitude=45.40),
                pb.GeoPoint(latitude=40.87, longitude=45.42),
            ]
        )
    )
    line = report("AZE", hours_ago=80, blames="ARM", category=pb.INCIDENT_CATEGORY_ROCKET)
    line.location.line.CopyFrom(
        pb.GeoLine(
            origin=pb.GeoPoint(latitude=40.90, longitude=45.37),
            impact=pb.GeoPoint(latitude=40.95, longitude=45.45),
        )
    )
    sector = report("ARM", hours_ago=10, blames="AZE")
    sector.location.observation.CopyFrom(
        pb.Observation(
            observer=pb.GeoPoint(latitude=40.8811, longitude=45.3875),
            bearing_from_deg=60,
            bearing_to_deg=120,
            distance_min_m=1000,
            distance_max_m=5000,
        )
    )
    sector.weapons.extend(["AK-74", "PKM"])
    sector.fire_from_bearing_deg = 95.5
    sector.evidence_sha256.extend(["ab" * 32, "cd" * 32])
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    monday = today - timedelta(days=today.weekday() + 14)
    # Known to the week only: Monday to Monday (7 days), ACLED 2, UCDP 3, dated Thursday.
    week = _window(
        report("ARM", lat=39.77, lon=44.80, category=pb.INCIDENT_CATEGORY_TROOP_MOVEMENT),
        monday, monday + timedelta(days=7), pb.TIME_PRECISION_WEEK,
    )  # fmt: skip
    # A day known, but the window spans three nights: ACLED 2, UCDP 2, dated a day on.
    nights = today - timedelta(days=20)
    days = _window(
        report("AZE", lat=39.45, lon=45.60, blames="ARM", category=pb.INCIDENT_CATEGORY_DETENTION),
        nights + timedelta(hours=18), nights + timedelta(days=3, hours=6), pb.TIME_PRECISION_DAY,
    )  # fmt: skip
    days.casualties.civilians_injured.CopyFrom(_counts(1, 1, 2))
    days.casualties.military_killed.CopyFrom(_counts(0, 1, 3))
    # Twelve days, the month known: ACLED 3, UCDP 4, dated six days on.
    month = today - timedelta(days=40)
    works = _window(
        report("AZE", lat=41.0933, lon=45.3661, category=pb.INCIDENT_CATEGORY_ENGINEERING_WORKS),
        month, month + timedelta(days=12), pb.TIME_PRECISION_MONTH,
    )  # fmt: skip
    works.location.precision = pb.LOCATION_PRECISION_EXACT
    return [
        (_on_one_day(berd), Want("ARM", 1, 1, 2, 0)),
        (_on_one_day(gazakh), Want("AZE", 1, 1, 1, 0)),
        (_on_one_day(sadarak), Want("AZE", 1, 1, 2, 0)),
        (_on_one_day(kapan), Want("ambiguous", 1, 1, 4, 0)),  # 20 km reach the border
        (_on_one_day(polygon), Want("ARM", 1, 1, 2, 0)),  # an area: by its shares
        (_on_one_day(line), Want("ARM", 1, 1, 5, 0)),
        (_on_one_day(sector), Want("ARM", 1, 1, 2, 0)),
        (week, Want("ARM", 2, 3, 2, 3)),
        (days, Want("AZE", 2, 2, 2, 1)),
        (works, Want("AZE", 3, 4, 1, 6)),
    ]


def populate(running: RunningLedger) -> Logged:
    """The reports logged, one disputed (AZE denies Berd) and one retracted (Kapan)."""
    p = running.parties
    key = {"ARM": p.arm_monitor, "AZE": p.aze_monitor}
    logged = Logged()
    for r, want in _reports():
        index = running.client.submit(signed(r, key[r.reporting_party])).receipt.index
        logged[index], logged.want[index], logged.status[index] = r, want, "reported"
    berd, kapan = next(iter(logged)), list(logged)[3]
    now = to_timestamp(now_us())
    denial = pb.CounterClaim(
        incident_index=berd, created_time=now, party="AZE", kind=pb.RESPONSE_KIND_DENIAL,
        narrative="No fire from our positions.", narrative_language="en",
    )  # fmt: skip
    _submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    retraction = pb.IncidentRetraction(
        incident_index=kapan, created_time=now, party="ARM", reason="double-counted"
    )
    logged.retracted_at[kapan] = _submit(
        running, statements.RETRACTION, retraction, p.arm_authority
    )
    logged.status[berd], logged.status[kapan] = "disputed", "retracted"
    return logged


def read(running: RunningLedger) -> tuple[list[api.TimelineResponse], Checkpoint]:
    checkpoint = Checkpoint.of(running.client.checkpoint())
    return list(running.client.timeline(as_of_index=checkpoint.size)), checkpoint


def expected_shape(r: pb.IncidentReport) -> shapely.Geometry:
    loc = r.location
    kind = loc.WhichOneof("geometry")
    if kind == "point":
        return shapely.Point(loc.point.longitude, loc.point.latitude)
    if kind == "line":
        a, b = loc.line.origin, loc.line.impact
        return shapely.LineString([(a.longitude, a.latitude), (b.longitude, b.latitude)])
    if kind == "polygon":
        return shapely.Polygon([(p.longitude, p.latitude) for p in loc.polygon.points])
    return exports.sector_polygon(loc.observation)


NAMES = {"ARM": "Armenia", "AZE": "Azerbaijan", "": ""}
# docs/investigators.md's table, for the categories logged here.
ACLED_TYPES = {
    "small_arms_fire": ("Battles", "Armed clash"),
    "sniper": ("Battles", "Armed clash"),
    "mortar_or_artillery": ("Explosions/Remote violence", "Shelling/artillery/missile attack"),
    "rocket": ("Explosions/Remote violence", "Shelling/artillery/missile attack"),
    "drone_strike": ("Explosions/Remote violence", "Air/drone strike"),
    "property_damage": ("Strategic developments", "Looting/property destruction"),
    "troop_movement": ("Strategic developments", "Change to group/activity"),
    "detention": ("Strategic developments", "Arrests"),
    "engineering_works": ("Strategic developments", "Other"),
}


def _short(enum: Any, value: int) -> str:
    return str(enum.Name(value)).split("_", 2)[2].lower()


def _when(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)


def _rfc3339(ts: Any) -> str:
    return _when(ts).isoformat().replace("+00:00", "Z")


def expected_row(
    t: api.TimelineResponse, logged: Logged, checkpoint: Checkpoint, borders: BorderDataset
) -> dict[str, Any]:
    """Every column of the row of `t`, from the report that was signed, the hand-made
    `Want`, the history made by populate() and the geo facts the server recorded."""
    index = t.index
    r, want = logged[index], logged.want[index]
    loc = r.location
    kind = loc.WhichOneof("geometry")
    anchor = {
        "point": loc.point, "line": loc.line.origin, "observation": loc.observation.observer,
    }.get(kind or "") or loc.polygon.points[0]  # fmt: skip
    obs = loc.observation if kind == "observation" else None
    cas = r.casualties
    killed = {
        e: getattr(cas.civilians_killed, e) + getattr(cas.military_killed, e)
        for e in ("low", "best", "high")
    }
    start, end = _when(r.window.start).date(), _when(r.window.end).date()
    category = _short(pb.IncidentCategory, r.category)
    geo = t.current.geo
    blamed, reporter = r.alleged_responsible_party, r.reporting_party
    row: dict[str, Any] = {
        "ledger_index": index,
        "leaf_hash": hashlib.sha256(b"\x00" + t.entry).hexdigest(),
        "checkpoint_origin": checkpoint.signed_note.split("\n")[0],
        "checkpoint_size": checkpoint.size,
        "checkpoint_root": checkpoint.root.hex(),
        "version": "current",
        "reporting_party": reporter,
        "status": logged.status[index],
        "category": category,
        "observation_mode": _short(pb.ObservationMode, r.observation_mode),
        "alleged_responsible_party": blamed,
        "window_start": _rfc3339(r.window.start),
        "window_end": _rfc3339(r.window.end),
        "window_precision": _short(pb.TimePrecision, r.window.precision),
        "geometry_kind": kind,
        "anchor_latitude": anchor.latitude,
        "anchor_longitude": anchor.longitude,
        "uncertainty_m": loc.uncertainty_m,
        "location_precision": _short(pb.LocationPrecision, loc.precision),
        "observer_bearing_from_deg": obs.bearing_from_deg if obs else None,
        "observer_bearing_to_deg": obs.bearing_to_deg if obs else None,
        "observer_distance_min_m": obs.distance_min_m if obs else None,
        "observer_distance_max_m": obs.distance_max_m if obs else None,
        "casualties_reported": r.HasField("casualties"),
        **{
            f"{k}_{e}": getattr(getattr(cas, k), e)
            for k in exports.CASUALTY_KINDS
            for e in ("low", "best", "high")
        },
        "weapons": "; ".join(r.weapons),
        "fire_from_bearing_deg": (
            r.fire_from_bearing_deg if r.HasField("fire_from_bearing_deg") else None
        ),
        "evidence_sha256": " ".join(r.evidence_sha256),
        "narrative": r.narrative,
        "narrative_language": r.narrative_language,
        "territory": geo.territory,
        "side": want.side,
        "distance_to_border_m": geo.distance_to_border_m,
        "nearest_segment": geo.nearest_segment,
        "ambiguous": geo.ambiguous,
        "border_dataset_sha256": borders.sha256,
        "amendments": 0,
        "amended_at_index": 0,
        "retracted_at_index": logged.retracted_at.get(index, 0),
        "likely_duplicate_of": " ".join(str(d.index) for d in t.current.likely_duplicate_of),
        "event_date": (start + timedelta(days=want.event_day)).isoformat(),
        "time_precision": want.time_precision,
        "event_type": ACLED_TYPES[category][0],
        "sub_event_type": ACLED_TYPES[category][1],
        "actor1": NAMES[blamed],
        "country": NAMES[geo.territory],
        "latitude": anchor.latitude,
        "longitude": anchor.longitude,
        "geo_precision": {"exact": 1, "near": 2, "region": 3}[
            _short(pb.LocationPrecision, loc.precision)
        ],
        "fatalities": killed["best"],
        "date_start": start.isoformat(),
        "date_end": end.isoformat(),
        "date_prec": want.date_prec,
        "where_prec": want.where_prec,
        "side_a": NAMES[blamed],
        "side_b": NAMES[reporter] if reporter != blamed else "",
        "deaths_civilians": cas.civilians_killed.best,
        "deaths_unknown": cas.military_killed.best,
        "low": killed["low"],
        "best": killed["best"],
        "high": killed["high"],
        "disclaimer": exports.disclaimer(borders),
    }
    assert list(row) == list(COLUMNS)  # every column, none left unchecked
    assert FRONTIER in row["disclaimer"] and geo.dataset_sha256 == borders.sha256
    if kind in ("point", "line") and not geo.ambiguous:  # a place's side: its territory
        assert geo.territory == want.side
    return row


def expected_rows(
    rows: list[api.TimelineResponse], logged: Logged, checkpoint: Checkpoint, borders: BorderDataset
) -> dict[int, dict[str, Any]]:
    """The rows by index, checked first against what exports.records() gives."""
    want = {t.index: expected_row(t, logged, checkpoint, borders) for t in rows}
    got = {props["ledger_index"]: props for _, props in exports.records(rows, checkpoint, borders)}
    assert sorted(got) == sorted(want) == sorted(logged)
    for index, props in got.items():
        for column in COLUMNS:
            assert props[column] == want[index][column], (index, column)
            assert type(props[column]) is type(want[index][column]), (index, column)
    return want


def csv_text(value: Any) -> str:
    """A value as the CSV export must write it (docs/investigators.md)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_back(column: str, got: Any, want: Any, milliseconds: bool = False) -> None:
    """A value read back by geopandas (from GeoJSON or a GeoPackage) against the one
    written: numbers and text as they are; an empty number as NaN; a date or a time that
    GDAL parsed, as the same day or instant (to the millisecond)."""
    if isinstance(got, np.generic):
        got = got.item()
    if isinstance(got, float) and math.isnan(got):
        got = None
    if hasattr(got, "to_pydatetime"):  # a pandas Timestamp
        got = got.to_pydatetime()
    if isinstance(got, datetime) and isinstance(want, str):
        if len(want) == 10:  # a date
            assert got.date().isoformat() == want, column
            return
        instant = datetime.fromisoformat(want.replace("Z", "+00:00"))
        got = got.replace(tzinfo=got.tzinfo or UTC)
        if milliseconds:  # the GeoPackage's field keeps them, cut
            assert got == instant.replace(microsecond=instant.microsecond // 1000 * 1000), column
        else:  # GDAL parses an RFC 3339 text to a millisecond, through a float of the
            # seconds: 39.897499 came back as 39.898 (501 us off), so within one.
            assert abs(got - instant) < timedelta(milliseconds=1), column
        return
    assert got == want, (column, got, want)
    if isinstance(want, bool):
        assert isinstance(got, bool), (column, got)
    elif isinstance(want, str):
        assert isinstance(got, str), (column, got)


def statuses(rows: list[api.TimelineResponse]) -> dict[int, str]:
    return {t.index: api.IncidentStatus.Name(t.status).split("STATUS_")[1].lower() for t in rows}


def test_geojson_reads_back_and_follows_rfc_7946(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    assert sorted(t.index for t in rows) == sorted(logged)
    path = tmp_path / "incidents.geojson"
    with path.open("w", encoding="utf-8") as f:
        exports.write_geojson(f, rows, checkpoint, borders)

    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert FRONTIER in doc["disclaimer"]
    assert doc["ledger_checkpoint"]["tree_size"] == checkpoint.size
    assert doc["ledger_checkpoint"]["signed_note"] == running.client.checkpoint().signed_note
    types = Counter(f["geometry"]["type"] for f in doc["features"])
    assert types == {"Point": 7, "Polygon": 2, "LineString": 1}
    want = expected_rows(rows, logged, checkpoint, borders)
    for f in doc["features"]:
        r = logged[f["id"]]
        assert f["properties"] == want[f["id"]]  # every column, its JSON type too
        g = f["geometry"]
        if g["type"] == "Point":  # [longitude, latitude]
            assert g["coordinates"] == [r.location.point.longitude, r.location.point.latitude]
        if g["type"] == "Polygon":  # closed, exterior counter-clockwise (right-hand rule)
            ring = g["coordinates"][0]
            assert ring[0] == ring[-1] and len(ring) >= 4
            assert shapely.LinearRing(ring).is_ccw
        for lon, lat in shapely.get_coordinates(shapely.geometry.shape(g)):
            assert 44 < lon < 47 and 38 < lat < 42  # lon/lat, not lat/lon

    frame = gpd.read_file(path)
    assert frame.crs.to_epsg() == 4326
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    assert statuses(rows) == logged.status
    for _, row in frame.iterrows():
        index = int(row["ledger_index"])
        for column in COLUMNS:
            read_back(column, row[column], want[index][column])
        assert row.geometry.equals_exact(expected_shape(logged[index]).normalize(), 1e-9) or (
            row.geometry.normalize().equals_exact(expected_shape(logged[index]).normalize(), 1e-9)
        )
    sector = frame[frame["geometry_kind"] == "observation"].iloc[0]
    assert sector["observer_bearing_from_deg"] == 60 and sector["observer_distance_max_m"] == 5000
    assert sector.geometry.contains(shapely.Point(45.42, 40.89))  # 3 km east-north-east


def test_each_row_verifies_against_the_checkpoint(
    running: RunningLedger, borders: BorderDataset
) -> None:
    populate(running)
    rows, checkpoint = read(running)
    records = exports.records(rows, checkpoint, borders)
    assert len(records) == len(rows)
    for _, props in records:
        stored = running.client.entry(props["ledger_index"]).leaf_hash
        assert props["leaf_hash"] == stored.hex()
        assert props["checkpoint_size"] == checkpoint.size
        assert props["checkpoint_root"] == checkpoint.root.hex()
    _, props = records[2]
    proof = running.client.inclusion_proof(props["ledger_index"], props["checkpoint_size"])
    merkle.verify_inclusion(
        bytes.fromhex(props["leaf_hash"]),
        props["ledger_index"],
        props["checkpoint_size"],
        list(proof.hashes),
        bytes.fromhex(props["checkpoint_root"]),
    )
    # The checkpoint's note names the same root.
    assert checkpoint.as_json()["root_hash_base64"] in checkpoint.signed_note.splitlines()


def test_csv_reads_back(running: RunningLedger, borders: BorderDataset) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    out = io.StringIO()
    exports.write_csv(out, rows, checkpoint, borders)
    lines = out.getvalue().splitlines(keepends=True)
    assert lines[0].startswith("# ") and FRONTIER in lines[0]
    assert checkpoint.root.hex() in lines[0]
    table = list(csv.DictReader(lines[1:]))
    assert list(table[0]) == [*COLUMNS, "wkt"]
    assert len(table) == len(logged)
    want = expected_rows(rows, logged, checkpoint, borders)
    for row in table:
        index = int(row["ledger_index"])
        for column in COLUMNS:  # every column, as text
            assert row[column] == csv_text(want[index][column]), (index, column)
        shape = shapely.from_wkt(row["wkt"])
        assert shape.normalize().equals_exact(expected_shape(logged[index]).normalize(), 1e-9)

    plain = io.StringIO()
    exports.write_csv(plain, rows, checkpoint, borders, comment=False)
    assert plain.getvalue().splitlines()[0].split(",")[0] == "ledger_index"


def test_geopackage_opens_with_pyogrio(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    path = tmp_path / "incidents.gpkg"
    exports.write_gpkg(path, rows, checkpoint, borders)

    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    assert layers == ["incidents", "ledger_checkpoint"]
    info = pyogrio.read_info(path, layer="incidents")
    assert info["crs"] == "EPSG:4326"
    assert info["features"] == len(logged)
    assert FRONTIER in info["layer_metadata"]["DISCLAIMER"]
    frame = gpd.read_file(path, layer="incidents")
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    want = expected_rows(rows, logged, checkpoint, borders)
    for _, row in frame.iterrows():
        index = int(row["ledger_index"])
        for column in COLUMNS:  # window times to the millisecond: the GeoPackage's precision
            read_back(column, row[column], want[index][column], milliseconds=True)
        for column in ("window_start", "window_end"):  # datetimes, not text
            assert hasattr(row[column], "to_pydatetime"), column
        shape = expected_shape(logged[index]).normalize()
        assert row.geometry.normalize().equals_exact(shape, 1e-9)
    # pyogrio alone (no geopandas): the same rows.
    _, _, _, fields = pyogrio.raw.read(path, layer="incidents")
    assert [int(i) for i in fields[0]] == list(frame["ledger_index"])
    meta = pyogrio.read_info(path, layer="ledger_checkpoint")["layer_metadata"]
    assert FRONTIER in meta["DISCLAIMER"] and meta["CHECKPOINT_SIZE"] == str(checkpoint.size)
    about = gpd.read_file(path, layer="ledger_checkpoint")
    assert about["signed_note"][0] == checkpoint.signed_note
    assert FRONTIER in about["disclaimer"][0]


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _pixels(path: Path) -> Any:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_map_png_draws_each_party(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    populate(running)
    rows, checkpoint = read(running)
    path = tmp_path / "map.png"
    drawn = pictures.map_png(path, rows, checkpoint, borders)
    with Image.open(path) as im:
        assert im.size == (800, 700)
        assert FRONTIER in im.info["Description"]
    pixels = _pixels(path)
    assert drawn["parties"] == {"ARM": "#d62728", "AZE": "#1f77b4"}
    for party, colour in drawn["parties"].items():
        exact = np.all(pixels == _rgb(colour), axis=-1).sum()
        assert exact > 30, (party, exact)
    # Only the drawn parties' colours: no incident of a third party.
    for colour in pictures.PARTY_COLOURS[2:]:
        assert np.all(pixels == _rgb(colour), axis=-1).sum() == 0

    # The markers alone (points only) carry the party colours: at least a small disc each.
    points = [t for t in rows if t.report.location.WhichOneof("geometry") == "point"]
    pictures.map_png(path, points, checkpoint, borders)
    pixels = _pixels(path)[:, :590]  # the map, left of the legend (x from 600 px)
    for party, colour in drawn["parties"].items():
        exact = np.all(pixels == _rgb(colour), axis=-1).sum()
        markers = sum(t.report.reporting_party == party for t in points)
        assert exact > 40 * markers, (party, exact, markers)  # hollow ones too

    only_arm = [t for t in rows if t.report.reporting_party == "ARM"]
    pictures.map_png(path, only_arm, checkpoint, borders)
    pixels = _pixels(path)
    assert np.all(pixels == _rgb("#1f77b4"), axis=-1).sum() == 0


# How docs/investigators.md says a status is drawn: (hollow, ring colour, dashed ring,
# crossed), hand-written here; and the marker of each category logged.
STATUS_LOOKS = {
    "reported": (False, None, False, False),
    "acknowledged": (False, "#000000", False, False),
    "disputed": (True, None, False, False),
    "retracted": (True, None, False, True),
    "under_investigation": (False, "#000000", True, False),
    "jointly_confirmed": (False, "#d4a000", False, False),
    "jointly_not_confirmed": (True, "#d4a000", False, False),
    "inconclusive": (False, "#d4a000", True, False),
}
MARKERS = {
    "small_arms_fire": "o", "sniper": "^", "mortar_or_artillery": "s", "rocket": "D",
    "drone_strike": "*", "property_damage": "P", "troop_movement": ">", "detention": "h",
    "engineering_works": "p",
}  # fmt: skip
SVG_CORNERS = {"^": 3, "s": 4, "D": 4, ">": 3, "p": 5, "h": 6, "*": 10, "P": 12}


def one_per_status(rows: list[api.TimelineResponse]) -> list[api.TimelineResponse]:
    """Berd's row once per derived status, on a grid of points 0.06 degrees apart: the
    pictures take the status a row carries, whatever entries made it."""
    berd = next(
        t
        for t in rows
        if t.current.report.location.WhichOneof("geometry") == "point"
        and t.current.report.reporting_party == "ARM"
        and t.current.report.category == pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE
    )
    out = []
    for k, status in enumerate(STATUS_LOOKS):
        t = api.TimelineResponse()
        t.CopyFrom(berd)
        t.index = 100 + k
        t.status = api.IncidentStatus.Value(f"INCIDENT_STATUS_{status.upper()}")
        t.current.report.location.point.longitude = 45.30 + 0.06 * (k % 4)
        t.current.report.location.point.latitude = 40.85 + 0.06 * (k // 4)
        out.append(t)
    return out


def _near(pixel: Any, colour: str, tolerance: int = 50) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - _rgb(colour)) < tolerance))


def _artist(fig: Any, gid: str) -> Any:
    (found,) = fig.findobj(lambda a: a.get_gid() == gid)
    return found


def test_map_png_draws_category_and_every_status(
    running: RunningLedger, borders: BorderDataset
) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    assert len(set(STATUS_LOOKS.values())) == len(STATUS_LOOKS)  # no two look alike
    # The marker of each incident is its category's.
    fig, _ = pictures.map_figure(rows, checkpoint, borders)
    for index, r in logged.items():
        marker = _artist(fig, f"incident-{index}")
        style = MarkerStyle(MARKERS[_short(pb.IncidentCategory, r.category)])
        want = np.asarray(style.get_path().transformed(style.get_transform()).vertices)
        got = marker.get_paths()[0].vertices
        assert got.shape == want.shape and np.allclose(got, want), index

    # Each status as the picture shows it: the fill at the marker's centre, the ring's
    # colour and dashes on the lower half of a circle around it (the label is above), the
    # cross.
    variants = one_per_status(rows)
    fig, drawn = pictures.map_figure(variants, checkpoint, borders)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
    ax, height = fig.axes[0], pixels.shape[0]
    party = drawn["parties"]["ARM"]
    for t, (status, (hollow, ring, dashed, crossed)) in zip(
        variants, STATUS_LOOKS.items(), strict=True
    ):
        point = t.current.report.location.point
        x, y = ax.transData.transform((point.longitude, point.latitude))
        col, row = round(x), round(height - y)
        centre = pixels[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3)
        filled = any(tuple(p) == _rgb(party) for p in centre)
        assert filled is not hollow, status
        assert any(p.sum() < 150 for p in centre) is crossed, status
        on_ring = []
        for angle in np.linspace(0.1, math.pi - 0.1, 60):  # below the centre
            band = [
                pixels[round(row + r * math.sin(angle)), round(col + r * math.cos(angle))]
                for r in np.arange(10.5, 15.0, 0.5)
            ]
            on_ring.append(any(_near(p, ring or "#000000") for p in band))
        share = sum(on_ring) / len(on_ring)
        if ring is None:
            around = pixels[row - 16 : row + 17, col - 16 : col + 17].reshape(-1, 3)
            assert not any(_near(p, "#d4a000") for p in around)
            assert share < 0.1, (status, share)
        elif dashed:
            assert 0.25 < share < 0.8, (status, share)
        else:
            assert share > 0.95, (status, share)
    # A legend entry for each status, named as the statuses are.
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    for status in STATUS_LOOKS:
        assert sum(text.split(": ")[-1] == status.replace("_", " ") for text in texts) == 1, status


def test_map_html_is_offline_with_a_feature_per_incident(
    running: RunningLedger, borders: BorderDataset
) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    page = pictures.map_html(rows, checkpoint, borders)
    assert len(re.findall(r'<g class="incident"', page)) == len(rows) == 10
    assert "http" not in page and "src=" not in page and "<script" not in page
    assert FRONTIER in page
    for t in rows:
        title = re.search(rf'data-index="{t.index}".*?<title>(.*?)</title>', page)
        assert title and f"#{t.index} {t.report.reporting_party}" in title.group(1)
    assert page.count('class="territory"') == 2 and 'class="border"' in page
    # Each feature: its category's shape, its status's fill, ring and cross, as the PNG.
    variants = one_per_status(rows)
    page = pictures.map_html([*rows, *variants], checkpoint, borders)
    features = re.findall(
        r'<g class="incident" data-index="(\d+)" data-party="\w+" data-category="(\w+)" '
        r'data-status="(\w+)">(.*?)</g>',
        page,
    )
    assert len(features) == len(rows) + len(STATUS_LOOKS)
    want_status = {**statuses(rows), **{t.index: incidents.status_name(t.status) for t in variants}}
    for index, category, status, body in features:
        r = logged.get(int(index)) or variants[int(index) - 100].current.report
        assert category == _short(pb.IncidentCategory, r.category)
        assert status == want_status[int(index)]
        hollow, ring, dashed, crossed = STATUS_LOOKS[status]
        marker = re.search(r'<(circle|polygon) (?!class="ring")[^>]*>', body)
        assert marker, body
        if MARKERS[category] == "o":
            assert marker.group(1) == "circle", index
        else:
            corners = re.search(r'points="([^"]*)"', marker.group(0))
            assert corners and len(corners.group(1).split()) == SVG_CORNERS[MARKERS[category]]
        assert ('fill="none"' in marker.group(0)) is hollow, (index, status)
        rings = re.findall(r'<circle class="ring"[^>]*>', body)
        assert len(rings) == (ring is not None), (index, status)
        if ring:
            assert f'stroke="{ring}"' in rings[0]
            assert ("stroke-dasharray" in rings[0]) is dashed, (index, status)
        assert ('class="cross"' in body) is crossed, (index, status)
    legend = re.findall(r'<li data-status="(\w+)">', page)
    assert legend == list(STATUS_LOOKS)  # an entry each, in the same order


def test_chart_counts_weeks_by_party_and_category(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    logged = populate(running)
    rows, checkpoint = read(running)
    by_hand: Counter[tuple[str, str, str]] = Counter()
    for r in logged.values():
        day = datetime.fromtimestamp(r.window.start.seconds, UTC).date()
        monday = day - timedelta(days=day.weekday())
        category = pb.IncidentCategory.Name(r.category).split("CATEGORY_")[1].lower()
        by_hand[(monday.isoformat(), r.reporting_party, category)] += 1
    path = tmp_path / "chart.png"
    drawn = pictures.chart_png(path, rows, checkpoint, borders)
    got = {(c["week"], c["party"], c["category"]): c["incidents"] for c in drawn["counts"]}
    assert got == dict(by_hand)
    with Image.open(path) as im:
        assert im.size[0] == 800 and im.size[1] > 400
        assert FRONTIER in im.info["Description"]
    pixels = _pixels(path)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 20
    assert (pixels.sum(axis=-1) < 700).mean() > 0.02  # more than a blank page
    for category in {c for _, _, c in by_hand}:  # each category's colour is drawn
        colour = _rgb(pictures.category_colour(category))
        assert np.all(pixels == colour, axis=-1).sum() > 20, category


def test_cli_commands(running: RunningLedger, tmp_path: Path, capsys: Any) -> None:
    logged = populate(running)
    server = ["--server", running.address, "--quiet"]
    for name in ("x.geojson", "x.csv", "x.gpkg"):
        out = tmp_path / name
        assert main(["export-incidents", "--out", str(out), *server, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["incidents"] == len(logged) and out.stat().st_size == summary["bytes"]
        if name.endswith("csv"):
            assert len(list(csv.DictReader(out.read_text().splitlines()[1:]))) == len(logged)
        else:
            assert len(gpd.read_file(out, layer=0)) == len(logged)
        if not name.endswith("geojson"):
            note = Path(summary["checkpoint_note"]).read_text()
            assert note == running.client.checkpoint().signed_note
    assert (
        main(["export-incidents", "--out", "-", "--format", "csv", *server, "--party", "AZE"]) == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert FRONTIER in printed[0] and len(printed) == 2 + 5  # comment, header, AZE's five

    assert main(["map", "--out", str(tmp_path / "m.html"), *server, "--party", "ARM"]) == 0
    page = (tmp_path / "m.html").read_text()
    assert page.count('<g class="incident"') == 5
    argv = ["map", "--out", str(tmp_path / "m.html"), *server, "--category", "drone_strike,rocket"]
    assert main([*argv, "--since", "30d"]) == 0  # the filters of `ceasefire timeline`
    assert (tmp_path / "m.html").read_text().count('<g class="incident"') == 2
    assert main(["map", "--out", str(tmp_path / "m.png"), *server, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"] == len(logged)
    assert main(["chart", "--out", str(tmp_path / "c.png"), *server, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["incidents"] == len(logged)
    with Image.open(tmp_path / "c.png") as im:
        assert im.format == "PNG"

    # User errors: one line, no traceback, nothing written.
    for argv, message in [
        (["map", "--out", str(tmp_path / "no" / "m.png")], "no such folder"),
        (["export-incidents", "--out", str(tmp_path / "x.txt")], "--format"),
        (["chart", "--out", str(tmp_path / "c.png"), "--since", "last tuesday"], "--since"),
        (
            [
                "export-incidents",
                "--out",
                str(tmp_path / "d"),
                "--format",
                "csv",
                "--as-of-index",
                "9999",
            ],
            "past the latest checkpoint",
        ),
    ]:
        assert main([*argv, *server]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists()
    # A folder nobody can write in (not even root): the error, one line.
    assert main(["map", "--out", "/proc/m.png", *server]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write /proc/m.png") and len(err.splitlines()) == 1


def test_current_or_as_logged(running: RunningLedger, borders: BorderDataset) -> None:
    """By default a row is the incident as last amended; --as-logged, what its leaf holds."""
    logged = populate(running)
    berd = next(iter(logged))
    corrected = pb.IncidentReport()
    corrected.CopyFrom(logged[berd])
    corrected.casualties.civilians_killed.CopyFrom(_counts(3, 4, 6))
    corrected.location.point.latitude = 40.8900
    amendment = pb.IncidentAmendment(
        incident_index=berd, created_time=to_timestamp(now_us()), party="ARM",
        corrected=corrected, reason="hospital figures",
    )  # fmt: skip
    amended_at = _submit(running, statements.AMENDMENT, amendment, running.parties.arm_monitor)
    rows, checkpoint = read(running)
    current = {p["ledger_index"]: (g, p) for g, p in exports.records(rows, checkpoint, borders)}
    first = {
        p["ledger_index"]: (g, p)
        for g, p in exports.records(rows, checkpoint, borders, as_first_logged=True)
    }
    geom, props = current[berd]
    assert props["version"] == "current" and props["amended_at_index"] == amended_at
    assert (props["civilians_killed_best"], props["fatalities"]) == (4, 4)
    assert geom == {"type": "Point", "coordinates": [45.3875, 40.89]}
    geom, props = first[berd]
    assert props["version"] == "as_logged" and props["civilians_killed_best"] == 2
    assert geom == {"type": "Point", "coordinates": [45.3875, 40.8811]}
    assert props["leaf_hash"] == current[berd][1]["leaf_hash"]  # the report's own entry


class AppendingClient(LedgerClient):
    """A real client whose checkpoint read is followed at once by another writer's report:
    the race between reading the checkpoint and reading the timeline, made certain."""

    def __init__(self, address: str, report: bytes) -> None:
        super().__init__(address)
        self.report = report

    def checkpoint(self, witnessed: bool = False) -> api.GetCheckpointResponse:
        got = super().checkpoint(witnessed)
        self.submit(self.report)
        return got


def test_rows_are_those_the_checkpoint_covers(running: RunningLedger) -> None:
    logged = populate(running)
    late = signed(report("AZE", lat=41.0933, lon=45.3661), running.parties.aze_monitor)
    with AppendingClient(running.address, late) as client:
        rows, checkpoint = read_query(client, api.TimelineRequest(), Progress(quiet=True))
    assert running.client.checkpoint().tree_size == checkpoint.size + 1  # it was appended
    assert sorted(t.index for t in rows) == sorted(logged)
    assert all(t.index < checkpoint.size for t in rows)


def test_a_closed_pipe_is_no_traceback(
    running: RunningLedger, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`ceasefire export-incidents --out - | head`: the reader is gone; one quiet exit."""
    populate(running)
    read_end, write_end = os.pipe()
    os.close(read_end)
    with io.TextIOWrapper(os.fdopen(write_end, "wb")) as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        argv = ["export-incidents", "--out", "-", "--format", "csv", "--quiet"]
        assert main([*argv, "--server", running.address]) == 141  # 128 + SIGPIPE
        monkeypatch.undo()
        assert capsys.readouterr().err == ""
