"""Reference geometry for geo tests: read straight from the bundled files with geopandas,
independent of the module under test."""

from __future__ import annotations

import functools
from typing import Any

import geopandas as gpd

from geo.borders import DEFAULT_DATASET_DIR


@functools.cache
def raw_territories() -> dict[str, Any]:
    """Unprepared polygons straight from the file, independent of the module under test."""
    frame = gpd.read_file(DEFAULT_DATASET_DIR / "territories.geojson")
    return {str(p): g for p, g in zip(frame["party"], frame.geometry, strict=True)}


@functools.cache
def raw_border() -> dict[str, Any]:
    frame = gpd.read_file(DEFAULT_DATASET_DIR / "border.geojson")
    return {str(s): g for s, g in zip(frame["segment"], frame.geometry, strict=True)}
