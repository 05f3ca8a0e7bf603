"""Throughput of geo.borders.locate() against a naive baseline measured in the same run.

The baseline is what one would write first: unprepared shapely ``contains`` on each territory,
then the geodesic minimum over every vertex of the border densified to ~50 m. It is slow, so
it runs on a sample of the same points and is reported as points/s.

    .venv/bin/python benchmarks/bench_geo.py [--points 10000] [--baseline-points 300]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--baseline-points", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
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


if __name__ == "__main__":
    main()
