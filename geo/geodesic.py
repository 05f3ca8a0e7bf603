"""The WGS84 ellipsoid, for geodesic distances: made on first use, so that importing a module
that measures (the notices, the duplicate search, the queries) does not load pyproj until it
measures (the client imports some of them and never does)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyproj import Geod


@functools.cache
def wgs84() -> Geod:
    from pyproj import Geod

    return Geod(ellps="WGS84")
