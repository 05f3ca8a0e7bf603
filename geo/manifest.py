"""A border data set's identity: the SHA-256 of its manifest.

The manifest lists each file, sorted by name, as the line "<sha256 hex>  <name>\\n", which
is what `sha256sum` prints; so anyone can recompute a data set's digest with

    sha256sum border.geojson territories.geojson | sha256sum

(file names in byte order). Pure: no geo libraries, so the ledger's rules can use it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def manifest(files: Mapping[str, str]) -> str:
    """The manifest text of files given as name -> lowercase hex SHA-256."""
    return "".join(f"{files[name]}  {name}\n" for name in sorted(files))


def dataset_digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256(manifest(files).encode()).hexdigest()


def file_digests(contents: Mapping[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
