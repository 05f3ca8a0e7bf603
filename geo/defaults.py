"""Where the bundled border data set lives: a constant with no geometry library behind it, so
that the client's `--help` can name the default without importing shapely or pyproj."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATASET_DIR = Path(__file__).parent / "data" / "armenia-azerbaijan"
