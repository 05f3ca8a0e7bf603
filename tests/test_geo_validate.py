"""geo.validate on the real bundled border, checked against independent computations."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pyproj import Geod, Transformer

from geo import validate
from geo.borders import BorderDataset, GeoError, load_default
from geo.validate import (
    OUTSIDE,
    AreaFacts,
    line_facts,
    observation_facts,
    point_facts,
    polygon_facts,
)
from tests.geo_reference import raw_border, raw_territories

ROOT = Path(__file__).resolve().parent.parent
GEOD = Geod(ellps="WGS84")
YEREVAN = (40.1811, 44.5136)
BAKU = (40.4093, 49.8671)
NAKHCHIVAN = (39.2089, 45.4122)
TBILISI = (41.7151, 44.8271)
GAZAKH = (41.0933, 45.3661)
BERD = (40.8811, 45.3875)
NEAR_BERD = (40.92, 45.44)  # ARM, about 3 km west of the line


def brute_side(lat: float, lon: float) -> str:
    point = shapely.Point(lon, lat)
    hits = [party for party, geom in raw_territories().items() if geom.contains(point)]
    return hits[0] if hits else OUTSIDE


@functools.cache
def dense_vertices(which: str, step_deg: float) -> NDArray[np.float64]:
    """(lon, lat) samples of the shared border ("border") or of every territory boundary."""
    geoms = raw_border().values() if which == "border" else raw_territories().values()
    lines = [g if which == "border" else g.boundary for g in geoms]
    return np.asarray(shapely.get_coordinates(shapely.segmentize(lines, step_deg)))


def brute_distance_m(lat: float, lon: float, which: str, step_deg: float) -> float:
    """Geodesic minimum over samples: an upper bound, within half a step on the line."""
    xy = dense_vertices(which, step_deg)
    n = len(xy)
    return float(np.min(GEOD.inv(np.full(n, lon), np.full(n, lat), xy[:, 0], xy[:, 1])[2]))


def aeqd_to_lonlat(lat: float, lon: float) -> Transformer:
    proj = f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"
    return Transformer.from_crs(proj, "EPSG:4326", always_xy=True)


def off_the_border(metres: float) -> list[tuple[float, float]]:
    """Points ``metres`` either side of the middle of the main border's longest edge."""
    xy = shapely.get_coordinates(raw_border()["main"])
    _, _, lengths = GEOD.inv(xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1])
    i = int(np.argmax(lengths))
    mid_lon, mid_lat = (xy[i] + xy[i + 1]) / 2
    azimuth, _, _ = GEOD.inv(xy[i, 0], xy[i, 1], xy[i + 1, 0], xy[i + 1, 1])
    points = []
    for side in (90.0, -90.0):
        lon, lat, _ = GEOD.fwd(mid_lon, mid_lat, azimuth + side, metres)
        points.append((float(lat), float(lon)))
    return points


@pytest.fixture(scope="module")
def ds() -> BorderDataset:
    return load_default()


# --- points -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "side"),
    [
        pytest.param(YEREVAN, "ARM", id="Yerevan"),
        pytest.param(BERD, "ARM", id="Berd"),
        pytest.param(BAKU, "AZE", id="Baku"),
        pytest.param(GAZAKH, "AZE", id="Gazakh"),
        pytest.param(NAKHCHIVAN, "AZE", id="Nakhchivan"),
        pytest.param(TBILISI, OUTSIDE, id="Tbilisi"),
    ],
)
def test_points(ds: BorderDataset, place: tuple[float, float], side: str) -> None:
    facts = point_facts(ds, *place, 500.0)
    assert facts.dataset_sha256 == ds.sha256
    assert facts.territory == (None if side == OUTSIDE else side)
    assert facts.sides == (side,)
    assert not facts.ambiguous
    assert facts.distance_to_border_m == pytest.approx(
        brute_distance_m(*place, "border", 0.0005), abs=30.0
    )


@pytest.mark.parametrize(
    ("segment", "party", "around"),
    [
        ("artsvashen_exclave", "ARM", "AZE"),
        ("yukhari_askipara_exclave", "AZE", "ARM"),
        ("barkhudarly_exclave", "AZE", "ARM"),
    ],
)
def test_exclaves(ds: BorderDataset, segment: str, party: str, around: str) -> None:
    exclave = shapely.Polygon(raw_border()[segment])
    point = exclave.representative_point()
    lat, lon = point.y, point.x
    assert brute_side(lat, lon) == party
    facts = point_facts(ds, lat, lon, 0.0)
    assert (facts.territory, facts.sides, facts.nearest_segment) == (party, (party,), segment)
    # A circle a little wider than the distance to the exclave's edge reaches the enclosing party.
    wider = point_facts(ds, lat, lon, facts.distance_to_border_m + 1.0)
    assert wider.ambiguous and wider.parties == tuple(sorted((party, around)))
    # A point just outside the exclave belongs to the party around it.
    edge = shapely.get_coordinates(raw_border()[segment])[0]
    outer = shapely.Point(edge).buffer(0.002).difference(exclave).representative_point()
    assert point_facts(ds, outer.y, outer.x, 0.0).territory == around


def test_uncertainty_near_the_border(ds: BorderDataset) -> None:
    seen = set()
    for lat, lon in off_the_border(300.0):
        tight = point_facts(ds, lat, lon, 100.0)
        assert tight.distance_to_border_m == pytest.approx(300.0, abs=1.0)
        assert not tight.ambiguous and tight.sides == (tight.territory,)
        loose = point_facts(ds, lat, lon, 1000.0)
        assert loose.ambiguous and loose.parties == ("ARM", "AZE")
        assert loose.territory == tight.territory  # still reported, but not chosen as the side
        seen.add(tight.territory)
    assert seen == {"ARM", "AZE"}


def test_uncertainty_reaching_land_in_neither(ds: BorderDataset) -> None:
    far = point_facts(ds, *TBILISI, 1000.0)
    assert far.sides == (OUTSIDE,) and not far.ambiguous
    # Tbilisi is some 55 km from Armenia: a 100 km circle takes in both parties.
    wide = point_facts(ds, *TBILISI, 100_000.0)
    assert wide.sides == ("ARM", "AZE", OUTSIDE) and wide.ambiguous


def _place(ds: BorderDataset, u: float, v: float, where: int) -> tuple[float, float]:
    """A place for (u, v) in [0, 1]^2: anywhere in the region (0), or near Tbilisi (1) or
    Nakhchivan's (2) outer edges."""
    b = ds.bounds
    return [
        (b.min_lat + u * (b.max_lat - b.min_lat), b.min_lon + v * (b.max_lon - b.min_lon)),
        (TBILISI[0] - 0.6 + 0.5 * u, TBILISI[1] - 0.3 + 0.6 * v),
        (NAKHCHIVAN[0] - 0.4 + 0.8 * u, NAKHCHIVAN[1] - 0.8 + 1.0 * v),
    ][where]


@settings(max_examples=150, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.97, 1.03), st.sampled_from([0, 1, 2]))
def test_a_circle_shown_within_a_territory_is_judged_as_the_built_circle(
    ds: BorderDataset, u: float, v: float, factor: float, where: int
) -> None:
    """Where a box around the circle shows it inside one territory, the circle is not
    built: the sides must be those the built circle gives, above all for circles just
    reaching a territory's outer edge (where no distance-to-the-border rule decides)."""
    lat, lon = _place(ds, u, v, where)
    edge = brute_distance_m(lat, lon, "territories", 0.002)
    radius = min(max(edge * factor, 1.0), 100_000.0)
    shown = point_facts(ds, lat, lon, radius)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(validate, "_surely_within", lambda *_a: False)
        built = point_facts(ds, lat, lon, radius)
    assert shown == built


@functools.cache
def _land(ds: BorderDataset) -> Any:
    return shapely.union_all(ds.territory_parts()[0])


@settings(max_examples=150, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(1.0, 4.0), st.sampled_from([0, 1, 2]))
def test_a_circle_across_the_border_is_judged_as_the_built_circle(
    ds: BorderDataset, u: float, v: float, factor: float, where: int
) -> None:
    """A circle reaching the border touches both parties, so which parts it meets is not
    asked, and it is built only when a box around it is not inside their land: its sides
    must still be those of the built circle (every part it meets, and outside if their
    land does not cover it), above all near the tripoints with Georgia and Iran."""
    lat, lon = _place(ds, u, v, where)
    near = ds.locate(lat, lon).distance_to_border_m
    radius = min(max(near * factor, 1.0), 100_000.0)
    facts = point_facts(ds, lat, lon, radius)
    circle = validate._circle(lat, lon, radius)
    parts, party = ds.territory_parts()
    met = {p for part, p in zip(parts, party, strict=True) if part.intersects(circle)}
    outside = not _land(ds).covers(circle)
    reaches = set(ds.parties) if radius + 0.001 >= near else set()  # capped at 100 km
    assert set(facts.sides) == met | reaches | ({OUTSIDE} if outside else set())


# Eight threads at once on a freshly loaded data set (prepared geometries not yet used), as
# a server's handlers compute geo facts for reports along the border (the benchmark's);
# in a process of its own, since what this guards against is a crash. Each thread's facts
# must be those computed alone.
_THREADS = """
import threading
from benchmarks.scale_reports import ReportPlan
from geo.borders import BorderDataset, DEFAULT_DATASET_DIR
from geo import validate
first = BorderDataset.load(DEFAULT_DATASET_DIR)
places = [(s.lat, s.lon, s.uncertainty_m) for s in ReportPlan(first, 5).take(400)]
alone = [validate.point_facts(first, *p) for p in places]
for _ in range(15):
    ds = BorderDataset.load(DEFAULT_DATASET_DIR)
    validate._index.cache_clear()
    start, got = threading.Barrier(8), {}
    def facts(k):
        start.wait()
        got[k] = [validate.point_facts(ds, *p) for p in places[k::8]]
    threads = [threading.Thread(target=facts, args=(k,)) for k in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert all(got[k] == alone[k::8] for k in range(8))
print("ok")
"""


def test_geo_facts_on_many_threads_at_once_neither_crash_nor_differ() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_distances_match_pyproj(ds: BorderDataset) -> None:
    for lat, lon in [*off_the_border(300.0), YEREVAN, GAZAKH]:
        facts = point_facts(ds, lat, lon, 0.0)
        near_lat, near_lon = facts.nearest_border_point
        _, _, direct = GEOD.inv(lon, lat, near_lon, near_lat)
        assert facts.distance_to_border_m == pytest.approx(direct, abs=1e-6)
        # Samples every ~2 m overshoot by at most sqrt(d^2 + 1) - d.
        brute = brute_distance_m(lat, lon, "border", 0.00002)
        assert -1e-3 <= brute - facts.distance_to_border_m < 1.0


# --- lines ------------------------------------------------------------------------------------


def brute_sides_along(origin: tuple[float, float], impact: tuple[float, float]) -> list[str]:
    """Sides met every ~10 m along the geodesic, repeats and OUTSIDE dropped."""
    (lat0, lon0), (lat1, lon1) = origin, impact
    _, _, length = GEOD.inv(lon0, lat0, lon1, lat1)
    pts = [(lon0, lat0), *GEOD.npts(lon0, lat0, lon1, lat1, int(length / 10)), (lon1, lat1)]
    sides: list[str] = []
    for lon, lat in pts:
        side = brute_side(lat, lon)
        if side != OUTSIDE and (not sides or sides[-1] != side):
            sides.append(side)
    return sides


def check_line(ds: BorderDataset, origin: tuple[float, float], impact: tuple[float, float]) -> Any:
    facts = line_facts(ds, origin, impact)
    (lat0, lon0), (lat1, lon1) = origin, impact
    azimuth, _, length = GEOD.inv(lon0, lat0, lon1, lat1)
    assert facts.dataset_sha256 == ds.sha256
    assert facts.length_m == pytest.approx(length, abs=1e-6)
    assert facts.azimuth_deg == pytest.approx(azimuth % 360, abs=1e-9)
    sides = brute_sides_along(origin, impact)
    assert [c.from_territory for c in facts.crossings] == sides[:-1]
    assert [c.into_territory for c in facts.crossings] == sides[1:]
    previous = 0.0
    for crossing in facts.crossings:
        # On the border, on the geodesic (the two legs add up), in order from the origin.
        assert raw_border_union().distance(shapely.Point(crossing.lon, crossing.lat)) < 1e-9
        _, _, leg0 = GEOD.inv(lon0, lat0, crossing.lon, crossing.lat)
        _, _, leg1 = GEOD.inv(crossing.lon, crossing.lat, lon1, lat1)
        assert leg0 + leg1 == pytest.approx(length, abs=0.01)
        assert crossing.distance_from_origin_m == pytest.approx(leg0, abs=1e-6)
        assert crossing.distance_from_origin_m > previous
        previous = crossing.distance_from_origin_m
    return facts


@functools.cache
def raw_border_union() -> Any:
    return shapely.union_all(list(raw_border().values()))


def test_line_crossing_from_aze_into_arm(ds: BorderDataset) -> None:
    facts = check_line(ds, GAZAKH, BERD)
    assert (facts.origin.territory, facts.impact.territory) == ("AZE", "ARM")
    assert facts.crosses_border and len(facts.crossings) == 1
    assert (facts.crosses_from, facts.crosses_into) == ("AZE", "ARM")
    back = check_line(ds, BERD, GAZAKH)
    assert (back.crosses_from, back.crosses_into) == ("ARM", "AZE")
    assert back.crossings[0].distance_from_origin_m == pytest.approx(
        facts.length_m - facts.crossings[0].distance_from_origin_m, abs=0.01
    )


def test_line_inside_armenia(ds: BorderDataset) -> None:
    facts = check_line(ds, YEREVAN, BERD)
    assert facts.length_m > 100_000
    assert not facts.crosses_border and facts.crossings == ()
    assert facts.crosses_from is None and facts.crosses_into is None


def test_line_through_an_exclave(ds: BorderDataset) -> None:
    # West to east across Artsvashen (ARM, inside AZE): two crossings, AZE -> ARM -> AZE.
    centre = shapely.Polygon(raw_border()["artsvashen_exclave"]).representative_point()
    facts = check_line(ds, (centre.y, centre.x - 0.1), (centre.y, centre.x + 0.1))
    assert [(c.from_territory, c.into_territory) for c in facts.crossings] == [
        ("AZE", "ARM"),
        ("ARM", "AZE"),
    ]
    assert (facts.crosses_from, facts.crosses_into) == ("AZE", "AZE")


def test_line_long_and_across_nakhchivan(ds: BorderDataset) -> None:
    check_line(ds, NAKHCHIVAN, YEREVAN)
    check_line(ds, BAKU, YEREVAN)


# --- areas ------------------------------------------------------------------------------------


def aeqd_areas(ring: tuple[tuple[float, float], ...]) -> dict[str, float]:
    """Independent split: shapely overlay in an AEQD projection centred on the polygon."""
    polygon = shapely.Polygon([(lon, lat) for lat, lon in ring])
    centre = polygon.centroid
    to_m = aeqd_to_lonlat(centre.y, centre.x)

    def project(geom: Any) -> Any:
        dense = shapely.segmentize(geom, 0.0002)  # lon/lat-straight edges stay straight enough
        return shapely.transform(
            dense,
            lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1], direction="INVERSE")),
        )

    clip = polygon.envelope.buffer(0.01)
    projected = project(polygon)
    areas = {
        p: project(g.intersection(clip)).intersection(projected).area
        for p, g in raw_territories().items()
    }
    areas[OUTSIDE] = projected.area - sum(areas.values())
    return areas


def check_area(facts: AreaFacts) -> None:
    assert sum(s.share for s in facts.shares) == pytest.approx(1.0, abs=1e-9)
    assert [s.side for s in facts.shares] == ["ARM", "AZE", OUTSIDE]
    # The pieces are densified at other vertices than the whole, hence not to 1e-9.
    assert sum(s.area_m2 for s in facts.shares) == pytest.approx(facts.area_m2, rel=1e-7)
    ring = facts.ring
    lons, lats = [lon for _, lon in ring], [lat for lat, _ in ring]
    # Edges are straight in lon/lat, so the reference follows them every ~10 m.
    dense = shapely.segmentize(shapely.LineString(list(zip(lons, lats, strict=True))), 0.0001)
    xy = shapely.get_coordinates(dense)
    geodesic, _ = GEOD.polygon_area_perimeter(xy[:, 0], xy[:, 1])
    assert facts.area_m2 == pytest.approx(abs(geodesic), rel=1e-6)
    independent = aeqd_areas(ring)
    total = sum(independent.values())
    for share in facts.shares:
        assert share.area_m2 == pytest.approx(independent[share.side], abs=0.005 * total)
        if independent[share.side] > 0.01 * total:
            assert share.area_m2 == pytest.approx(independent[share.side], rel=0.005)


def box(lat: float, lon: float, half_deg: float) -> list[tuple[float, float]]:
    return [
        (lat - half_deg, lon - half_deg),
        (lat - half_deg, lon + half_deg),
        (lat + half_deg, lon + half_deg),
        (lat + half_deg, lon - half_deg),
    ]


def test_polygon_split_by_the_border(ds: BorderDataset) -> None:
    facts = polygon_facts(ds, box(40.95, 45.40, 0.05))
    check_area(facts)
    assert facts.sides == ("ARM", "AZE") and facts.ambiguous
    assert 0.1 < facts.share("ARM") < 0.9
    closed = polygon_facts(ds, [*box(40.95, 45.40, 0.05), box(40.95, 45.40, 0.05)[0]])
    assert closed == facts


def test_polygon_around_the_georgia_tripoint(ds: BorderDataset) -> None:
    lon, lat = shapely.get_coordinates(raw_border()["main"])[-1]
    facts = polygon_facts(ds, box(float(lat), float(lon), 0.05))
    check_area(facts)
    assert facts.sides == ("ARM", "AZE", OUTSIDE)


def test_polygon_around_an_exclave(ds: BorderDataset) -> None:
    exclave = shapely.Polygon(raw_border()["artsvashen_exclave"])
    x0, y0, x1, y1 = exclave.bounds
    facts = polygon_facts(ds, [(y0 - 0.01, x0 - 0.01), (y0 - 0.01, x1 + 0.01), (y1 + 0.01, x1)])
    check_area(facts)
    # The exclave is 0.055 degrees from the Armenian mainland, so this box holds only it.
    whole = polygon_facts(
        ds,
        [
            (y0 - 0.01, x0 - 0.01),
            (y0 - 0.01, x1 + 0.01),
            (y1 + 0.01, x1 + 0.01),
            (y1 + 0.01, x0 - 0.01),
        ],
    )
    check_area(whole)
    exclave_m2, _ = GEOD.geometry_area_perimeter(shapely.segmentize(exclave, 0.001))
    assert whole.share("ARM") * whole.area_m2 == pytest.approx(abs(exclave_m2), rel=1e-6)


def test_polygon_inside_one_territory(ds: BorderDataset) -> None:
    facts = polygon_facts(ds, box(*YEREVAN, 0.02))
    check_area(facts)
    assert facts.sides == ("ARM",) and not facts.ambiguous and facts.share("ARM") == 1.0


def test_sector_from_an_observer_near_berd(ds: BorderDataset) -> None:
    lat, lon = NEAR_BERD
    facts = observation_facts(ds, lat, lon, 60.0, 120.0, 1000.0, 5000.0)
    assert facts.dataset_sha256 == ds.sha256
    assert facts.observer.territory == "ARM"
    sector = facts.sector
    check_area(sector)
    assert sector.sides == ("ARM", "AZE") and 0.1 < sector.share("AZE") < 0.9
    # An annulus sector of 60 degrees, 1-5 km: pi (5^2 - 1^2) / 6 km^2 on a near-flat patch.
    assert sector.area_m2 == pytest.approx(math.pi * (5000**2 - 1000**2) / 6, rel=1e-3)
    ring = np.array(sector.ring)
    n = len(ring)
    azimuth, _, dist = GEOD.inv(np.full(n, lon), np.full(n, lat), ring[:, 1], ring[:, 0])
    assert set(np.round(dist, 3)) == {1000.0, 5000.0}
    assert np.all((azimuth % 360 >= 60 - 1e-9) & (azimuth % 360 <= 120 + 1e-9))


def test_sector_wrapping_through_north(ds: BorderDataset) -> None:
    facts = observation_facts(ds, *NEAR_BERD, 350.0, 10.0, 0.0, 2000.0)
    check_area(facts.sector)
    assert facts.sector.area_m2 == pytest.approx(math.pi * 2000**2 / 18, rel=1e-3)
    ring = np.array(facts.sector.ring)
    azimuth, _, _ = GEOD.inv(
        np.full(len(ring), NEAR_BERD[1]), np.full(len(ring), NEAR_BERD[0]), ring[:, 1], ring[:, 0]
    )
    east_of_north = (azimuth % 360 <= 10 + 1e-9) | (azimuth % 360 >= 350 - 1e-9)
    assert np.all(east_of_north | np.isclose(ring, NEAR_BERD).all(axis=1))


# --- refusals ---------------------------------------------------------------------------------


def test_bow_tie_refused(ds: BorderDataset) -> None:
    bow_tie = [(40.90, 45.30), (41.00, 45.50), (40.90, 45.50), (41.00, 45.30)]
    with pytest.raises(GeoError) as caught:
        polygon_facts(ds, bow_tie)
    assert caught.value.field == "location.polygon"
    assert "self-intersection at (40.95, 45.4)" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "field", "fragment"),
    [
        (lambda d: point_facts(d, math.nan, 45.0, 10), "location.point.latitude", "not a finite"),
        (lambda d: point_facts(d, 40.0, math.inf, 10), "location.point.longitude", "not a finite"),
        (
            lambda d: point_facts(d, "40", 45.0, 10),  # type: ignore[arg-type]
            "location.point.latitude",
            "expected a number",
        ),
        (lambda d: point_facts(d, 40.9, 45.4, -1), "location.point.uncertainty_m", "outside [0"),
        (lambda d: point_facts(d, 40.9, 45.4, 100_001), "location.point.uncertainty_m", "outside"),
        (
            lambda d: point_facts(d, 4_527_000.0, 533_000.0, 10),
            "location.point.latitude",
            "looks like projected metres, expected WGS84 degrees",
        ),
        (
            lambda d: point_facts(d, 45.3875, 40.8811, 10),
            "location.point",
            "latitude and longitude may be swapped",
        ),
        (
            lambda d: point_facts(d, 48.8566, 2.3522, 10),
            "location.point",
            "outside the region this ledger monitors",
        ),
        (lambda d: polygon_facts(d, []), "location.polygon.points", "at least 3 distinct"),
        (
            lambda d: polygon_facts(d, [(40.9, 45.3), (41.0, 45.3), (40.9, 45.3)]),
            "location.polygon.points",
            "at least 3 distinct",
        ),
        (
            lambda d: polygon_facts(d, [(40.9, 45.3), (41.0, 45.3), (40.95, 45.3)]),
            "location.polygon",
            "not a valid polygon",
        ),
        (
            lambda d: polygon_facts(d, [(40.9, 45.3), (41.0, 45.3), (41.0, 45.4), (40.9, 505_000)]),
            "location.polygon.points[3].longitude",
            "looks like projected metres",
        ),
        (
            lambda d: polygon_facts(d, [(40.9, 45.3), (45.3, 41.0), (41.0, 45.4)]),
            "location.polygon.points[1]",
            "latitude and longitude may be swapped",
        ),
        (
            lambda d: polygon_facts(d, [(40.9, 45.3), (41.0,)]),  # type: ignore[list-item]
            "location.polygon.points[1]",
            "pair",
        ),
        (
            lambda d: line_facts(d, (math.nan, 45.0), BERD),
            "location.line.origin.latitude",
            "not a finite",
        ),
        (
            lambda d: line_facts(d, GAZAKH, (4_527_000.0, 533_000.0)),
            "location.line.impact.latitude",
            "looks like projected metres",
        ),
        (
            lambda d: line_facts(d, (45.3661, 41.0933), BERD),
            "location.line.origin",
            "latitude and longitude may be swapped",
        ),
        (
            lambda d: line_facts(d, BERD, BERD),
            "location.line.impact",
            "equals the origin",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 360.0, 10.0, 0, 10),
            "location.observation.bearing_from_deg",
            "outside [0, 360)",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, -5.0, 0, 10),
            "location.observation.bearing_to_deg",
            "outside [0, 360)",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, 10.0, 0, 10),
            "location.observation.bearing_to_deg",
            "no width",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, 20.0, -1, 10),
            "location.observation.distance_min_m",
            "negative",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, 20.0, 500, 100),
            "location.observation.distance_max_m",
            "not more than distance_min_m",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, 20.0, 0, 100_001),
            "location.observation.distance_max_m",
            "over the 100,000 m limit",
        ),
        (
            lambda d: observation_facts(d, 40.9, 45.4, 10.0, 20.0, 0, math.nan),
            "location.observation.distance_max_m",
            "not a finite",
        ),
        (
            lambda d: observation_facts(d, 144.5, 40.1, 10.0, 20.0, 0, 100),
            "location.observation.latitude",
            "latitude and longitude may be swapped",
        ),
    ],
)
def test_refusals(ds: BorderDataset, call: Any, field: str, fragment: str) -> None:
    with pytest.raises(GeoError) as caught:
        call(ds)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert fragment in str(caught.value)


# --- property: ambiguity against brute-force sampling of the circle ---------------------------


def closed_sides(lat: float, lon: float) -> set[str]:
    """Territories whose closure holds the point (both, on the border), else OUTSIDE."""
    point = shapely.Point(lon, lat)
    return {p for p, g in raw_territories().items() if g.covers(point)} or {OUTSIDE}


def sampled_sides(lat: float, lon: float, radius: float) -> set[str]:
    """Sides of the centre and of 72 points on the AEQD circle of ``radius``.

    Points are tested against the closed territories: a point on a boundary touches the
    territory on either side of it, and is OUTSIDE only if it touches no territory.
    """
    angle = np.radians(np.arange(72) * 5.0)
    lons, lats = aeqd_to_lonlat(lat, lon).transform(radius * np.sin(angle), radius * np.cos(angle))
    sides = closed_sides(lat, lon)
    if radius == 0:
        return sides  # not 72 copies of the centre, each off by float noise
    for x, y in zip(lons, lats, strict=True):
        sides |= closed_sides(y, x)
    return sides


region = load_default().bounds
border_xy = dense_vertices("border", 0.001)
uniform_places = st.tuples(
    st.floats(region.min_lat, region.max_lat),
    st.floats(region.min_lon, region.max_lon),
    st.one_of(st.just(0.0), st.floats(0.01, 100_000.0)),
)
near_border_places = st.builds(
    lambda i, dlat, dlon, r: (float(border_xy[i, 1]) + dlat, float(border_xy[i, 0]) + dlon, r),
    st.integers(0, len(border_xy) - 1),
    st.floats(-0.03, 0.03),
    st.floats(-0.03, 0.03),
    st.one_of(st.just(0.0), st.floats(0.01, 4000.0)),
)


@settings(max_examples=60, deadline=None)
@given(st.one_of(uniform_places, near_border_places))
def test_property_ambiguity_matches_sampling(place: tuple[float, float, float]) -> None:
    lat, lon, radius = place
    facts = point_facts(load_default(), lat, lon, radius)
    sides = sampled_sides(lat, lon, radius)
    # Exact direction 1: every sampled side is touched.
    assert sides <= set(facts.sides)
    if len(sides) > 1:
        assert facts.ambiguous
    # Exact direction 2: a circle short of every boundary touches one side. The shared border
    # is measured exactly; the outer boundaries (Georgia, Iran, Turkey, the Caspian) by samples
    # every ~50 m, which overshoot by at most ~25 m.
    if (
        facts.distance_to_border_m > radius + 1.0
        and brute_distance_m(lat, lon, "all", 0.0005) > radius + 30.0
    ):
        assert not facts.ambiguous
        assert facts.sides == (brute_side(lat, lon),)
