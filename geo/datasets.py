"""Border data sets that arrive as files (from a registration, or from the blob store):
check their digests, put them on disk under their data set digest, load them.

The files live in a folder of their own user, never in one that other users of the machine
can write to (a ledger's beside its database, a client's in its user cache folder), and
every file is checked against the SHA-256 its statement lists each time it is read back:
a file changed on disk is never loaded as the data set it claims to be. Errors name the
files by their names, never by where they sit on disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from geo.borders import BorderDataset, DatasetError
from geo.manifest import FILE_NAME, dataset_digest, file_digests

# Something that looks like an absolute path (or one under the home folder), to keep out
# of error messages whatever a library reports about where it read from.
_PATH = re.compile(r"(?<![\w.:/~-])~?/(?:[^\s/'\"()<>:;,]+/)+[^\s/'\"()<>:;,]*")


def user_cache_dir(*parts: str) -> Path:
    """A folder under the user's cache folder ($XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).joinpath("ceasefire-ledger", *parts)


def private_dir(folder: Path, what: str = "data set folder") -> Path:
    """`folder`, created if need be with mode 0700; refused when another user owns it or
    others may write to it (where they could put files before we look)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise DatasetError(f"the {what} {folder.name} is not a folder")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise DatasetError(f"the {what} {folder.name} belongs to another user")
    if info.st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def materialize(contents: Mapping[str, bytes], root: Path) -> Path:
    """Write the files to root/<data set digest>/ (once; atomically) and return that
    folder. `root` is made private first (see `private_dir`)."""
    for name in contents:
        if not FILE_NAME.match(name):
            raise DatasetError(f"{name[:64]!r} is not a plain file name")
    digest = dataset_digest(file_digests(contents))
    folder = private_dir(root) / digest
    if folder.is_dir():
        return folder
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    for name, data in contents.items():
        (staging / name).write_bytes(data)
    try:
        os.rename(staging, folder)
    except OSError:  # another process put it there first (its bytes are checked on use)
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def discard(folder: Path) -> None:
    """Remove a data set's folder (the files of a refused registration)."""
    shutil.rmtree(folder, ignore_errors=True)


def _check(contents: Mapping[str, bytes], expected: Mapping[str, str]) -> dict[str, str]:
    """The files must be exactly those listed, each with its listed SHA-256."""
    if set(contents) != set(expected):
        missing, extra = (
            sorted(set(expected) - set(contents)),
            sorted(set(contents) - set(expected)),
        )
        raise DatasetError(f"the files are not those listed (missing {missing}, extra {extra})")
    digests = file_digests(contents)
    for name in sorted(digests):
        if digests[name] != expected[name]:
            raise DatasetError(f"{name} does not have the listed SHA-256")
    return digests


def _load(folder: Path) -> BorderDataset:
    """Load a data set folder; any error comes back as a DatasetError that names no path."""
    try:
        return BorderDataset.load(folder)
    except DatasetError as e:
        raise DatasetError(_without_paths(str(e), folder)) from e
    except Exception as e:  # what a geo library makes of hostile bytes
        raise DatasetError(f"the files cannot be read ({_without_paths(str(e), folder)})") from e


def _without_paths(text: str, folder: Path) -> str:
    for where in {str(folder.resolve()), str(folder)}:
        text = text.replace(where + os.sep, "").replace(where, "the data set")
    return _PATH.sub("<path>", text)


def load_files(
    contents: Mapping[str, bytes], root: Path, expected: Mapping[str, str]
) -> BorderDataset:
    """Load the data set made of `contents`, whose names and SHA-256 digests must be exactly
    those of `expected` (as its statement lists them), from root/<data set digest>/.

    What is on disk is checked against `expected` again before it is parsed, and what was
    parsed after: a folder changed since it was written is written afresh (once), never
    loaded as what it is not. A folder whose files do not load as a data set is removed."""
    digests = _check(contents, expected)
    for _attempt in range(2):
        try:
            folder = materialize(contents, root)
            intact = _intact(folder, digests)
        except OSError as e:
            raise DatasetError(f"cannot write the data set's files ({e.strerror})") from e
        if intact:
            try:
                loaded = _load(folder)
            except DatasetError:
                discard(folder)
                raise
            if set(loaded.files) != set(digests):
                discard(folder)
                others = sorted(set(digests) - set(loaded.files))
                raise DatasetError(
                    f"{others} are not data files (one territories and one border file)"
                )
            if loaded.files == digests:
                return loaded
        discard(folder)  # changed on disk since it was written: write it again
    raise DatasetError("the files read back from disk do not have the listed SHA-256")


def _intact(folder: Path, digests: Mapping[str, str]) -> bool:
    """The folder holds exactly the listed files, each with its listed SHA-256."""
    found = {p.name: p for p in folder.iterdir()}
    return set(found) == set(digests) and all(
        found[name].is_file() and hashlib.sha256(found[name].read_bytes()).hexdigest() == digest
        for name, digest in digests.items()
    )


def read_files(folder: Path, expected: Mapping[str, str]) -> dict[str, bytes]:
    """The named files of a folder, each checked against its expected SHA-256."""
    contents = {n: (folder / n).read_bytes() for n in sorted(expected)}
    _check(contents, expected)
    return contents


def file_list(borders: BorderDataset) -> list[tuple[str, str, int]]:
    """(name, SHA-256, size) of each data file, sorted by name: what a statement lists."""
    return [
        (name, digest, (borders.directory / name).stat().st_size)
        for name, digest in sorted(borders.files.items())
    ]
