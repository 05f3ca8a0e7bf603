"""Border data sets that arrive as files (from a registration, or from the blob store):
check their digests, put them on disk under their data set digest, load them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from geo.borders import BorderDataset, DatasetError
from geo.manifest import FILE_NAME, dataset_digest, file_digests


def materialize(contents: Mapping[str, bytes], root: Path) -> Path:
    """Write the files to root/<data set digest>/ (once; atomically) and return that folder."""
    for name in contents:
        if not FILE_NAME.match(name):
            raise DatasetError(f"{name!r} is not a plain file name")
    digest = dataset_digest(file_digests(contents))
    folder = root / digest
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    for name, data in contents.items():
        (staging / name).write_bytes(data)
    try:
        os.rename(staging, folder)
    except OSError:  # another process put it there first: same digest, same bytes
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
    return folder


def load_files(contents: Mapping[str, bytes], root: Path) -> BorderDataset:
    return BorderDataset.load(materialize(contents, root))


def read_files(folder: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


def file_list(borders: BorderDataset) -> list[tuple[str, str, int]]:
    """(name, SHA-256, size) of each data file, sorted by name: what a statement lists."""
    return [
        (name, digest, (borders.directory / name).stat().st_size)
        for name, digest in sorted(borders.files.items())
    ]
