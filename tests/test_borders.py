"""Border data sets as ledger facts, and geo facts for every geometry kind, through a real
gRPC server on SQLite and PostgreSQL with the real bundled border (and a shifted copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from clients.cli import main
from clients.client import field_violations
from clients.reports import sign_report
from geo import datasets
from geo.borders import DEFAULT_DATASET_DIR, BorderDataset
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.errors import InvalidArgument
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.storage import LedgerStore
from tests.conftest import RunningLedger
from tests.reports import report, signed

SHIFT_DEG = 0.01  # about 840 m east at these latitudes


def shifted_dataset(folder: Path, shift: float = SHIFT_DEG) -> Path:
    """The real data set moved east: the same topology, another border line."""
    folder.mkdir(parents=True, exist_ok=True)

    def move(coords: Any) -> Any:
        if isinstance(coords[0], (int, float)):
            return [round(coords[0] + shift, 9), coords[1]]
        return [move(c) for c in coords]

    for name in ("territories.geojson", "border.geojson"):
        doc = json.loads((DEFAULT_DATASET_DIR / name).read_bytes())
        for feature in doc["features"]:
            feature["geometry"]["coordinates"] = move(feature["geometry"]["coordinates"])
        (folder / name).write_text(json.dumps(doc))
    return folder


def registration(borders: BorderDataset, **kw: Any) -> pb.BorderDatasetRegistration:
    files = [pb.DatasetFile(name=n, sha256=d, size=z) for n, d, z in datasets.file_list(borders)]
    fields: dict[str, Any] = {
        "created_time": to_timestamp(now_us()),
        "dataset_sha256": borders.sha256,
        "files": files,
        "name": "Natural Earth 1:10m, shifted 0.01 degree east (test)",
        "source": "derived from the bundled data set",
        "licence": "public domain",
        "datum": "EPSG:4326",
        "line_kind": pb.LINE_KIND_DE_FACTO,
    }
    fields.update(kw)
    return pb.BorderDatasetRegistration(**fields)


def register(
    running: RunningLedger, folder: Path, reg: pb.BorderDatasetRegistration, *keys: SigningKey
) -> int:
    envelope = dsse.sign(statements.BORDER_DATASET, reg.SerializeToString(), list(keys))
    files = {f.name: (folder / f.name).read_bytes() for f in reg.files}
    return running.client.submit_with_blobs(envelope.to_json(), files).receipt.index


def geo_of(running: RunningLedger, index: int) -> Any:
    return parse_entry(running.client.entry(index).entry).validation.geo


def test_every_geometry_kind_gets_its_facts(running: RunningLedger) -> None:
    p = running.parties
    observation = report("ARM")
    observation.location.observation.CopyFrom(
        pb.Observation(
            observer=pb.GeoPoint(latitude=40.8811, longitude=45.3875),
            bearing_from_deg=60,
            bearing_to_deg=120,
            distance_min_m=1000,
            distance_max_m=12000,
        )
    )
    line = report("AZE")
    line.location.line.CopyFrom(
        pb.GeoLine(
            origin=pb.GeoPoint(latitude=41.0933, longitude=45.3661),  # Gazakh, AZE
            impact=pb.GeoPoint(latitude=40.8811, longitude=45.3875),  # Berd, ARM
        )
    )
    inside = report("ARM")
    inside.location.line.CopyFrom(
        pb.GeoLine(
            origin=pb.GeoPoint(latitude=40.18, longitude=44.51),  # Yerevan
            impact=pb.GeoPoint(latitude=40.25, longitude=44.60),
        )
    )
    polygon = report("ARM")
    polygon.location.polygon.CopyFrom(
        pb.GeoPolygon(
            points=[
                pb.GeoPoint(latitude=la, longitude=lo)
                for la, lo in [(40.95, 45.30), (40.95, 45.55), (41.10, 45.55), (41.10, 45.30)]
            ]
        )
    )
    near = report("ARM", lat=40.8811, lon=45.3875)
    near.location.uncertainty_m = 20_000  # the circle reaches across the border
    indexes = [
        running.client.submit(
            sign_report(r, [p.arm_monitor if r.reporting_party == "ARM" else p.aze_monitor])
        ).receipt.index
        for r in (observation, line, inside, polygon, near)
    ]
    obs, crossing, straight, area, ambiguous = (geo_of(running, i) for i in indexes)

    assert obs.territory == "ARM" and obs.shares
    assert sum(s.share for s in obs.shares) == pytest.approx(1.0, abs=1e-6)
    assert crossing.line.crosses_border and crossing.line.crosses_from == "AZE"
    assert crossing.line.crosses_into == "ARM" and crossing.distance_to_border_m == 0
    assert crossing.line.length_m == pytest.approx(23_600, rel=0.05)
    assert not straight.line.crosses_border and straight.line.origin_territory == "ARM"
    shares = {s.territory: s.share for s in area.shares}
    assert shares["ARM"] > 0 and shares["AZE"] > 0 and area.ambiguous
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert ambiguous.ambiguous and set(ambiguous.touches) >= {"ARM", "AZE"}
    # The verifier recomputes every kind and agrees.
    assert main(["verify", "--server", running.address, "--json"]) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda loc: loc.polygon.points.extend(
            [pb.GeoPoint(latitude=la, longitude=lo)
             for la, lo in [(40.9, 45.3), (41.0, 45.4), (40.9, 45.4), (41.0, 45.3)]]
        ), "location.polygon"),
        (lambda loc: loc.line.CopyFrom(pb.GeoLine(
            origin=pb.GeoPoint(latitude=40.9, longitude=45.3),
            impact=pb.GeoPoint(latitude=4_527_000, longitude=45.3))), "location.line.impact"),
        (lambda loc: loc.observation.CopyFrom(pb.Observation(
            observer=pb.GeoPoint(latitude=40.88, longitude=45.38), bearing_from_deg=400,
            bearing_to_deg=10, distance_min_m=0, distance_max_m=1000)),
         "location.observation.bearing_from_deg"),
        (lambda loc: loc.ClearField("point"), "location"),
    ],
)  # fmt: skip
def test_impossible_shapes_are_refused_naming_the_field(
    running: RunningLedger, change: Any, field: str
) -> None:
    r = report("ARM")
    r.location.ClearField("point")
    r.location.point.CopyFrom(pb.GeoPoint(latitude=40.88, longitude=45.38))
    change(r.location)
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit(signed(r, running.parties.arm_monitor))
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value)[0].startswith(field)
    assert running.client.checkpoint().tree_size == 1


def test_a_newer_data_set_changes_nothing_before_it_and_revalidation_shows_the_difference(
    running: RunningLedger,
    tmp_path: Path,
    borders: BorderDataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = running.parties
    folder = shifted_dataset(tmp_path / "shifted")
    shifted = BorderDataset.load(folder)
    # Places near the line where moving it 840 m east changes the side, and one where not.
    near_border = _flipping_points(borders, shifted)
    before = []
    for i, (party, lat, lon) in enumerate(near_border):
        r = report(party, lat=lat, lon=lon, hours_ago=i + 1)
        r.location.uncertainty_m = 0  # so that the side is the territory, never ambiguous
        key = p.arm_monitor if party == "ARM" else p.aze_monitor
        before.append(running.client.submit(sign_report(r, [key])).receipt.index)
    old_entries = {i: running.client.entry(i).entry for i in before}

    reg = registration(shifted)
    with pytest.raises(grpc.RpcError) as info:  # ARM alone cannot move the border
        register(running, folder, reg, p.arm_authority)
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    at = register(running, folder, reg, p.arm_authority, p.aze_authority)

    # Earlier entries are untouched and keep citing the data set in force when logged.
    assert all(running.client.entry(i).entry == old_entries[i] for i in before)
    assert {geo_of(running, i).dataset_sha256 for i in before} == {borders.sha256}
    after = running.client.submit(signed(report("ARM", hours_ago=0.5), p.arm_monitor)).receipt.index
    assert after == at + 1 and geo_of(running, after).dataset_sha256 == shifted.sha256

    rows = list(running.client.revalidate(shifted.sha256))
    changed = {r.index for r in rows if r.side_changed}
    for index, (_, lat, lon) in zip(before, near_border, strict=True):
        expected = borders.locate(lat, lon).territory != shifted.locate(lat, lon).territory
        assert (index in changed) == expected, (lat, lon)
    assert changed and changed != set(before)
    only = list(running.client.revalidate(shifted.sha256, changed_only=True))
    assert {r.index for r in only} == changed

    # An auditor fetches the new data set from the log by its digest and agrees, online
    # and from an offline bundle that carries the data set files.
    assert main(["verify", "--server", running.address]) == 0
    bundle = tmp_path / "ledger.bundle"
    assert main(["export", "--server", running.address, "--out", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["verify", "--bundle", str(bundle), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["geo_facts_recomputed"] == len(before) + 1  # both data sets, from the bundle


def _flipping_points(old: BorderDataset, new: BorderDataset) -> list[tuple[str, float, float]]:
    """Along the main border near Tavush: points 400 m either side of the old line."""
    picked: list[tuple[str, float, float]] = []
    for lat in (40.95, 41.0, 41.05, 41.1):
        for lon in [45.0 + i * 0.005 for i in range(120)]:
            here = old.locate(lat, lon)
            if (
                here.territory
                and 300 < here.distance_to_border_m < 600
                and here.territory in ("ARM", "AZE")
            ):
                picked.append((here.territory, lat, lon))
                break
    unchanged = old.locate(40.8811, 45.3875)
    picked.append(("ARM", 40.8811, 45.3875))
    assert unchanged.territory == "ARM"
    assert any(
        old.locate(la, lo).territory != new.locate(la, lo).territory for _, la, lo in picked
    ), "the shift moved no test point across the line"
    return picked


def test_registration_refusals(running: RunningLedger, tmp_path: Path) -> None:
    p = running.parties
    folder = shifted_dataset(tmp_path / "shifted")
    shifted = BorderDataset.load(folder)
    both = (p.arm_authority, p.aze_authority)
    reg = registration(shifted)

    def refused(reg: pb.BorderDatasetRegistration, files: dict[str, bytes]) -> tuple[Any, str]:
        envelope = dsse.sign(statements.BORDER_DATASET, reg.SerializeToString(), list(both))
        with pytest.raises(grpc.RpcError) as info:
            running.client.submit_with_blobs(envelope.to_json(), files)
        assert isinstance(info.value, grpc.Call)
        return info.value.code(), info.value.details() or ""

    good = {f.name: (folder / f.name).read_bytes() for f in reg.files}
    code, msg = refused(reg, {**good, "border.geojson": good["border.geojson"] + b" "})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "do not have the listed size" in msg
    code, msg = refused(reg, {"territories.geojson": good["territories.geojson"]})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "border.geojson was not sent" in msg
    wrong = registration(shifted, dataset_sha256="ab" * 32)
    code, msg = refused(wrong, good)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "manifest" in msg
    code, msg = refused(registration(shifted, datum="EPSG:32638"), good)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "EPSG:4326" in msg
    assert running.client.checkpoint().tree_size == 1


@pytest.mark.parametrize("policy", [pb.OUTSIDE_ZONE_REFUSE, pb.OUTSIDE_ZONE_FLAG])
def test_monitored_zone_refuses_or_flags(
    running: RunningLedger, tmp_path: Path, policy: int
) -> None:
    p = running.parties
    folder = shifted_dataset(tmp_path / "zoned", shift=0.0)  # the same lines, as a new set
    (folder / "border.geojson").write_text((folder / "border.geojson").read_text() + "\n")
    zoned = BorderDataset.load(folder)
    reg = registration(zoned, monitored_zone_m=20_000, outside_zone=policy)
    register(running, folder, reg, p.arm_authority, p.aze_authority)
    yerevan = signed(report("ARM", lat=40.1811, lon=44.5136), p.arm_monitor)  # ~30 km away
    if policy == pb.OUTSIDE_ZONE_REFUSE:
        with pytest.raises(grpc.RpcError) as info:
            running.client.submit(yerevan)
        assert isinstance(info.value, grpc.Call)
        assert "outside the monitored zone of 20.0 km" in (info.value.details() or "")
    else:
        index = running.client.submit(yerevan).receipt.index
        assert geo_of(running, index).outside_monitored_zone
    inside = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    assert not geo_of(running, inside).outside_monitored_zone


def test_a_restarted_server_loads_registered_data_sets_from_the_log(
    running: RunningLedger, tmp_path: Path, borders: BorderDataset
) -> None:
    p = running.parties
    folder = shifted_dataset(tmp_path / "shifted")
    shifted = BorderDataset.load(folder)
    register(running, folder, registration(shifted), p.arm_authority, p.aze_authority)
    fresh = Ledger(
        running.ledger.store, running.ledger.log_key, borders, dataset_dir=tmp_path / "cache"
    )
    try:
        assert fresh.borders.sha256 == shifted.sha256
        accepted = fresh.submit(signed(report("ARM", hours_ago=2), p.arm_monitor))
        assert accepted.receipt.index == 2
    finally:
        fresh.close()


def test_a_ledger_for_another_pair_of_neighbours(tmp_path: Path) -> None:
    """Nothing is specific to Armenia and Azerbaijan: codes come from the data and the root."""
    folder = tmp_path / "north-south"
    folder.mkdir()

    def feature(props: dict[str, Any], geometry: dict[str, Any]) -> dict[str, Any]:
        return {"type": "Feature", "properties": props, "geometry": geometry}

    north = [[[[10.0, 50.5], [12.0, 50.5], [12.0, 51.0], [10.0, 51.0], [10.0, 50.5]]]]
    south = [[[[10.0, 50.0], [12.0, 50.0], [12.0, 50.5], [10.0, 50.5], [10.0, 50.0]]]]
    territories = {"type": "FeatureCollection", "features": [
        feature({"party": "NTH", "name": "North"}, {"type": "MultiPolygon", "coordinates": north}),
        feature({"party": "STH", "name": "South"}, {"type": "MultiPolygon", "coordinates": south}),
    ]}  # fmt: skip
    border = {"type": "FeatureCollection", "features": [feature(
        {"segment": "main", "parties": ["NTH", "STH"]},
        {"type": "LineString", "coordinates": [[10.0, 50.5], [12.0, 50.5]]},
    )]}  # fmt: skip
    (folder / "territories.geojson").write_text(json.dumps(territories))
    (folder / "border.geojson").write_text(json.dumps(border))
    pair = BorderDataset.load(folder)
    assert pair.parties == ("NTH", "STH")

    log, monitor, a1, a2 = (SigningKey.generate() for _ in range(4))
    root = pb.TrustRoot(
        origin="test.ceasefire-ledger/nth-sth",
        log_public_key=bytes(log.verify_key),
        border_dataset_sha256=pair.sha256,
        border_dataset_files=dataset_files(pair),
        parties=[
            pb.Party(code="NTH", name="North", authority_threshold=1, keys=[
                pb.PartyKey(public_key=bytes(a1.verify_key), role=pb.ROLE_AUTHORITY),
                pb.PartyKey(public_key=bytes(monitor.verify_key), role=pb.ROLE_MONITOR)]),
            pb.Party(code="STH", name="South", authority_threshold=1, keys=[
                pb.PartyKey(public_key=bytes(a2.verify_key), role=pb.ROLE_AUTHORITY)]),
        ],
    )  # fmt: skip
    store = LedgerStore.open(f"sqlite:///{tmp_path / 'pair.db'}")
    log_key = LogKey(root.origin, log)
    envelope = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [a1, a2])
    initialize(store, envelope, log_key, pair)
    ledger = Ledger(store, log_key, pair, dataset_dir=tmp_path / "cache")
    try:
        accepted = ledger.submit(sign_report(report("NTH", lat=50.52, lon=11.0), [monitor]))
        stored = store.get_entry(accepted.receipt.index)
        assert stored is not None
        geo = parse_entry(stored.entry).validation.geo
        assert geo.territory == "NTH" and geo.dataset_sha256 == pair.sha256
        assert geo.distance_to_border_m == pytest.approx(2224, abs=5)  # 0.02 degree of latitude
        assert not geo.ambiguous  # 2.2 km from the line, 500 m of uncertainty
        outside = report("NTH", lat=40.88, lon=45.38)  # Berd: far outside this region
        with pytest.raises(InvalidArgument, match="outside the region"):
            ledger.submit(sign_report(outside, [monitor]))
    finally:
        ledger.close()
        store.close()
