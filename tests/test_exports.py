"""Exports (GeoJSON, CSV, GeoPackage) and pictures (map PNG and HTML, weekly chart) of
incidents read from a real server: read back with geopandas, pyogrio, the csv module and
Pillow, and compared with the reports that were signed."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections import Counter
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
from nacl.signing import SigningKey
from PIL import Image

from clients import exports, pictures
from clients.cli import main
from clients.client import LedgerClient
from clients.exports import COLUMNS, Checkpoint
from clients.exports_cli import read_query
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import dsse, merkle, statements
from ledger.clock import now_us, to_timestamp
from tests.conftest import RunningLedger
from tests.reports import report, signed

FRONTIER = "implies no position on any frontier"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what the server stores in is not what these tests are about."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _counts(low: int, best: int, high: int) -> pb.CountRange:
    return pb.CountRange(low=low, best=best, high=high)


def _submit(running: RunningLedger, kind: str, statement: Message, key: SigningKey) -> int:
    envelope = dsse.sign(kind, statement.SerializeToString(), [key])
    return running.client.submit(envelope.to_json()).receipt.index


def _reports() -> list[pb.IncidentReport]:
    """Points on both sides, a polygon (given clockwise), a line, an observation sector;
    several categories, casualties, precisions and weeks."""
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
    return [berd, gazakh, sadarak, kapan, polygon, line, sector]


def populate(running: RunningLedger) -> dict[int, pb.IncidentReport]:
    """The reports logged, one disputed (AZE denies Berd) and one retracted (Kapan)."""
    p = running.parties
    key = {"ARM": p.arm_monitor, "AZE": p.aze_monitor}
    logged = {}
    for r in _reports():
        logged[running.client.submit(signed(r, key[r.reporting_party])).receipt.index] = r
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
    _submit(running, statements.RETRACTION, retraction, p.arm_authority)
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


def check_fields(index: int, props: Any, r: pb.IncidentReport, status: str) -> None:
    """One exported row against the report that was signed."""
    assert int(props["ledger_index"]) == index
    assert props["reporting_party"] == r.reporting_party
    assert props["status"] == status
    assert props["category"] == pb.IncidentCategory.Name(r.category).split("CATEGORY_")[1].lower()
    assert float(props["uncertainty_m"]) == r.location.uncertainty_m
    precision = pb.LocationPrecision.Name(r.location.precision).split("PRECISION_")[1].lower()
    assert props["location_precision"] == precision
    assert props["geo_precision"] in (1, 2, 3, "1", "2", "3")
    assert int(props["geo_precision"]) == {"exact": 1, "near": 2, "region": 3}[precision]
    for kind in exports.CASUALTY_KINDS:
        got = [int(props[f"{kind}_{e}"]) for e in ("low", "best", "high")]
        want = getattr(r.casualties, kind)
        assert got == [want.low, want.best, want.high], kind
    killed_best = r.casualties.civilians_killed.best + r.casualties.military_killed.best
    assert int(props["fatalities"]) == killed_best == int(props["best"])
    assert int(props["deaths_civilians"]) == r.casualties.civilians_killed.best
    assert int(props["low"]) == r.casualties.civilians_killed.low + r.casualties.military_killed.low
    assert (
        props["actor1"]
        == props["side_a"]
        == {"ARM": "Armenia", "AZE": "Azerbaijan", "": ""}[r.alleged_responsible_party]
    )
    start = datetime.fromtimestamp(r.window.start.seconds, UTC)
    assert str(props["date_start"])[:10] == start.date().isoformat()  # a date, or its text
    assert props["weapons"] == "; ".join(r.weapons)
    assert props["narrative"] == r.narrative
    assert FRONTIER in props["disclaimer"]


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
    assert types == {"Point": 4, "Polygon": 2, "LineString": 1}
    for f in doc["features"]:
        r = logged[f["id"]]
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
    status = statuses(rows)
    assert status[next(iter(logged))] == "disputed" and status[list(logged)[3]] == "retracted"
    for _, row in frame.iterrows():
        index = int(row["ledger_index"])
        check_fields(index, row, logged[index], status[index])
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
    status = statuses(rows)
    for row in table:
        index = int(row["ledger_index"])
        check_fields(index, row, logged[index], status[index])
        shape = shapely.from_wkt(row["wkt"])
        assert shape.normalize().equals_exact(expected_shape(logged[index]).normalize(), 1e-9)
    berd = next(r for r in table if r["reporting_party"] == "ARM" and r["geometry_kind"] == "point"
                and r["category"] == "small_arms_fire")  # fmt: skip
    assert (berd["time_precision"], berd["date_prec"], berd["where_prec"]) == ("1", "1", "2")
    gazakh = next(r for r in table if r["category"] == "mortar_or_artillery")
    assert gazakh["event_type"] == "Explosions/Remote violence" and gazakh["where_prec"] == "1"
    assert gazakh["deaths_unknown"] == "2" and gazakh["side_b"] == "Azerbaijan"
    line = next(r for r in table if r["geometry_kind"] == "line")
    assert line["where_prec"] == "5"

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
    status = statuses(rows)
    for _, row in frame.iterrows():
        index = int(row["ledger_index"])
        check_fields(index, row, logged[index], status[index])
        start = logged[index].window.start  # a GeoPackage keeps milliseconds
        want_start = datetime.fromtimestamp(start.seconds, UTC)
        assert row["window_start"].to_pydatetime() == want_start + timedelta(
            milliseconds=start.nanos // 1_000_000
        )
        want = expected_shape(logged[index]).normalize()
        assert row.geometry.normalize().equals_exact(want, 1e-9)
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


def test_map_html_is_offline_with_a_feature_per_incident(
    running: RunningLedger, borders: BorderDataset
) -> None:
    populate(running)
    rows, checkpoint = read(running)
    page = pictures.map_html(rows, checkpoint, borders)
    assert len(re.findall(r'<g class="incident"', page)) == len(rows) == 7
    assert "http" not in page and "src=" not in page and "<script" not in page
    assert FRONTIER in page
    for t in rows:
        title = re.search(rf'data-index="{t.index}".*?<title>(.*?)</title>', page)
        assert title and f"#{t.index} {t.report.reporting_party}" in title.group(1)
    disputed = re.search(r'data-status="disputed".*?</g>', page)
    assert disputed and 'fill="none"' in disputed.group(0)
    standing = re.search(r'data-status="reported".*?</g>', page)
    assert standing and 'fill="none" stroke' not in standing.group(0)
    assert page.count('class="territory"') == 2 and 'class="border"' in page


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
    assert FRONTIER in printed[0] and len(printed) == 2 + 3  # comment, header, AZE's three

    assert main(["map", "--out", str(tmp_path / "m.html"), *server, "--party", "ARM"]) == 0
    page = (tmp_path / "m.html").read_text()
    assert page.count('<g class="incident"') == 4
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
