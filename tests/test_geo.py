"""geo.borders on the real bundled data set, checked against brute-force references."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pyproj import Geod

from geo.borders import (
    DEFAULT_DATASET_DIR,
    BorderDataset,
    DatasetError,
    GeoError,
    PointFacts,
    load_default,
)
from tests.geo_reference import raw_border, raw_territories

GEOD = Geod(ellps="WGS84")
TERRITORIES_SHA256 = "36bce0ac3074e4e3c4488cf82c7077b7bea633e41d22dba724a6a6cde0cfe82f"
BORDER_SHA256 = "da1ebb3db67bdf1389da291b968c48f0a01531ffedeca9fadbcddc17be8d2c9e"
# `sha256sum border.geojson territories.geojson | sha256sum` in the data folder.
DATASET_SHA256 = "cf3d212cba8ecd4e91e1c58eec3f726114cbb469d4278b0a0424bc9096f4fee8"
# ~10 m between reference vertices; near the line the minimum over them is then refined by
# sampling the edges next to the closest vertices every ~10 cm (see brute_distance_m).
DENSIFY_DEG = 0.0001
FINE_SAMPLES = 101


@functools.cache
def dense_border() -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Border vertices (lon, lat) densified along the lon/lat edges, and each one's line id."""
    lines = shapely.get_parts(shapely.segmentize(list(raw_border().values()), DENSIFY_DEG))
    xy, line_id = shapely.get_coordinates(lines, return_index=True)
    return np.asarray(xy, dtype=np.float64), np.asarray(line_id, dtype=np.intp)


def brute_territory(lat: float, lon: float) -> str | None:
    point = shapely.Point(lon, lat)
    hits = [party for party, geom in raw_territories().items() if geom.contains(point)]
    assert len(hits) <= 1
    return hits[0] if hits else None


def geodesic_m(lat: float, lon: float, lons: Any, lats: Any) -> NDArray[np.float64]:
    n = len(lons)
    return np.asarray(GEOD.inv(np.full(n, lon), np.full(n, lat), lons, lats)[2])


def brute_distance_m(lat: float, lon: float) -> float:
    """Minimum geodesic distance over samples of the border: no search, no projection.

    The ~10 m vertices alone overshoot by up to sqrt(d^2 + 5.6^2) - d (5.6 m on the line), so
    the edges around every vertex that could be near the minimum are resampled every ~10 cm.
    """
    xy, line_id = dense_border()
    dist = geodesic_m(lat, lon, xy[:, 0], xy[:, 1])
    close = np.flatnonzero(dist <= dist.min() + 12.0)
    starts = np.union1d(close, close - 1)
    starts = starts[(starts >= 0) & (starts + 1 < len(xy))]
    starts = starts[line_id[starts] == line_id[starts + 1]]
    t = np.linspace(0.0, 1.0, FINE_SAMPLES)[None, :, None]
    fine = (xy[starts, None, :] + t * (xy[starts + 1] - xy[starts])[:, None, :]).reshape(-1, 2)
    return float(min(dist.min(), geodesic_m(lat, lon, fine[:, 0], fine[:, 1]).min()))


def assert_consistent(lat: float, lon: float, facts: PointFacts) -> None:
    """Territory and distance agree with the brute force; the nearest point is on the border."""
    assert facts.territory == brute_territory(lat, lon)
    brute = brute_distance_m(lat, lon)
    # Sampling bounds the true minimum from above (to 6 cm on the line, far less off it); the
    # module pins its nearest point to 1 mm, which allows as much at a sampled vertex.
    assert facts.distance_to_border_m <= brute + 1e-3
    assert brute - facts.distance_to_border_m < 1.0
    near_lat, near_lon = facts.nearest_border_point
    _, _, to_near = GEOD.inv(lon, lat, near_lon, near_lat)
    assert to_near == pytest.approx(facts.distance_to_border_m, abs=1e-6)
    segment = raw_border()[facts.nearest_segment]
    assert segment.distance(shapely.Point(near_lon, near_lat)) < 1e-9


@pytest.fixture(scope="module")
def ds() -> BorderDataset:
    return load_default()


def test_dataset_identity_and_metadata(ds: BorderDataset) -> None:
    assert ds.sha256 == DATASET_SHA256
    assert ds.files == {"territories.geojson": TERRITORIES_SHA256, "border.geojson": BORDER_SHA256}
    for name, digest in ds.files.items():
        assert hashlib.sha256((DEFAULT_DATASET_DIR / name).read_bytes()).hexdigest() == digest
    assert ds.name == "armenia-azerbaijan"
    assert ds.parties == ("ARM", "AZE")
    assert ds.party_names == {"ARM": "Armenia", "AZE": "Azerbaijan"}
    union_bounds = shapely.union_all(list(raw_territories().values())).bounds
    assert ds.bounds.min_lon == pytest.approx(union_bounds[0] - 0.5)
    assert ds.bounds.max_lat == pytest.approx(union_bounds[3] + 0.5)
    assert load_default() is ds


@pytest.mark.parametrize(
    ("lat", "lon", "party"),
    [
        pytest.param(40.1811, 44.5136, "ARM", id="Yerevan"),
        pytest.param(40.4093, 49.8671, "AZE", id="Baku"),
        pytest.param(39.2089, 45.4122, "AZE", id="Nakhchivan city"),
        pytest.param(39.8153, 46.7519, "AZE", id="Stepanakert/Khankendi"),
        pytest.param(41.7151, 44.8271, None, id="Tbilisi, in the region but in neither"),
    ],
)
def test_cities(ds: BorderDataset, lat: float, lon: float, party: str | None) -> None:
    facts = ds.locate(lat, lon)
    assert facts.territory == party
    assert facts.distance_to_border_m > 1000
    assert_consistent(lat, lon, facts)


@pytest.mark.parametrize(
    ("segment", "party"),
    [
        ("artsvashen_exclave", "ARM"),  # surrounded by AZE
        ("yukhari_askipara_exclave", "AZE"),  # surrounded by ARM
        ("barkhudarly_exclave", "AZE"),  # surrounded by ARM
    ],
)
def test_exclave_interiors(ds: BorderDataset, segment: str, party: str) -> None:
    exclave = shapely.Polygon(raw_border()[segment])
    point = exclave.representative_point()
    assert any(p.equals(exclave) for p in shapely.get_parts(raw_territories()[party]))
    facts = ds.locate(point.y, point.x)
    assert facts.territory == party
    assert facts.nearest_segment == segment
    assert_consistent(point.y, point.x, facts)


def test_few_hundred_metres_either_side(ds: BorderDataset) -> None:
    # Step off the middle of the longest edge of the main border, perpendicular to it.
    xy = shapely.get_coordinates(raw_border()["main"])
    _, _, lengths = GEOD.inv(xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1])
    i = int(np.argmax(lengths))
    mid_lon, mid_lat = (xy[i] + xy[i + 1]) / 2
    azimuth, _, _ = GEOD.inv(xy[i, 0], xy[i, 1], xy[i + 1, 0], xy[i + 1, 1])
    seen = set()
    for side in (90.0, -90.0):
        lon, lat, _ = GEOD.fwd(mid_lon, mid_lat, azimuth + side, 300.0)
        facts = ds.locate(lat, lon)
        assert facts.distance_to_border_m == pytest.approx(300.0, abs=1.0)
        assert facts.nearest_segment == "main"
        assert_consistent(lat, lon, facts)
        seen.add(facts.territory)
    assert seen == {"ARM", "AZE"}


def test_on_a_border_vertex(ds: BorderDataset) -> None:
    lon, lat = shapely.get_coordinates(raw_border()["main"])[40]
    facts = ds.locate(lat, lon)
    assert facts.territory is None  # on the boundary, in neither interior
    assert facts.distance_to_border_m < 0.01


@pytest.mark.parametrize(
    ("lat", "lon", "field", "fragment"),
    [
        (math.nan, 44.5, "location.latitude", "not a finite number"),
        (40.1, math.inf, "location.longitude", "not a finite number"),
        (-math.inf, 44.5, "location.latitude", "not a finite number"),
        (90.5, 10.0, "location.latitude", "outside [-90, 90]"),
        (40.1, -180.5, "location.longitude", "outside [-180, 180]"),
        (120.0, 200.0, "location.latitude", "outside [-90, 90]"),
        (144.5, 40.1, "location.latitude", "latitude and longitude may be swapped"),
        (4_450_000.0, 500_000.0, "location.latitude", "looks like projected metres"),
        (40.1, 458_000.0, "location.longitude", "looks like projected metres"),
        (48.8566, 2.3522, "location", "outside the region this ledger monitors"),
        (44.5136, 40.1811, "location", "latitude and longitude may be swapped"),
    ],
)
def test_rejects_impossible_input(
    ds: BorderDataset, lat: float, lon: float, field: str, fragment: str
) -> None:
    with pytest.raises(GeoError) as caught:
        ds.locate(lat, lon)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_far_away_message_gives_geodesic_km(ds: BorderDataset) -> None:
    with pytest.raises(GeoError) as caught:
        ds.locate(48.8566, 2.3522)
    km = brute_distance_m(48.8566, 2.3522) / 1000
    assert f"is about {km:,.0f} km from the ARM\N{EN DASH}AZE border" in str(caught.value)


def test_region_edges(ds: BorderDataset) -> None:
    b = ds.bounds
    ds.locate(b.max_lat, b.min_lon)  # the box is closed
    with pytest.raises(GeoError):
        ds.locate(b.max_lat + 1e-6, b.min_lon)


def write_variant(tmp_path: Path, segment: str, geometry: Any) -> Path:
    """The real territories file byte for byte, and the real border with one geometry swapped."""
    (tmp_path / "territories.geojson").write_bytes(
        (DEFAULT_DATASET_DIR / "territories.geojson").read_bytes()
    )
    border = json.loads((DEFAULT_DATASET_DIR / "border.geojson").read_bytes())
    for feature in border["features"]:
        if feature["properties"]["segment"] == segment:
            feature["geometry"] = shapely.geometry.mapping(geometry)
    (tmp_path / "border.geojson").write_text(json.dumps(border))
    return tmp_path


def test_accepts_multilinestring_border(ds: BorderDataset, tmp_path: Path) -> None:
    xy = shapely.get_coordinates(raw_border()["main"])
    split = shapely.MultiLineString([xy[:80], xy[79:]])
    variant = BorderDataset.load(write_variant(tmp_path, "main", split))
    # Other bytes, another data set: the identity covers every data file.
    assert variant.sha256 != ds.sha256
    assert variant.files["border.geojson"] != ds.files["border.geojson"]
    assert variant.files["territories.geojson"] == ds.files["territories.geojson"]
    for lat, lon in [(40.1811, 44.5136), (39.8153, 46.7519), (41.0, 45.3)]:
        assert variant.locate(lat, lon) == ds.locate(lat, lon)


def test_rejects_border_off_the_shared_boundary(tmp_path: Path) -> None:
    moved = shapely.affinity.translate(raw_border()["main"], xoff=0.001)
    with pytest.raises(DatasetError, match="not the territories' shared boundary"):
        BorderDataset.load(write_variant(tmp_path, "main", moved))


region = load_default().bounds
uniform_points = st.tuples(
    st.floats(region.min_lat, region.max_lat), st.floats(region.min_lon, region.max_lon)
)
# Most of the region is far from the line, so also sample within ~2 km of a border vertex.
near_border_points = st.builds(
    lambda i, dlat, dlon: (
        float(dense_border()[0][i, 1]) + dlat,
        float(dense_border()[0][i, 0]) + dlon,
    ),
    st.integers(0, len(dense_border()[0]) - 1),
    st.floats(-0.02, 0.02),
    st.floats(-0.02, 0.02),
)


@settings(max_examples=60, deadline=None)
@given(st.one_of(uniform_points, near_border_points))
def test_property_matches_brute_force(point: tuple[float, float]) -> None:
    lat, lon = point
    assert_consistent(lat, lon, load_default().locate(lat, lon))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize("fmt", ["gpkg", "zip", "fgb"])
def test_other_formats_geopandas_reads(ds: BorderDataset, tmp_path: Path, fmt: str) -> None:
    """GeoPackage, zipped Shapefile and FlatGeobuf copies give the same facts."""
    import zipfile

    for stem in ("territories", "border"):
        frame = gpd.read_file(DEFAULT_DATASET_DIR / f"{stem}.geojson")
        if fmt == "zip":
            if "parties" in frame.columns:  # a Shapefile has no list columns: store the text
                frame["parties"] = frame["parties"].astype(str)
            shp = tmp_path / "shp" / stem
            shp.mkdir(parents=True)
            frame.to_file(shp / f"{stem}.shp")
            with zipfile.ZipFile(tmp_path / f"{stem}.zip", "w") as z:
                for f in shp.iterdir():
                    z.write(f, f.name)
        else:
            frame.to_file(
                tmp_path / f"{stem}.{fmt}", driver={"gpkg": "GPKG", "fgb": "FlatGeobuf"}[fmt]
            )
    copy = BorderDataset.load(tmp_path)
    assert set(copy.files) == {f"territories.{fmt}", f"border.{fmt}"}
    assert copy.sha256 != ds.sha256  # other bytes, another data set
    for lat, lon in [(40.1811, 44.5136), (39.2089, 45.4122), (41.0933, 45.3661)]:
        a, b = ds.locate(lat, lon), copy.locate(lat, lon)
        assert (a.territory, a.nearest_segment) == (b.territory, b.nearest_segment)
        assert a.distance_to_border_m == pytest.approx(b.distance_to_border_m, abs=0.01)


def test_a_folder_without_data_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected one territories file"):
        BorderDataset.load(tmp_path)
