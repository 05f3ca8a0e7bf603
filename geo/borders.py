"""Which party's territory holds a point, and how far it is from the border.

Coordinates come in as WGS84 degrees. Distances are geodesic metres on the WGS84 ellipsoid
(pyproj ``Geod``), never degrees. A border edge between two vertices is the straight line in
lon/lat, as RFC 7946 GeoJSON and shapely's point-in-polygon test both read it, so "which side"
and "how far" describe the same line.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod

from geo.defaults import DEFAULT_DATASET_DIR
from geo.manifest import dataset_digest

P = ParamSpec("P")
T = TypeVar("T")

# GEOS prepared geometries are not thread-safe (libgeos/geos#825): their indexes are built
# on first use and their segment intersectors keep state between calls, so two threads on
# one data set corrupt the heap (seen here as segfaults and "unaligned tcache chunk"
# aborts). A server computes geo facts on many threads: every function that reads a data
# set's prepared geometries takes this lock (re-entrant: point facts locate the point too).
# The work is short and holds the GIL most of the time anyway.
_PREPARED = threading.RLock()


def one_at_a_time(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, run by one thread at a time in this process (see _PREPARED)."""

    @functools.wraps(fn)
    def taking_turns(*args: P.args, **kwargs: P.kwargs) -> T:
        with _PREPARED:
            return fn(*args, **kwargs)

    return taking_turns


__all__ = [
    "DEFAULT_DATASET_DIR",
    "BorderDataset",
    "Bounds",
    "DatasetError",
    "GeoError",
    "PointFacts",
    "load_default",
]

TERRITORIES_FILE = "territories.geojson"
BORDER_FILE = "border.geojson"
# Formats geopandas reads from bytes; a Shapefile travels zipped (.shp, .shx, .dbf, .prj).
DATA_SUFFIXES = (".geojson", ".json", ".gpkg", ".fgb", ".zip")

FIELD_LATITUDE = "location.latitude"
FIELD_LONGITUDE = "location.longitude"
FIELD_LOCATION = "location"

_GEOD = Geod(ellps="WGS84")
_A = 6378137.0  # WGS84 semi-major axis, m
_E2 = 0.00669437999014  # WGS84 first eccentricity squared
_TOL_M = 0.001  # the nearest point is refined until the distance is good to about 1 mm
_BOW_SAMPLES = 33  # points per edge used to measure how far it bows away from its 3D chord
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
_PROJECTED_METRES = 1000.0  # |value| above this is certainly not degrees
_TOPOLOGY_TOL_DEG = 1e-9  # the source sits on a 1e-9 degree grid


class GeoError(ValueError):
    """Impossible or out-of-region input; ``field`` names the offending request field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DatasetError(ValueError):
    """The border data set on disk does not have the documented shape."""


class Bounds(NamedTuple):
    """A lon/lat box in WGS84 degrees (shapely's order)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


@dataclass(frozen=True)
class PointFacts:
    """What the data set says about one point."""

    territory: str | None  # party code of the territory whose interior holds the point
    distance_to_border_m: float  # geodesic, WGS84 ellipsoid
    nearest_segment: str  # `segment` id of the border feature holding nearest_border_point
    nearest_border_point: tuple[float, float]  # (lat, lon)


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields do not compare as a tuple
class BorderDataset:
    """One pair of neighbours' territories and shared border, loaded once and kept by the caller.

    Identity: ``sha256`` is the SHA-256 of the data set's manifest (``geo.manifest``): the
    ``sha256sum`` lines of its data files sorted by name, so an auditor reproduces it with
    ``sha256sum border.geojson territories.geojson | sha256sum``. ``files`` maps each data
    file name to its own digest. The digests are taken over the same bytes that are parsed,
    so they identify what was actually loaded; ``load`` also refuses a border file that is not
    exactly the territories' shared boundary.

    Region: a point is monitored when it lies in ``bounds``, the bounding box of both
    territories widened by ``margin_deg`` on every side (0.5 degree is 42-56 km here). A fixed,
    auditable box rather than a distance threshold: Baku is over 300 km from the border, yet
    plainly in the region.
    """

    name: str
    directory: Path
    sha256: str
    files: dict[str, str]
    parties: tuple[str, ...]
    party_names: dict[str, str]
    bounds: Bounds
    margin_deg: float
    _parts: NDArray[Any] = field(repr=False)  # prepared polygon parts
    _part_party: NDArray[np.intp] = field(repr=False)  # index into parties, per part
    _seg_lon: NDArray[np.float64] = field(repr=False)  # (n, 2): start and end of each edge
    _seg_lat: NDArray[np.float64] = field(repr=False)
    _seg_start: NDArray[np.float64] = field(repr=False)  # (n, 3) ECEF of each edge's start, m
    _seg_span: NDArray[np.float64] = field(repr=False)  # (n, 3) its end less its start, m
    _seg_bow: NDArray[np.float64] = field(repr=False)  # (n,) bound on edge-to-chord offset, m
    _seg_length_m: NDArray[np.float64] = field(repr=False)  # (n,) geodesic, start to end
    _seg_feature: NDArray[np.intp] = field(repr=False)  # index into _segment_ids, per edge
    _segment_ids: tuple[str, ...] = field(repr=False)

    @classmethod
    def load(cls, directory: Path, *, margin_deg: float = 0.5) -> BorderDataset:
        """Read and check the territories and border files from ``directory``: named
        ``territories.<ext>`` and ``border.<ext>``, in any of DATA_SUFFIXES (GeoJSON,
        GeoPackage, FlatGeobuf, a zipped Shapefile)."""
        directory = directory.resolve()
        if not (math.isfinite(margin_deg) and margin_deg >= 0):
            raise ValueError(f"margin_deg must be a finite number >= 0, not {margin_deg!r}")
        territories_file = _data_file(directory, "territories")
        border_file = _data_file(directory, "border")
        raw = {fn: (directory / fn).read_bytes() for fn in (territories_file, border_file)}
        files = {fn: hashlib.sha256(data).hexdigest() for fn, data in raw.items()}
        territories = _read(raw[territories_file], territories_file, ("party", "name"))
        border = _read(raw[border_file], border_file, ("segment", "parties"))

        parties = tuple(str(p) for p in territories["party"])
        if len(parties) != 2 or len(set(parties)) != 2:
            raise DatasetError(f"{territories_file}: expected two distinct parties, got {parties}")
        geoms = list(territories.geometry)
        for party, geom in zip(parties, geoms, strict=True):
            if geom.geom_type not in ("Polygon", "MultiPolygon") or not geom.is_valid:
                raise DatasetError(f"{territories_file}: {party} is not a valid (Multi)Polygon")
        if geoms[0].intersection(geoms[1]).area > 0:
            raise DatasetError(f"{territories_file}: the territories overlap")

        segment_ids = tuple(str(s) for s in border["segment"])
        if len(set(segment_ids)) != len(segment_ids):
            raise DatasetError(f"{border_file}: duplicate segment ids in {segment_ids}")
        for seg, seg_parties, geom in zip(
            segment_ids, border["parties"], border.geometry, strict=True
        ):
            if sorted(_codes(seg_parties)) != sorted(parties):
                raise DatasetError(f"{border_file}: segment {seg} is not between {parties}")
            if geom.geom_type not in ("LineString", "MultiLineString") or geom.is_empty:
                raise DatasetError(f"{border_file}: segment {seg} is not a (Multi)LineString")
        # The border must be exactly the shared boundary, or "which side" and "how far" could
        # disagree.
        shared = geoms[0].boundary.intersection(geoms[1].boundary)
        line = shapely.union_all(border.geometry.values)
        if line.hausdorff_distance(shared) > _TOPOLOGY_TOL_DEG:
            raise DatasetError(f"{border_file}: the border is not the territories' shared boundary")

        parts, part_party = [], []
        for i, geom in enumerate(geoms):
            for part in shapely.get_parts(geom):
                parts.append(part)
                part_party.append(i)
        parts_arr = np.array(parts, dtype=object)
        shapely.prepare(parts_arr)

        seg_lon, seg_lat, seg_feature = [], [], []
        for i, geom in enumerate(border.geometry):
            for part in shapely.get_parts(geom):
                xy = shapely.get_coordinates(part)
                seg_lon.append(np.column_stack([xy[:-1, 0], xy[1:, 0]]))
                seg_lat.append(np.column_stack([xy[:-1, 1], xy[1:, 1]]))
                seg_feature.append(np.full(len(xy) - 1, i, dtype=np.intp))

        lons, lats = np.concatenate(seg_lon), np.concatenate(seg_lat)
        t = np.linspace(0.0, 1.0, _BOW_SAMPLES)[:, None]
        start, end = _ecef(lons[:, 0], lats[:, 0]), _ecef(lons[:, 1], lats[:, 1])
        along = _ecef(
            lons[:, 0] + t * (lons[:, 1] - lons[:, 0]), lats[:, 0] + t * (lats[:, 1] - lats[:, 0])
        )
        # 50 % headroom over the sampled maximum, which is smooth and barely undersampled.
        bow = 1.5 * np.max(_point_segment_distance(along - start, end - start), axis=0) + _TOL_M

        x0, y0, x1, y1 = (float(v) for v in shapely.union_all(geoms).bounds)
        bounds = Bounds(
            max(x0 - margin_deg, -180.0),
            max(y0 - margin_deg, -90.0),
            min(x1 + margin_deg, 180.0),
            min(y1 + margin_deg, 90.0),
        )
        return cls(
            name=directory.name,
            directory=directory,
            sha256=dataset_digest(files),
            files=files,
            parties=parties,
            party_names=dict(zip(parties, (str(n) for n in territories["name"]), strict=True)),
            bounds=bounds,
            margin_deg=margin_deg,
            _parts=parts_arr,
            _part_party=np.array(part_party, dtype=np.intp),
            _seg_lon=lons,
            _seg_lat=lats,
            _seg_start=start,
            _seg_span=end - start,
            _seg_bow=bow,
            _seg_length_m=np.asarray(_GEOD.inv(lons[:, 0], lats[:, 0], lons[:, 1], lats[:, 1])[2]),
            _seg_feature=np.concatenate(seg_feature),
            _segment_ids=segment_ids,
        )

    @property
    def border_label(self) -> str:
        return "\N{EN DASH}".join(self.parties)

    @property
    def segments(self) -> tuple[str, ...]:
        """The border's segment ids, as geo facts name the nearest one."""
        return self._segment_ids

    @one_at_a_time
    def locate(self, lat: float, lon: float) -> PointFacts:
        """Territory and geodesic distance to the border for a WGS84 point.

        A point exactly on a territory's boundary is in no territory's interior, so it gets
        ``territory=None``; on the border that comes with a distance of ~0. Raises ``GeoError``
        for non-finite or out-of-range coordinates and for points outside ``bounds``.
        """
        self.check_point(lat, lon)
        inside = np.flatnonzero(shapely.contains_xy(self._parts, lon, lat))
        territory = self.parties[int(self._part_party[inside[0]])] if inside.size else None
        dist_m, (near_lat, near_lon), edge = self._nearest(lat, lon)
        return PointFacts(
            territory=territory,
            distance_to_border_m=dist_m,
            nearest_segment=self._segment_ids[int(self._seg_feature[edge])],
            nearest_border_point=(near_lat, near_lon),
        )

    def check_point(self, lat: float, lon: float, *, field: str = FIELD_LOCATION) -> None:
        """Raise ``GeoError`` unless (lat, lon) is a WGS84 point inside ``bounds``.

        ``field`` names the point in the request; a bad coordinate is reported as
        ``<field>.latitude`` or ``<field>.longitude``, a point outside the region as ``field``.
        """
        _check_coordinates(lat, lon, field=field)
        if not self.bounds.contains(lat, lon):
            # The bound-and-refine search degrades far from the plane it projects on, so the
            # rejection uses the nearest vertex: over 40 km out it is within ~1.5 km, plenty
            # for a message, and costs the same for every input.
            n = self._seg_lon.size
            dist_m = float(
                np.min(
                    _GEOD.inv(
                        np.full(n, lon),
                        np.full(n, lat),
                        self._seg_lon.ravel(),
                        self._seg_lat.ravel(),
                    )[2]
                )
            )
            hint = ""
            if self.bounds.contains(lon, lat):
                hint = "; latitude and longitude may be swapped"
            b = self.bounds
            raise GeoError(
                f"({lat:g}, {lon:g}) is about {dist_m / 1000:,.0f} km from the {self.border_label} "
                f"border, outside the region this ledger monitors (latitude {b.min_lat:.2f} to "
                f"{b.max_lat:.2f}, longitude {b.min_lon:.2f} to {b.max_lon:.2f}){hint}",
                field=field,
            )

    def territory_parts(self) -> tuple[NDArray[Any], tuple[str, ...]]:
        """The territories' polygon parts (prepared shapely Polygons) and each part's party."""
        return self._parts, tuple(self.parties[int(i)] for i in self._part_party)

    def _nearest(self, lat: float, lon: float) -> tuple[float, tuple[float, float], int]:
        """Geodesic distance, nearest border point (lat, lon) and its edge index.

        Branch and bound: project the edges orthogonally onto the plane tangent to the ellipsoid
        at the point. A projection never lengthens anything and a geodesic is never shorter than
        the straight 3D chord, so the planar distance to an edge's projected chord, less the
        edge's bow, is a true lower bound on the geodesic distance to that edge (and tight:
        0.04 % short at 300 km). Edges are refined exactly in order of that bound until the
        bound exceeds the best distance found.
        """
        lower = self._lower_bounds(lat, lon)
        best: tuple[float, float, int] = (math.inf, 0.0, -1)
        for edge in np.argsort(lower):
            if lower[edge] >= best[0]:
                break
            dist_m, t = self._refine_edge(lat, lon, int(edge), float(lower[edge]))
            if dist_m < best[0]:
                best = (dist_m, t, int(edge))
        dist_m, t, edge = best
        (lon_a, lon_b), (lat_a, lat_b) = self._seg_lon[edge], self._seg_lat[edge]
        near = (float(lat_a + t * (lat_b - lat_a)), float(lon_a + t * (lon_b - lon_a)))
        return dist_m, near, edge

    def _lower_bounds(self, lat: float, lon: float) -> NDArray[np.float64]:
        """Per edge, a lower bound (m) on the geodesic distance from (lat, lon) to it."""
        sin_phi, cos_phi = math.sin(math.radians(lat)), math.cos(math.radians(lat))
        sin_lam, cos_lam = math.sin(math.radians(lon)), math.cos(math.radians(lon))
        # The tangent plane's east and north unit vectors, as columns.
        plane = np.array(
            [[-sin_lam, -sin_phi * cos_lam], [cos_lam, -sin_phi * sin_lam], [0.0, cos_phi]]
        )
        n = _A / math.sqrt(1 - _E2 * sin_phi * sin_phi)
        origin = (n * cos_phi * cos_lam, n * cos_phi * sin_lam, n * (1 - _E2) * sin_phi)
        start = (self._seg_start - origin) @ plane  # (n, 2), the point at (0, 0)
        span = self._seg_span @ plane
        # The foot of the perpendicular from the point, clamped to the edge.
        length2 = np.einsum("ij,ij->i", span, span)
        along = np.divide(
            -np.einsum("ij,ij->i", start, span), length2, out=np.zeros_like(length2),
            where=length2 > 0,
        )  # fmt: skip
        np.clip(along, 0.0, 1.0, out=along)
        foot = start + along[:, None] * span
        bound: NDArray[np.float64] = np.maximum(
            np.hypot(foot[:, 0], foot[:, 1]) - self._seg_bow, 0.0
        )
        return bound

    def _refine_edge(
        self, lat: float, lon: float, edge: int, lower_m: float
    ) -> tuple[float, float]:
        """Geodesic minimum over one lon/lat edge: (distance m, edge parameter t)."""
        (lon_a, lon_b), (lat_a, lat_b) = self._seg_lon[edge], self._seg_lat[edge]
        lon_a, lon_b, lat_a, lat_b = float(lon_a), float(lon_b), float(lat_a), float(lat_b)
        d_lon, d_lat = lon_b - lon_a, lat_b - lat_a

        def dist(t: float) -> float:
            return float(_GEOD.inv(lon, lat, lon_a + t * d_lon, lat_a + t * d_lat)[2])

        d0, d1 = dist(0.0), dist(1.0)
        best = (d0, 0.0) if d0 <= d1 else (d1, 1.0)
        length_m = float(self._seg_length_m[edge])
        # Near an interior minimum the distance grows like d + s^2 / 2d with the offset s along
        # the edge, so a bracket of width w leaves at most w^2 / 8d: far points need far fewer
        # steps than points on the line.
        width_m = max(_TOL_M, math.sqrt(8 * lower_m * _TOL_M))
        if length_m <= width_m:
            return best
        # Distance along a short, nearly straight edge is unimodal, so golden-section search
        # converges on the foot of the perpendicular; the ends were checked above. (A scalar
        # Geod.inv costs ~1 us, as much as one point of a vectorised call: golden section,
        # with the fewest evaluations, is also the fastest.)
        lo, hi = 0.0, 1.0
        c, d = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
        fc, fd = dist(c), dist(d)
        while (hi - lo) * length_m > width_m:
            if fc <= fd:
                hi, d, fd = d, c, fc
                c = hi - _INV_PHI * (hi - lo)
                fc = dist(c)
            else:
                lo, c, fc = c, d, fd
                d = lo + _INV_PHI * (hi - lo)
                fd = dist(d)
        mid = (lo + hi) / 2
        return min(best, (dist(mid), mid))


def _ecef(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
    """Earth-centred Cartesian coordinates (m) of WGS84 points on the ellipsoid, shape (..., 3)."""
    phi, lam = np.radians(lat), np.radians(lon)
    n = _A / np.sqrt(1 - _E2 * np.sin(phi) ** 2)
    return np.stack(
        [n * np.cos(phi) * np.cos(lam), n * np.cos(phi) * np.sin(lam), n * (1 - _E2) * np.sin(phi)],
        axis=-1,
    )


def _point_segment_distance(
    point: NDArray[np.float64], segment: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Distance from ``point`` to the segment from the origin to ``segment`` (any dimension)."""
    length2 = np.sum(segment * segment, axis=-1)
    dot = np.sum(point * segment, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(np.where(length2 > 0, dot / length2, 0.0), 0.0, 1.0)
    return np.asarray(np.linalg.norm(point - t[..., None] * segment, axis=-1), dtype=np.float64)


def _codes(value: Any) -> list[str]:
    """Party codes from a list, or from the text other formats store a list as."""
    if isinstance(value, str):
        return re.findall(r"[A-Z][A-Z0-9_]{1,15}", value)
    return [str(v) for v in value]


def _data_file(directory: Path, stem: str) -> str:
    found = [stem + suffix for suffix in DATA_SUFFIXES if (directory / (stem + suffix)).is_file()]
    if len(found) != 1:
        raise DatasetError(
            f"{directory}: expected one {stem} file ({', '.join(stem + x for x in DATA_SUFFIXES)})"
            f", found {found or 'none'}"
        )
    return found[0]


def _read(data: bytes, file_name: str, columns: tuple[str, ...]) -> Any:
    # Imported here: geopandas takes a second to import, and most commands never load borders.
    import geopandas as gpd

    with warnings.catch_warnings():  # GDAL cannot see the extension of bytes in memory
        warnings.filterwarnings("ignore", message=".*non conformant file extension")
        try:
            frame = gpd.read_file(io.BytesIO(data))
        except Exception as e:  # GDAL's message names its in-memory path, not the file
            raise DatasetError(
                f"{file_name}: not a GeoJSON, GeoPackage, FlatGeobuf or zipped Shapefile "
                "that can be read"
            ) from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{file_name}: missing properties {missing}")
    # RFC 7946 files carry no crs member and read as EPSG:4326; anything else is a different CRS.
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        raise DatasetError(f"{file_name}: CRS is {frame.crs}, expected EPSG:4326")
    return frame


def _check_coordinates(lat: float, lon: float, *, field: str = FIELD_LOCATION) -> None:
    """Reject what cannot be a WGS84 point, with a hint at the likely mistake."""
    field_lat, field_lon = f"{field}.latitude", f"{field}.longitude"
    for value, name in ((lat, field_lat), (lon, field_lon)):
        if not math.isfinite(value):
            raise GeoError(f"{value} is not a finite number", field=name)
    for value, name, limit in ((lat, field_lat, 90.0), (lon, field_lon, 180.0)):
        if abs(value) <= limit:
            continue
        message = f"{value:g} is outside [-{limit:g}, {limit:g}]"
        if abs(value) > _PROJECTED_METRES:
            message += "; looks like projected metres, expected WGS84 degrees"
        elif name == field_lat and abs(lat) <= 180.0 and abs(lon) <= 90.0:
            message += "; latitude and longitude may be swapped"
        raise GeoError(message, field=name)


@functools.cache
def load_default() -> BorderDataset:
    """The bundled Armenia-Azerbaijan data set, loaded once per process."""
    return BorderDataset.load(DEFAULT_DATASET_DIR)
