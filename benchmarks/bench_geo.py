"""Throughput of geo.borders.locate() against a naive baseline measured in the same run.

The baseline is what one would write first: unprepared shapely ``contains`` on each territory,
then the geodesic minimum over every vertex of the border densified to ~50 m. It is slow, so
it runs on a sample of the same points and is reported as points/s.

A second section times geo.validate's polygon_facts() and line_facts() on shapes half of which
sit within ~3 km of the border, against naive versions: the polygon overlaid on each whole,
unprepared territory and on their union (no STRtree, no containment shortcut, same geodesic
area code), and the line walked every 100 m with unprepared ``contains`` on each territory.

    .venv/bin/python benchmarks/bench_geo.py [--points 10000] [--baseline-points 300]
        [--shapes 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod

from geo.borders import DEFAULT_DATASET_DIR, BorderDataset, load_default
from geo.validate import OUTSIDE, line_facts, polygon_facts

GEOD = Geod(ellps="WGS84")


def random_points(ds: BorderDataset, count: int, seed: int) -> NDArray[np.float64]:
    """(lat, lon) rows, uniform in the data set's region."""
    b = ds.bounds
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(b.min_lat, b.max_lat, count), rng.uniform(b.min_lon, b.max_lon, count)]
    )


def naive_locator() -> Callable[[float, float], tuple[str | None, float]]:
    territories = gpd.read_file(DEFAULT_DATASET_DIR / "territories.geojson")
    border = gpd.read_file(DEFAULT_DATASET_DIR / "border.geojson")
    polygons: list[tuple[str, Any]] = list(
        zip(territories["party"], territories.geometry, strict=True)
    )
    dense = shapely.get_coordinates(shapely.segmentize(border.geometry.values, 0.00045))

    def locate(lat: float, lon: float) -> tuple[str | None, float]:
        point = shapely.Point(lon, lat)
        party = next((p for p, g in polygons if g.contains(point)), None)
        n = len(dense)
        _, _, dist = GEOD.inv(np.full(n, lon), np.full(n, lat), dense[:, 0], dense[:, 1])
        return party, float(dist.min())

    return locate


def rate(fn: Callable[[float, float], object], points: NDArray[np.float64]) -> float:
    start = time.perf_counter()
    for lat, lon in points:
        fn(float(lat), float(lon))
    return len(points) / (time.perf_counter() - start)


def random_places(ds: BorderDataset, count: int, seed: int) -> NDArray[np.float64]:
    """(lat, lon) rows: half uniform in the region less 0.2 degree, half near the border."""
    rng = np.random.default_rng(seed)
    b = ds.bounds
    uniform = np.column_stack(
        [
            rng.uniform(b.min_lat + 0.2, b.max_lat - 0.2, count - count // 2),
            rng.uniform(b.min_lon + 0.2, b.max_lon - 0.2, count - count // 2),
        ]
    )
    border = gpd.read_file(DEFAULT_DATASET_DIR / "border.geojson")
    xy = shapely.get_coordinates(shapely.segmentize(border.geometry.values, 0.001))
    near = xy[rng.integers(0, len(xy), count // 2)][:, ::-1] + rng.uniform(
        -0.03, 0.03, (count // 2, 2)
    )
    return np.concatenate([uniform, near])


def random_polygons(ds: BorderDataset, count: int, seed: int) -> list[list[tuple[float, float]]]:
    """Irregular hexagons 0.5-5 km across, built geodesically around random places."""
    rng = np.random.default_rng(seed)
    polygons = []
    for lat, lon in random_places(ds, count, seed):
        azimuths = np.arange(6) * 60.0 + rng.uniform(0, 30, 6)
        dist = rng.uniform(250, 2500, 6)
        lons, lats, _ = GEOD.fwd(np.full(6, lon), np.full(6, lat), azimuths, dist)
        polygons.append([(float(y), float(x)) for x, y in zip(lons, lats, strict=True)])
    return polygons


def random_lines(
    ds: BorderDataset, count: int, seed: int
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Origin at a random place, impact 1-20 km away in a random direction."""
    rng = np.random.default_rng(seed)
    places = random_places(ds, count, seed)
    n = len(places)
    lons, lats, _ = GEOD.fwd(
        places[:, 1], places[:, 0], rng.uniform(0, 360, n), rng.uniform(1000, 20_000, n)
    )
    return [
        ((float(a), float(b)), (float(c), float(d)))
        for (a, b), c, d in zip(places, lats, lons, strict=True)
    ]


def naive_polygon_facts() -> Callable[[list[tuple[float, float]]], dict[str, float]]:
    territories = gpd.read_file(DEFAULT_DATASET_DIR / "territories.geojson")
    polygons: list[tuple[str, Any]] = list(
        zip(territories["party"], territories.geometry, strict=True)
    )

    def area(geom: Any) -> float:
        total = 0.0
        for part in shapely.get_parts(geom):
            if part.geom_type == "Polygon":
                dense = shapely.segmentize(part, 0.001)
                total += abs(GEOD.geometry_area_perimeter(dense)[0])
        return total

    def facts(ring: list[tuple[float, float]]) -> dict[str, float]:
        polygon = shapely.Polygon([(lon, lat) for lat, lon in ring])
        areas = {party: area(geom.intersection(polygon)) for party, geom in polygons}
        union = shapely.union_all([geom for _, geom in polygons])
        areas[OUTSIDE] = area(polygon.difference(union))
        total = sum(areas.values())
        return {side: a / total for side, a in areas.items()}

    return facts


def naive_line_facts() -> Callable[[tuple[float, float], tuple[float, float]], list[str]]:
    territories = gpd.read_file(DEFAULT_DATASET_DIR / "territories.geojson")
    polygons: list[tuple[str, Any]] = list(
        zip(territories["party"], territories.geometry, strict=True)
    )

    def facts(origin: tuple[float, float], impact: tuple[float, float]) -> list[str]:
        (lat0, lon0), (lat1, lon1) = origin, impact
        _, _, length = GEOD.inv(lon0, lat0, lon1, lat1)
        inner = GEOD.npts(lon0, lat0, lon1, lat1, int(length / 100))
        sides: list[str] = []
        for lon, lat in [(lon0, lat0), *inner, (lon1, lat1)]:
            point = shapely.Point(lon, lat)
            side = next((p for p, g in polygons if g.contains(point)), OUTSIDE)
            if not sides or sides[-1] != side:
                sides.append(side)
        return sides

    return facts


def rate_of(fn: Callable[..., object], calls: list[tuple[Any, ...]]) -> float:
    start = time.perf_counter()
    for args in calls:
        fn(*args)
    return len(calls) / (time.perf_counter() - start)


def bench_validate(ds: BorderDataset, shapes: int, baseline_shapes: int, seed: int) -> None:
    polygons = [(ds, ring) for ring in random_polygons(ds, shapes, seed)]
    lines = [(ds, *ends) for ends in random_lines(ds, shapes, seed + 1)]
    polygon_facts(*polygons[0])  # warm up: builds the per-data-set index
    line_facts(*lines[0])
    naive_polygon, naive_line = naive_polygon_facts(), naive_line_facts()
    rows = [
        ("polygon_facts()", rate_of(polygon_facts, polygons)),
        ("  naive", rate_of(naive_polygon, [p[1:] for p in polygons[:baseline_shapes]])),
        ("line_facts()", rate_of(line_facts, lines)),
        ("  naive", rate_of(naive_line, [line[1:] for line in lines[:baseline_shapes]])),
    ]
    print(f"geo.validate over {shapes:,} shapes (naive: first {baseline_shapes:,}):")
    for name, value in rows:
        print(f"{name:16} {value:10,.0f} per s")
    print(
        f"speed-up:        polygons {rows[0][1] / rows[1][1]:,.1f}x, "
        f"lines {rows[2][1] / rows[3][1]:,.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--baseline-points", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shapes", type=int, default=1000)
    parser.add_argument("--baseline-shapes", type=int, default=200)
    args = parser.parse_args()

    start = time.perf_counter()
    ds = load_default()
    load_s = time.perf_counter() - start
    points = random_points(ds, args.points, args.seed)
    naive = naive_locator()

    ds.locate(*points[0])  # warm up
    fast = rate(ds.locate, points)
    slow = rate(naive, points[: args.baseline_points])
    print(f"data set {ds.name} sha256 {ds.sha256[:12]}... loaded in {load_s * 1000:.0f} ms")
    print(f"locate():  {fast:10,.0f} points/s over {len(points):,} random points in the region")
    print(
        f"baseline:  {slow:10,.1f} points/s over {min(len(points), args.baseline_points):,} "
        "of them (raw contains + geodesic min over the border densified to ~50 m)"
    )
    print(f"speed-up:  {fast / slow:10,.0f}x")
    print()
    bench_validate(ds, args.shapes, args.baseline_shapes, args.seed)


if __name__ == "__main__":
    main()
