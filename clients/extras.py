"""The optional parts of ceasefire-ledger, and what a command says when it needs one.

The client (sign, submit, query, prove, follow) installs with few dependencies. Running a
ledger (serve, init, verify's replay, mirror, border data) needs the `server` extra; drawing
maps and charts, and the geometry of exported incidents, the `maps` extra. Their libraries are
imported inside the functions that use them, never when `ceasefire` starts.
"""

from __future__ import annotations

import sys

SERVER = "server"
MAPS = "maps"

# Top-level import names each extra brings (with what they pull in, e.g. numpy, pandas).
MODULES: dict[str, str] = {
    "sqlalchemy": SERVER,
    "alembic": SERVER,
    "psycopg": SERVER,
    "psycopg_binary": SERVER,
    "grpc_reflection": SERVER,
    "geopandas": SERVER,
    "shapely": SERVER,
    "pyproj": SERVER,
    "pyogrio": SERVER,
    "numpy": SERVER,
    "pandas": SERVER,
    "matplotlib": MAPS,
    "mpl_toolkits": MAPS,
    "pylab": MAPS,
}

# Commands that draw or export geometry: the maps extra (which brings the geometry too).
MAPS_COMMANDS = frozenset({"map", "chart", "export-incidents"})


def install_hint(extra: str) -> str:
    """The pip command that adds an extra."""
    return f"pip install 'ceasefire-ledger[{extra}]'"


def missing_extra(command: str, error: BaseException) -> str | None:
    """`error: ceasefire serve needs the server extra: pip install 'ceasefire-ledger[server]'`
    when `error` is the ImportError of a library an extra brings; None for any other error."""
    if not isinstance(error, ImportError) or not error.name:
        return None
    extra = MODULES.get(error.name.partition(".")[0])
    if extra is None:
        return None
    if command in MAPS_COMMANDS:
        extra = MAPS
    return f"error: ceasefire {command} needs the {extra} extra: {install_hint(extra)}"


def loaded(module: str, name: str) -> tuple[type[BaseException], ...]:
    """`(module.name,)` if `module` is imported already, else `()`: for isinstance checks on
    errors from heavy modules. An error whose class's module was never imported cannot have
    been raised, so the check needs no import (and works where the extra is missing)."""
    found = sys.modules.get(module)
    error = getattr(found, name, None) if found is not None else None
    if isinstance(error, type) and issubclass(error, BaseException):
        return (error,)
    return ()
