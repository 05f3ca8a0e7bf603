"""Files that travel with a statement (SubmitWithBlobs), received a chunk at a time.

An upload is judged by its first message, the envelope, before any of its files is read
(`Ledger.check`): who signed it, whether they may say it, and which files it lists with
their sizes and SHA-256. Only then are its chunks taken, each checked against those names
and sizes at once, hashed as it comes and appended to a spool file in a private folder
(mode 0700) of the ledger's own; at most one chunk of an upload is in memory while it is
received. The files are read back, whole, only when every byte has arrived and matched.

The bytes of the uploads in progress are bounded across the server (`Budget`): an upload
reserves the total its statement lists before its first chunk is read and holds it until
its entry is committed or refused; one that does not fit is refused UNAVAILABLE with a
retry hint, before any of its bytes are taken. No gRPC here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from geo import datasets
from geo.borders import DatasetError
from ledger.errors import InvalidArgument, LedgerError, Overloaded

MiB = 1024 * 1024
# Bytes of files being received (or waiting for their commit) at once, across all uploads.
DEFAULT_BUDGET_BYTES = 64 * MiB
SPOOL_PREFIX = "upload-"


@dataclass(frozen=True)
class Listed:
    """A file a statement lists: its name, size and SHA-256 (hex), and the refusal when the
    bytes sent are not those."""

    name: str
    size: int
    sha256: str
    mismatch: LedgerError


class Budget:
    """The bytes reserved by uploads in progress, never more than `limit` in all."""

    def __init__(self, limit: int = DEFAULT_BUDGET_BYTES, *, retry_after_s: float = 2.0) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, size: int) -> None:
        """Take `size` bytes, or refuse with Overloaded (UNAVAILABLE + RetryInfo)."""
        with self._lock:
            if self._used + size > self.limit:
                raise Overloaded(
                    f"the server is receiving {self._used / MiB:.1f} MiB of files and takes "
                    f"at most {self.limit / MiB:.0f} MiB at once; retry shortly",
                    retry_after_s=self.retry_after_s,
                )
            self._used += size

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size
            assert self._used >= 0, "released more than reserved"


def spool_folder(folder: Path) -> Path:
    """`folder`, created if need be with mode 0700 and refused if another user owns it; any
    spool file left there by a server that stopped mid-upload is removed."""
    try:
        datasets.private_dir(folder, "upload folder")
    except DatasetError as e:
        raise OSError(str(e)) from e
    for left in folder.glob(f"{SPOOL_PREFIX}*"):
        left.unlink(missing_ok=True)
    return folder


class _Spooled:
    """One file of an upload as it arrives: its spool file, bytes so far and running hash."""

    def __init__(self, folder: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=folder)  # mode 0600
        self.path = Path(name)
        self.file = os.fdopen(fd, "w+b")
        self.size = 0
        self.hash = hashlib.sha256()


class Receiver:
    """The files of one upload, a chunk at a time (see the module docstring). Thread-safe
    against `discard` from another thread (a cancelled upload)."""

    def __init__(
        self,
        listed: Mapping[str, Listed],
        unlisted: Callable[[str], LedgerError],
        folder: Path,
    ) -> None:
        self._listed = listed
        self._unlisted = unlisted
        self._folder = folder
        self._files: dict[str, _Spooled] = {}
        self._lock = threading.Lock()
        self._closed = False

    def add(self, name: str, data: bytes) -> None:
        """One chunk of file `name`: refused at once if the statement does not list the
        file or the file grows past its listed size."""
        listed = self._listed.get(name)
        if listed is None:
            raise self._unlisted(name)
        with self._lock:
            if self._closed:
                raise InvalidArgument("the upload has ended", field="chunk")
            spooled = self._files.get(name)
            if spooled is None:
                spooled = self._files[name] = _Spooled(self._folder)
            if spooled.size + len(data) > listed.size:
                raise listed.mismatch
            spooled.file.write(data)
            spooled.hash.update(data)
            spooled.size += len(data)

    def finish(self) -> dict[str, bytes]:
        """The files received, each checked against its listed size and SHA-256, read back
        from their spool files. (A listed file not sent at all is for the statement's own
        check to name.)"""
        with self._lock:
            if self._closed:
                raise InvalidArgument("the upload has ended", field="chunk")
            for name, spooled in self._files.items():
                listed = self._listed[name]
                if spooled.size != listed.size or spooled.hash.hexdigest() != listed.sha256:
                    raise listed.mismatch
            contents = {}
            for name, spooled in self._files.items():
                spooled.file.seek(0)
                contents[name] = spooled.file.read()
            return contents

    def discard(self) -> None:
        """Close and remove every spool file of this upload (idempotent)."""
        with self._lock:
            self._closed = True
            for spooled in self._files.values():
                spooled.file.close()
                spooled.path.unlink(missing_ok=True)
            self._files.clear()
