"""`verify --state FILE`: what an auditor keeps between audits.

FILE holds the newest signed checkpoint verified (the note as the log signed it, so other
tools read it as it is); `FILE.leaves` beside it the leaf hashes of that tree (raw 32-byte
hashes, in index order). With the leaves, a checkpoint OLDER than the one kept (an older
bundle, a lagging replica) is checked too: it is consistent exactly when the root of the
first M leaves kept is its signed root. A FILE without `.leaves` (written before they were
kept) still checks every advance.

The two files cannot be replaced in one step: the leaves are written first, and are used
only if the first `size` of them give the kept checkpoint's root, so a crash between the
two writes leaves a state that is checked as before, never a wrong one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.formats import merkle
from ledger.formats.note import Checkpoint
from ledger.trust import TrustState
from ledger.verifier import VerificationError, open_checkpoint

HASH = 32


class StateError(Exception):
    """The state cannot answer the question asked of it (not evidence against the log)."""


@dataclass(frozen=True)
class Kept:
    note: str
    checkpoint: Checkpoint
    leaves: list[bytes] | None  # the kept tree's leaf hashes; None: not kept (an old FILE)


def leaves_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".leaves")


def load(state_file: Path, trust: TrustState) -> Kept | None:
    """The kept checkpoint (its signature checked with `trust`'s log key), or None."""
    if not state_file.exists():
        return None
    note = state_file.read_text(encoding="utf-8")
    checkpoint = open_checkpoint(note, trust)
    return Kept(note, checkpoint, _read_leaves(leaves_path(state_file), checkpoint))


def _read_leaves(path: Path, cp: Checkpoint) -> list[bytes] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) % HASH or len(data) // HASH < cp.size:
        return None
    leaves = [data[i : i + HASH] for i in range(0, cp.size * HASH, HASH)]
    return leaves if merkle.root_from_leaf_hashes(leaves) == cp.root_hash else None


def save(state_file: Path, note: str, leaves: Sequence[bytes]) -> None:
    """Keep `note` and its tree's leaves; each file is replaced whole (leaves first)."""
    _replace(leaves_path(state_file), b"".join(leaves))
    _replace(state_file, note.encode("utf-8"))


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: never half a file under the final name


def first_difference(a: Sequence[bytes], b: Sequence[bytes]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def reconcile(
    state_file: Path,
    note: str,
    new: Checkpoint,
    leaves: Sequence[bytes],
    trust: TrustState,
    prove: Callable[[int, int], Sequence[bytes]] | None = None,
) -> int | None:
    """Check the checkpoint just verified (`note`, `new`, whose tree's leaves are `leaves`)
    against the one kept in `state_file`, then keep the newer of the two (with its leaves).
    Returns the kept checkpoint's size (None: there was none).

    Newer than the kept one: the kept tree must be a prefix of `leaves` (and, with `prove`,
    the log's consistency proof must verify too). Older: its root must be the root of the
    first `new.size` leaves kept. Raises VerificationError (evidence) when not."""
    kept = load(state_file, trust)
    if kept is None:
        save(state_file, note, leaves)
        return None
    old = kept.checkpoint
    if old.size <= new.size:
        if merkle.root_from_leaf_hashes(leaves[: old.size]) != old.root_hash:
            raise VerificationError(
                f"the checkpoint of size {old.size} verified before is not a prefix of this "
                f"tree of size {new.size}: history was rewritten",
                index=_first(kept.leaves, leaves),
            )
        if prove is not None and old.size < new.size:
            try:
                merkle.verify_consistency(
                    old.size,
                    new.size,
                    old.root_hash,
                    new.root_hash,
                    list(prove(old.size, new.size)),
                )
            except merkle.ProofError as e:
                raise VerificationError(
                    f"checkpoint {new.size} is not consistent with the one verified before "
                    f"({old.size}): the log's consistency proof fails ({e})"
                ) from e
        save(state_file, note, leaves)
        return old.size
    # An older checkpoint than the one kept: a prefix of it, or two histories.
    if kept.leaves is None:
        raise StateError(
            f"the checkpoint of size {new.size} is older than the one of size {old.size} "
            f"verified before, and {state_file} keeps no leaves to check it against (written "
            "by an older version): verify the newest once to keep them"
        )
    if merkle.root_from_leaf_hashes(kept.leaves[: new.size]) != new.root_hash:
        raise VerificationError(
            f"the checkpoint of size {new.size} is not a prefix of the one of size {old.size} "
            "verified before: history was rewritten",
            index=_first(kept.leaves, leaves),
        )
    return old.size  # the newer one stays kept


def _first(kept: Sequence[bytes] | None, leaves: Sequence[bytes]) -> int | None:
    """The first entry whose leaf differs, when the kept leaves tell (VerificationError
    then names it: "entry N: ...")."""
    return first_difference(kept, leaves) if kept is not None else None
