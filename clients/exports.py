"""Incidents for the investigators' own tools: GeoJSON (RFC 7946), CSV and GeoPackage.

Every function here takes the rows of a query (`TimelineResponse` messages, as
`LedgerClient.timeline` streams them), the signed checkpoint they were read under and the
border data; none of them talks to a server. Each row carries what is needed to verify it
later (its log index, its leaf hash, the checkpoint's size and root), the report's whole
geometry (an observation as its sector polygon), its casualties as low/best/high, its
uncertainty and precision codes, and columns crosswalked to ACLED's and UCDP GED's (see
docs/investigators.md for the crosswalk). Every export states that the border data implies
no position on any frontier.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import shapely
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from pyproj import Geod
from shapely.geometry.polygon import orient

from clients.describe import enum_name
from geo.borders import BorderDataset
from ledger import geofacts, incidents
from ledger.clock import to_us
from ledger.formats import merkle

__all__ = [
    "ACLED_EVENT_TYPES",
    "COLUMNS",
    "Checkpoint",
    "disclaimer",
    "feature_collection",
    "geometry",
    "records",
    "sector_polygon",
    "write_csv",
    "write_geojson",
    "write_gpkg",
    "write_note",
]

_GEOD = Geod(ellps="WGS84")
# As geo/validate.py builds an observation sector: chords within 0.5 m of the true arc,
# at most one degree apart.
_SAGITTA_M = 0.5
_ARC_STEP_MAX_DEG = 1.0
GPKG_LAYER = "incidents"
GPKG_CHECKPOINT_LAYER = "ledger_checkpoint"
CASUALTY_KINDS = ("civilians_killed", "civilians_injured", "military_killed", "military_injured")

# ACLED event type and sub-event type for each category: the nearest ACLED class; a
# ceasefire violation is an allegation between two state forces.
ACLED_EVENT_TYPES: dict[str, tuple[str, str]] = {
    "small_arms_fire": ("Battles", "Armed clash"),
    "sniper": ("Battles", "Armed clash"),
    "mortar_or_artillery": ("Explosions/Remote violence", "Shelling/artillery/missile attack"),
    "rocket": ("Explosions/Remote violence", "Shelling/artillery/missile attack"),
    "drone_strike": ("Explosions/Remote violence", "Air/drone strike"),
    "airspace_violation": ("Strategic developments", "Other"),
    "engineering_works": ("Strategic developments", "Other"),
    "troop_movement": ("Strategic developments", "Change to group/activity"),
    "detention": ("Strategic developments", "Arrests"),
    "property_damage": ("Strategic developments", "Looting/property destruction"),
    "other": ("Strategic developments", "Other"),
    "unspecified": ("Strategic developments", "Other"),
}
# TimePrecision -> ACLED time_precision (1 day, 2 week, 3 month), before the span check.
_ACLED_TIME = {"minute": 1, "hour": 1, "day": 1, "week": 2, "month": 3}
# LocationPrecision -> ACLED geo_precision (1 exact, 2 near, 3 region).
_ACLED_GEO = {"exact": 1, "near": 2, "region": 3}
# LocationPrecision -> UCDP GED where_prec (1 exact, 2 within ~25 km, 4 first-order
# administrative division: the closest a "region" says); a line that is not exact is 5
# (a linear feature).
_UCDP_WHERE = {"exact": 1, "near": 2, "region": 4}

# The columns of every export, in order (the geometry comes besides them).
COLUMNS = (
    # to verify the row later
    "ledger_index",
    "leaf_hash",
    "checkpoint_origin",
    "checkpoint_size",
    "checkpoint_root",
    "version",
    # the report
    "reporting_party",
    "status",
    "category",
    "observation_mode",
    "alleged_responsible_party",
    "window_start",
    "window_end",
    "window_precision",
    "geometry_kind",
    "anchor_latitude",
    "anchor_longitude",
    "uncertainty_m",
    "location_precision",
    "observer_bearing_from_deg",
    "observer_bearing_to_deg",
    "observer_distance_min_m",
    "observer_distance_max_m",
    "casualties_reported",
    *(f"{kind}_{est}" for kind in CASUALTY_KINDS for est in ("low", "best", "high")),
    "weapons",
    "fire_from_bearing_deg",
    "evidence_sha256",
    "narrative",
    "narrative_language",
    # the server's geo facts and the incident's history
    "territory",
    "side",
    "distance_to_border_m",
    "nearest_segment",
    "ambiguous",
    "border_dataset_sha256",
    "amendments",
    "amended_at_index",
    "retracted_at_index",
    "likely_duplicate_of",
    # ACLED
    "event_date",
    "time_precision",
    "event_type",
    "sub_event_type",
    "actor1",
    "country",
    "latitude",
    "longitude",
    "geo_precision",
    "fatalities",
    # UCDP GED
    "date_start",
    "date_end",
    "date_prec",
    "where_prec",
    "side_a",
    "side_b",
    "deaths_civilians",
    "deaths_unknown",
    "low",
    "best",
    "high",
    # what the border data does not say
    "disclaimer",
)


@dataclass(frozen=True)
class Checkpoint:
    """The signed checkpoint a query was read under: every row's index is below `size`."""

    origin: str
    size: int
    root: bytes
    signed_note: str

    @classmethod
    def of(cls, response: api.GetCheckpointResponse) -> Checkpoint:
        origin = response.signed_note.split("\n", 1)[0]
        return cls(origin, response.tree_size, bytes(response.root_hash), response.signed_note)

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    def as_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.size,
            "root_hash_hex": self.root.hex(),
            "root_hash_base64": base64.b64encode(self.root).decode(),
            "signed_note": self.signed_note,
        }


def disclaimer(borders: BorderDataset) -> str:
    """The sentence every export and picture carries."""
    return (
        f"Border data '{borders.name}' (sha256 {borders.sha256[:16]}...) is used to compute "
        "and draw facts only; it implies no position on any frontier, and nothing here "
        "endorses any line as a boundary."
    )


def sector_polygon(observation: pb.Observation) -> shapely.Polygon:
    """The sector an observer placed fire in, as geo/validate.py builds it: bearings
    clockwise from true north, between the two distances (0: the observer is the apex)."""
    o = observation
    lat, lon = o.observer.latitude, o.observer.longitude
    width = (o.bearing_to_deg - o.bearing_from_deg) % 360.0
    far, near = o.distance_max_m, o.distance_min_m
    step = min(_ARC_STEP_MAX_DEG, math.degrees(2.0 * math.acos(1.0 - _SAGITTA_M / far)))
    azimuths = o.bearing_from_deg + np.linspace(0.0, width, math.ceil(width / step) + 1)

    def arc(az: Any, dist: float) -> Any:
        n = len(az)
        lons, lats, _ = _GEOD.fwd(np.full(n, lon), np.full(n, lat), az, np.full(n, dist))
        return np.column_stack([lons, lats])

    outer = arc(azimuths, far)
    inner = arc(azimuths[::-1], near) if near > 0 else np.array([[lon, lat]])
    return shapely.Polygon(np.concatenate([outer, inner]))


def geometry(location: pb.Location) -> dict[str, Any] | None:
    """The place as an RFC 7946 geometry ([longitude, latitude]; a polygon's exterior ring
    counter-clockwise): a Point, a LineString from origin to impact, a Polygon, or an
    observation's sector Polygon."""
    kind = location.WhichOneof("geometry")
    if kind == "point":
        return {"type": "Point", "coordinates": [location.point.longitude, location.point.latitude]}
    if kind == "line":
        a, b = location.line.origin, location.line.impact
        return {
            "type": "LineString",
            "coordinates": [[a.longitude, a.latitude], [b.longitude, b.latitude]],
        }
    if kind == "polygon":
        polygon = shapely.Polygon([(p.longitude, p.latitude) for p in location.polygon.points])
    elif kind == "observation":
        polygon = sector_polygon(location.observation)
    else:
        return None
    ring = orient(polygon, sign=1.0).exterior.coords
    return {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in ring]]}


def _iso(ts: Any) -> str:
    return datetime.fromtimestamp(to_us(ts) / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def _day(ts: Any) -> date:
    return datetime.fromtimestamp(to_us(ts) / 1_000_000, UTC).date()


def acled_time_precision(precision: str, start: date, end: date) -> int:
    """ACLED's code: the report's precision (minute, hour, day: 1; week: 2; month: 3), made
    coarser when the window spans more days than that code allows (2-7 days: 2; more: 3)."""
    span = (end - start).days
    by_span = 1 if span == 0 else 2 if span <= 7 else 3
    return max(_ACLED_TIME.get(precision, 3), by_span)


def acled_event_date(precision: int, start: date, end: date) -> date:
    """The start day; for a week or a month (ACLED 2, 3), the middle of the window."""
    return start if precision == 1 else start + (end - start) / 2


def ucdp_date_prec(precision: str, start: date, end: date) -> int:
    """UCDP GED's date_prec: 1 the day is known; 2 a span of 2-6 days; 3 the week is known;
    4 a span of up to a month (or the month is known); 5 more than a month."""
    span = (end - start).days
    if span == 0:
        return 1
    if precision == "week" and span <= 7:
        return 3
    if span <= 6:
        return 2
    return 4 if span <= 31 else 5


def ucdp_where_prec(precision: str, kind: str) -> int:
    """UCDP GED's where_prec: exact 1, near 2, region 4; a line that is not exact 5."""
    if kind == "line" and precision != "exact":
        return 5
    return _UCDP_WHERE.get(precision, 6)


def _name(borders: BorderDataset, code: str) -> str:
    return borders.party_names.get(code, code)


def records(
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    as_first_logged: bool = False,
) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """Each row as (GeoJSON geometry, properties in COLUMNS order). The report is the
    incident as it stands (as last amended; `version` "current") unless `as_first_logged`
    (`version` "as_logged": exactly what the row's leaf holds)."""
    out = []
    note = disclaimer(borders)
    for t in rows:
        if t.index >= checkpoint.size:
            raise ValueError(
                f"entry {t.index} is not covered by the checkpoint of size {checkpoint.size}"
            )
        rep, geo = (t.report, t.geo) if as_first_logged else (t.current.report, t.current.geo)
        kind = rep.location.WhichOneof("geometry") or "none"
        lat, lon = geofacts.anchor(rep)
        obs = rep.location.observation if kind == "observation" else None
        category = enum_name(pb.IncidentCategory, rep.category, "INCIDENT_CATEGORY_")
        window_precision = enum_name(pb.TimePrecision, rep.window.precision, "TIME_PRECISION_")
        location_precision = enum_name(
            pb.LocationPrecision, rep.location.precision, "LOCATION_PRECISION_"
        )
        start, end = _day(rep.window.start), _day(rep.window.end)
        time_prec = acled_time_precision(window_precision, start, end)
        cas = rep.casualties
        counts = {
            f"{k}_{e}": getattr(getattr(cas, k), e)
            for k in CASUALTY_KINDS
            for e in ("low", "best", "high")
        }
        killed = {
            e: counts[f"civilians_killed_{e}"] + counts[f"military_killed_{e}"]
            for e in ("low", "best", "high")
        }
        blamed = rep.alleged_responsible_party
        props: dict[str, Any] = {
            "ledger_index": t.index,
            "leaf_hash": merkle.leaf_hash(t.entry).hex(),
            "checkpoint_origin": checkpoint.origin,
            "checkpoint_size": checkpoint.size,
            "checkpoint_root": checkpoint.root_hex,
            "version": "as_logged" if as_first_logged else "current",
            "reporting_party": rep.reporting_party,
            "status": incidents.status_name(t.status),
            "category": category,
            "observation_mode": enum_name(
                pb.ObservationMode, rep.observation_mode, "OBSERVATION_MODE_"
            ),
            "alleged_responsible_party": blamed,
            "window_start": _iso(rep.window.start),
            "window_end": _iso(rep.window.end),
            "window_precision": window_precision,
            "geometry_kind": kind,
            "anchor_latitude": lat,
            "anchor_longitude": lon,
            "uncertainty_m": rep.location.uncertainty_m,
            "location_precision": location_precision,
            "observer_bearing_from_deg": obs.bearing_from_deg if obs else None,
            "observer_bearing_to_deg": obs.bearing_to_deg if obs else None,
            "observer_distance_min_m": obs.distance_min_m if obs else None,
            "observer_distance_max_m": obs.distance_max_m if obs else None,
            "casualties_reported": rep.HasField("casualties"),
            **counts,
            "weapons": "; ".join(rep.weapons),
            "fire_from_bearing_deg": (
                rep.fire_from_bearing_deg if rep.HasField("fire_from_bearing_deg") else None
            ),
            "evidence_sha256": " ".join(rep.evidence_sha256),
            "narrative": rep.narrative,
            "narrative_language": rep.narrative_language,
            "territory": geo.territory,
            "side": geofacts.side(geo),
            "distance_to_border_m": geo.distance_to_border_m,
            "nearest_segment": geo.nearest_segment,
            "ambiguous": geo.ambiguous,
            "border_dataset_sha256": geo.dataset_sha256,
            "amendments": t.current.amendments,
            "amended_at_index": t.current.amended_at_index,
            "retracted_at_index": t.current.retracted_at_index,
            "likely_duplicate_of": " ".join(str(d.index) for d in t.current.likely_duplicate_of),
            "event_date": acled_event_date(time_prec, start, end).isoformat(),
            "time_precision": time_prec,
            "event_type": ACLED_EVENT_TYPES[category][0],
            "sub_event_type": ACLED_EVENT_TYPES[category][1],
            "actor1": _name(borders, blamed) if blamed else "",
            "country": _name(borders, geo.territory) if geo.territory else "",
            "latitude": lat,
            "longitude": lon,
            "geo_precision": _ACLED_GEO.get(location_precision, 3),
            "fatalities": killed["best"],
            "date_start": start.isoformat(),
            "date_end": end.isoformat(),
            "date_prec": ucdp_date_prec(window_precision, start, end),
            "where_prec": ucdp_where_prec(location_precision, kind),
            "side_a": _name(borders, blamed) if blamed else "",
            "side_b": (
                _name(borders, rep.reporting_party) if rep.reporting_party != blamed else ""
            ),
            "deaths_civilians": counts["civilians_killed_best"],
            "deaths_unknown": counts["military_killed_best"],
            "low": killed["low"],
            "best": killed["best"],
            "high": killed["high"],
            "disclaimer": note,
        }
        assert tuple(props) == COLUMNS
        out.append((geometry(rep.location), props))
    return out


def feature_collection(
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    as_first_logged: bool = False,
) -> dict[str, Any]:
    """An RFC 7946 FeatureCollection (WGS84 longitude/latitude, no `crs` member); the
    checkpoint, the border data and the disclaimer as top-level foreign members."""
    return {
        "type": "FeatureCollection",
        "disclaimer": disclaimer(borders),
        "ledger_checkpoint": checkpoint.as_json(),
        "border_data": {"name": borders.name, "sha256": borders.sha256},
        "features": [
            {"type": "Feature", "id": props["ledger_index"], "geometry": geom, "properties": props}
            for geom, props in records(rows, checkpoint, borders, as_first_logged=as_first_logged)
        ],
    }


def write_geojson(
    out: TextIO,
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    as_first_logged: bool = False,
) -> None:
    doc = feature_collection(rows, checkpoint, borders, as_first_logged=as_first_logged)
    json.dump(doc, out, ensure_ascii=False, indent=1)
    out.write("\n")


def _wkt(geom: dict[str, Any] | None) -> str:
    return shapely.geometry.shape(geom).wkt if geom else ""


def write_csv(
    out: TextIO,
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    comment: bool = True,
    as_first_logged: bool = False,
) -> None:
    """One header row, then a row per incident: COLUMNS and `wkt` (the whole geometry).
    With `comment`, exactly one line before the header: "# " and the disclaimer and the
    checkpoint (skip it with skiprows=1)."""
    if comment:
        out.write(
            f"# {disclaimer(borders)} Read under checkpoint {checkpoint.origin} size "
            f"{checkpoint.size} root {checkpoint.root_hex}.\n"
        )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "wkt"])
    for geom, props in records(rows, checkpoint, borders, as_first_logged=as_first_logged):
        writer.writerow([_csv_value(props[c]) for c in COLUMNS] + [_wkt(geom)])


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_gpkg(
    path: Path,
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    as_first_logged: bool = False,
) -> None:
    """A GeoPackage (EPSG:4326) with the layer `incidents` (mixed geometry types; window
    times as UTC datetimes) and a table `ledger_checkpoint` with the signed note and the
    disclaimer; both layers carry the disclaimer and the checkpoint in their metadata."""
    import geopandas as gpd

    recs = records(rows, checkpoint, borders, as_first_logged=as_first_logged)
    props = []
    for _, p in recs:
        p = dict(p)
        for column in ("window_start", "window_end"):
            p[column] = datetime.fromisoformat(p[column].replace("Z", "+00:00"))
        props.append(p)
    shapes = [shapely.geometry.shape(g) if g else None for g, _ in recs]
    layer = gpd.GeoDataFrame(props, columns=list(COLUMNS), geometry=shapes, crs="EPSG:4326")
    metadata = {
        "DISCLAIMER": disclaimer(borders),
        "CHECKPOINT_ORIGIN": checkpoint.origin,
        "CHECKPOINT_SIZE": str(checkpoint.size),
        "CHECKPOINT_ROOT": checkpoint.root_hex,
        "BORDER_DATASET_SHA256": borders.sha256,
    }
    if path.exists():
        path.unlink()  # a new file, not layers added to an old one
    layer.to_file(path, layer=GPKG_LAYER, driver="GPKG", layer_metadata=metadata, engine="pyogrio")
    about = gpd.GeoDataFrame(
        [{**{k.lower(): v for k, v in metadata.items()}, "signed_note": checkpoint.signed_note}]
    )
    import pyogrio

    pyogrio.write_dataframe(
        about, path, layer=GPKG_CHECKPOINT_LAYER, driver="GPKG", append=True,
        layer_metadata=metadata,
    )  # fmt: skip


def write_note(path: Path, checkpoint: Checkpoint) -> None:
    """The signed checkpoint note, verbatim: the sidecar of a CSV or a GeoPackage export."""
    path.write_text(checkpoint.signed_note, encoding="utf-8")
