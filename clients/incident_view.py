"""An incident as the timeline and the dossier show it: as last amended, placed by its
actual geometry, with its casualties, precision, geo facts and markers (amended, retracted,
likely duplicate), all taken from what the server decoded from the logged entries; and how
late it was logged (the log's clock at its entry against when it was observed and signed:
a field team's outbox may hold a report for days, see docs/field.md)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import json_format

from clients.describe import enum_name
from ledger import geofacts, incidents
from ledger.clock import to_iso, to_us
from ledger.formats.log_entry import parse_entry

if TYPE_CHECKING:
    from pyproj import Geod

# Lateness worth a line in the timeline (the dossier always shows it): logged an hour or
# more after it was observed, or ten minutes or more after it was signed (kept offline).
LATE_OBSERVED_S = 3600
LATE_SIGNED_S = 600
# What geofacts.anchor takes as the one point of each geometry kind.
ANCHOR = {"point": "point", "observation": "observer", "line": "origin", "polygon": "first vertex"}
CASUALTIES = ("civilians_killed", "civilians_injured", "military_killed", "military_injured")
# Fields whose change is not a correction of what happened.
NOT_COMPARED = frozenset({"created_time"})


def geometry_kind(report: pb.IncidentReport) -> str:
    return report.location.WhichOneof("geometry") or "none"


def geojson(location: pb.Location) -> dict[str, Any] | None:
    """The place as a GeoJSON (RFC 7946) geometry, [longitude, latitude]. An observation is
    its observer's Point, with the sector as foreign members."""
    kind = location.WhichOneof("geometry")
    if kind == "point":
        p = location.point
        return {"type": "Point", "coordinates": [p.longitude, p.latitude]}
    if kind == "line":
        a, b = location.line.origin, location.line.impact
        return {
            "type": "LineString",
            "coordinates": [[a.longitude, a.latitude], [b.longitude, b.latitude]],
        }
    if kind == "polygon":
        ring = [[p.longitude, p.latitude] for p in location.polygon.points]
        return {"type": "Polygon", "coordinates": [ring + ring[:1]]}
    if kind == "observation":
        o = location.observation
        return {
            "type": "Point",
            "coordinates": [o.observer.longitude, o.observer.latitude],
            "bearing_from_deg": o.bearing_from_deg,
            "bearing_to_deg": o.bearing_to_deg,
            "distance_min_m": o.distance_min_m,
            "distance_max_m": o.distance_max_m,
        }
    return None


def _count(c: pb.CountRange) -> dict[str, int]:
    return {"low": c.low, "best": c.best, "high": c.high}


def _as_dict(message: Any) -> dict[str, Any]:
    """Every field, even when empty ("" is neither party's territory)."""
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def changed_fields(before: pb.IncidentReport, after: pb.IncidentReport) -> list[str]:
    """The report fields an amendment changed (its signing time aside)."""
    names = []
    for f in pb.IncidentReport.DESCRIPTOR.fields:
        if f.name not in NOT_COMPARED and getattr(before, f.name) != getattr(after, f.name):
            names.append(f.name)
    return names


def moved_m(before: pb.IncidentReport, after: pb.IncidentReport) -> float:
    """How far the anchor moved, geodesic metres."""
    (lat0, lon0), (lat1, lon1) = geofacts.anchor(before), geofacts.anchor(after)
    _, _, metres = _geod().inv(lon0, lat0, lon1, lat1)
    return round(float(metres), 1)


@cache
def _geod() -> Geod:
    from pyproj import Geod  # only when an amendment moved a place: pyproj is slow to load

    return Geod(ellps="WGS84")


def lateness(report: pb.IncidentReport, entry: bytes) -> dict[str, Any]:
    """How late the report was logged: its entry's integrated time (the log's clock) less
    the end of the incident window (when it was observed) and less its created_time (when
    it was signed), in seconds."""
    logged = to_us(parse_entry(entry).integrated_time)
    observed = report.window.end if report.window.HasField("end") else report.window.start
    signed = to_us(report.created_time) if report.HasField("created_time") else None
    return {
        "logged_time": to_iso(logged),
        "logged_after_observed_s": round((logged - to_us(observed)) / 1e6, 3),
        "logged_after_signed_s": None if signed is None else round((logged - signed) / 1e6, 3),
    }


def incident_doc(
    index: int,
    status: api.IncidentStatus.ValueType,
    original: pb.IncidentReport,
    original_geo: log_pb2.GeoFacts,
    current: api.IncidentView,
    *,
    entry: bytes | None = None,
) -> dict[str, Any]:
    """One incident for --json: as last amended, with what changed and its markers; with
    the report's `entry` (the serialized LogEntry), how late it was logged."""
    rep, geo = current.report, current.geo
    latitude, longitude = geofacts.anchor(rep)
    kind = geometry_kind(rep)
    amended = current.amended_at_index != 0
    doc: dict[str, Any] = {
        "index": index,
        "party": rep.reporting_party,
        "start": to_iso(to_us(rep.window.start)),
        "end": to_iso(to_us(rep.window.end)),
        "time_precision": enum_name(pb.TimePrecision, rep.window.precision, "TIME_PRECISION_"),
        "category": enum_name(pb.IncidentCategory, rep.category, "INCIDENT_CATEGORY_"),
        "observation": enum_name(pb.ObservationMode, rep.observation_mode, "OBSERVATION_MODE_"),
        "geometry": kind,
        # The one point the ledger places it by (see `anchor`), and the whole geometry.
        "latitude": latitude,
        "longitude": longitude,
        "anchor": ANCHOR.get(kind, ""),
        "geojson": geojson(rep.location),
        "location": _as_dict(rep.location),
        "uncertainty_m": rep.location.uncertainty_m,
        "location_precision": enum_name(
            pb.LocationPrecision, rep.location.precision, "LOCATION_PRECISION_"
        ),
        "side": geofacts.side(geo),
        "territory": geo.territory or None,
        "distance_to_border_m": geo.distance_to_border_m,
        "geo": _as_dict(geo),
        "alleged_responsible_party": rep.alleged_responsible_party or None,
        "weapons": list(rep.weapons),
        "casualties": {name: _count(getattr(rep.casualties, name)) for name in CASUALTIES},
        "narrative": rep.narrative,
        "narrative_language": rep.narrative_language,
        "status": incidents.status_name(status),
        "retracted": status == api.INCIDENT_STATUS_RETRACTED,
        "retracted_at": current.retracted_at_index or None,
        "amended_at": current.amended_at_index if amended else None,
        "amended_time": to_iso(to_us(current.amended_at_time)) if amended else None,
        "amendments": current.amendments,
        "changed": changed_fields(original, rep) if amended else [],
        "moved_m": moved_m(original, rep) if amended else 0.0,
        "original": None,
        "likely_duplicate_of": [
            {"index": d.index, "reasons": list(d.reasons)} for d in current.likely_duplicate_of
        ],
        "likely_duplicated_by": list(current.likely_duplicated_by),
        "logged_time": None,
        "logged_after_observed_s": None,
        "logged_after_signed_s": None,
    }
    if entry:
        doc |= lateness(original, entry)
    if amended:
        lat0, lon0 = geofacts.anchor(original)
        doc["original"] = {
            "start": to_iso(to_us(original.window.start)),
            "end": to_iso(to_us(original.window.end)),
            "geometry": geometry_kind(original),
            "latitude": lat0,
            "longitude": lon0,
            "side": geofacts.side(original_geo),
            "geo": _as_dict(original_geo),
        }
    return doc


def _km(metres: float) -> str:
    return f"{metres / 1000:.1f} km"


def _side(doc: dict[str, Any]) -> str:
    geo = doc["geo"]
    if doc["geometry"] == "line":
        line = geo.get("line", {})
        origin = line.get("origin_territory") or "neither"
        ends = f"{origin} to {line.get('impact_territory') or 'neither'}"
        if line.get("crosses_border"):
            return f"{ends}, crosses the border"
        return f"{ends}, {_km(doc['distance_to_border_m'])} from border"
    if geo.get("shares"):
        # Largest first; slivers under half a percent are left to --json.
        shares = [s for s in geo["shares"] if s.get("share", 0.0) >= 0.005]
        shares.sort(key=lambda s: -s.get("share", 0.0))
        said = ", ".join(
            f"{s.get('territory') or 'neither'} {s.get('share', 0.0):.0%}" for s in shares
        )
        return f"area {said}" + (" (side ambiguous)" if geo.get("ambiguous") else "")
    if doc["side"] == "ambiguous":
        return f"side ambiguous, {_km(doc['distance_to_border_m'])} from border"
    return f"in {doc['side']}, {_km(doc['distance_to_border_m'])} from border"


def place_text(doc: dict[str, Any]) -> str:
    """Where, by its actual geometry: e.g. "point 40.8811,45.3875 ±500 m (near): in ARM,
    1.2 km from border"."""
    loc, kind = doc["location"], doc["geometry"]
    at = f"{doc['latitude']:.4f},{doc['longitude']:.4f}"
    if kind == "observation":
        o = loc.get("observation", {})
        what = (
            f"sector seen from {at}, bearing {o.get('bearing_from_deg', 0):.0f}-"
            f"{o.get('bearing_to_deg', 0):.0f}°, {o.get('distance_min_m', 0) / 1000:.1f}-"
            f"{_km(o.get('distance_max_m', 0))}"
        )
    elif kind == "line":
        b = loc.get("line", {}).get("impact", {})
        length = doc["geo"].get("line", {}).get("length_m", 0.0)
        what = (
            f"line from {at} to {b.get('latitude', 0):.4f},{b.get('longitude', 0):.4f} "
            f"({_km(length)})"
        )
    elif kind == "polygon":
        n = len(loc.get("polygon", {}).get("points", []))
        what = f"polygon of {n} points from {at}"
    else:
        what = f"{kind} {at}"
    if doc["uncertainty_m"]:
        what += f" ±{doc['uncertainty_m']:.0f} m"
    if doc["location_precision"] != "unspecified":
        what += f" ({doc['location_precision']})"
    return f"{what}: {_side(doc)}"


def casualties_text(doc: dict[str, Any]) -> str:
    """e.g. "civilians injured 2 (1-3), military killed 1"; empty when none reported."""
    said = []
    for name, c in doc["casualties"].items():
        if c["low"] or c["best"] or c["high"]:
            spread = f" ({c['low']}-{c['high']})" if c["low"] != c["high"] else ""
            said.append(f"{name.replace('_', ' ')} {c['best']}{spread}")
    return ", ".join(said)


def duration_text(seconds: float) -> str:
    """e.g. "3 d 4 h", "2 h 5 min", "2 min", "40 s"; "-" before a negative span."""
    sign, s = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, hours, minutes = int(s // 86400), int(s % 86400 // 3600), int(s % 3600 // 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    if minutes:
        return f"{sign}{minutes} min"
    return f"{sign}{s:.0f} s"


def lateness_text(doc: dict[str, Any]) -> str:
    """e.g. "logged 3 d 4 h after it was observed (2 min after it was signed)"; empty
    without the entry's time."""
    observed = doc.get("logged_after_observed_s")
    if observed is None:
        return ""
    text = f"logged {duration_text(observed)} after it was observed"
    signed = doc.get("logged_after_signed_s")
    if signed is not None:
        text += f" ({duration_text(signed)} after it was signed)"
    return text


def is_late(doc: dict[str, Any]) -> bool:
    """Late enough to be said in the timeline."""
    observed, signed = doc.get("logged_after_observed_s"), doc.get("logged_after_signed_s")
    return (observed is not None and observed >= LATE_OBSERVED_S) or (
        signed is not None and signed >= LATE_SIGNED_S
    )


def markers(doc: dict[str, Any]) -> list[str]:
    """What a reader must not miss: amended (and how), retracted, likely duplicates."""
    out = []
    if doc["amended_at"] is not None:
        what = [f"moved {_km(doc['moved_m'])}"] if doc["moved_m"] >= 1 else []
        original = doc["original"]
        if original["side"] != doc["side"]:
            what.append(f"side {original['side']} to {doc['side']}")
        if doc["changed"]:
            what.append("changed " + ", ".join(doc["changed"]))
        times = "" if doc["amendments"] == 1 else f" ({doc['amendments']} amendments)"
        out.append(
            f"amended at entry {doc['amended_at']} ({doc['amended_time'][:16]}){times}: "
            + ("; ".join(what) or "no change")
        )
    if doc["retracted"]:
        out.append(f"RETRACTED at entry {doc['retracted_at']}")
    for d in doc["likely_duplicate_of"]:
        out.append(f"likely duplicate of {d['index']} ({' and '.join(d['reasons'])})")
    if doc["likely_duplicated_by"]:
        later = ", ".join(str(i) for i in doc["likely_duplicated_by"])
        out.append(f"likely duplicated by {later}")
    return out


def timeline_lines(doc: dict[str, Any]) -> list[str]:
    """One incident in the timeline: a line, and its markers indented below it."""
    blames = doc["alleged_responsible_party"]
    head = (
        f"#{doc['index']:<4} {doc['start'][:16]}  {doc['party']:<4} {doc['category']:<20} "
        f"{place_text(doc)}" + (f"  blames {blames}" if blames else "") + f"  [{doc['status']}]"
    )
    late = [lateness_text(doc)] if is_late(doc) else []
    return [head] + [f"      {m}" for m in markers(doc) + late]


def dossier_lines(doc: dict[str, Any]) -> list[str]:
    """The incident as it stands, above its dossier's entries."""
    blames = doc["alleged_responsible_party"]
    lines = [
        f"  what   {doc['category']}, {doc['observation']}, {doc['party']}"
        + (f" blames {blames}" if blames else ""),
        f"  when   {doc['start'][:16]} to {doc['end'][:16]} ({doc['time_precision']})",
        f"  where  {place_text(doc)}",
    ]
    if lateness_text(doc):
        lines.append(f"  late   {lateness_text(doc)}")
    casualties = casualties_text(doc)
    if casualties:
        lines.append(f"  harm   {casualties}")
    lines += [f"  note   {m}" for m in markers(doc)]
    return lines
