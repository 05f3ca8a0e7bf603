"""`ceasefire verify`: audit a ledger through its public API, trusting only the trust root.

1. Fetch the newest checkpoint, then stream every entry it covers.
2. Entry 0 is the trust root (pinned by digest if the auditor gave one); the checkpoint
   must carry the log key's signature.
3. Replay: the server's own judgment at every index (hash chain, signatures,
   authorization, field rules, the entries it names), the whole entry compared with it,
   geo facts recomputed when the border data set is at hand. What needs nothing from the
   entries before it (signatures, geo facts) runs ahead in worker processes.
4. The root rebuilt from all leaves must be the signed one: then every entry is the one
   the log committed to. If it is not (or the replay fails first), the first entry whose
   bytes the log did not commit to is found by bisection, with O(log n) consistency
   proofs of prefixes of the leaves received and one inclusion proof, and named by its
   index: an entry altered after it was logged fails by its index, as if every entry's
   inclusion proof had been checked.
5. What the server shows from its derived tables (timeline, statuses, amendments,
   retractions, duplicates, investigations) must be what the entries give. The statuses
   as of the audited size are read while the replay runs (they cannot change).
6. With --state, the checkpoint verified last time must be consistent with this one: a
   prefix of it (and the log's consistency proof must say so), or, when this server shows
   an older one (a lagging replica), its root the root of that many leaves kept from the
   newer (clients/verified_state.py).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import grpc
from ceasefire.v1 import ledger_service_pb2 as api

from clients import checkpoints, verified_state
from clients.client import LedgerClient
from clients.progress import Progress
from geo import datasets
from geo.borders import BorderDataset, DatasetError
from ledger import incidents, investigations
from ledger.clock import to_us
from ledger.formats import merkle
from ledger.formats.note import Checkpoint
from ledger.incidents import IncidentInfo, Link
from ledger.investigations import InvestigationInfo
from ledger.trust import DatasetInfo
from ledger.verifier import (
    Replay,
    VerificationError,
    check_root,
    default_workers,
    open_checkpoint,
)
from ledger.witnesses import Witnessing


@dataclass(frozen=True)
class AuditResult:
    tree_size: int
    root_hash: bytes
    trust_root_digest: str
    origin: str
    geo_rechecked: int
    consistent_from: int | None
    # Incidents, investigations and findings by derived status, from the entries alone.
    summary: dict[str, dict[str, int]] = field(default_factory=dict)
    # Whose cosignatures the checkpoint carries, judged by the key state at its end.
    witnessing: Witnessing | None = None


def audit(
    client: LedgerClient,
    *,
    pinned_trust_root: str | None = None,
    borders: list[BorderDataset] | None = None,
    state_file: Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    require_witnesses: bool = False,
) -> AuditResult:
    """`workers`: processes checking signatures and geo facts ahead of the replay (None:
    `default_workers` for the ledger's size). With `require_witnesses`, the newest
    checkpoint the witness policy accepts is audited, and its cosignatures must meet the
    policy of the key state at its end (QuorumError)."""
    progress = progress or Progress(quiet=True)
    served = checkpoints.served_checkpoint(client, require_witnesses=require_witnesses)
    stream = ((e.index, e.entry) for e in client.entries(0, served.tree_size))
    first = next(stream, None)
    if first is None:
        raise VerificationError("the ledger is empty: no trust root")
    state = Replay(
        pinned_trust_root, {b.sha256: b for b in borders or []}, load_dataset=fetcher(client)
    )
    state.add(*first)
    # Entry 0 names the log key; only now can the checkpoint's signature be checked.
    assert state.trust is not None
    checkpoint = open_checkpoint(served.signed_note, state.trust)
    if checkpoint.size != served.tree_size:
        raise VerificationError("the checkpoint served does not match its stated size")
    # The server's statuses as of the audited size do not change: read them while the
    # replay runs, so the server's work overlaps it instead of following it.
    statuses = ReadAhead(client.timeline_all(_status_query(checkpoint.size)), READ_AHEAD_ROWS)
    progress.start(checkpoint.size)
    try:
        state.add_all(
            stream,
            workers=default_workers(checkpoint.size) if workers is None else workers,
            progress=progress,
        )
        check_root(state, checkpoint)
    except VerificationError:
        _locate(client, state, checkpoint)  # an entry the log did not commit to, if any
        raise
    progress.finish()
    progress.note(
        f"the root rebuilt from all {checkpoint.size} leaves matches the signed checkpoint"
    )
    _check_statuses(client, state, statuses)
    progress.note("the statuses the server shows are those the entries give")
    witnessed = checkpoints.check(
        served.signed_note, state.trust, require_witnesses=require_witnesses
    ).witnessing
    consistent_from = None
    if state_file is not None:
        consistent_from = verified_state.reconcile(
            state_file,
            served.signed_note,
            checkpoint,
            state.leaf_hashes[: checkpoint.size],
            state.trust,
            prove=lambda old, new: client.consistency_proof(old, new).hashes,
        )
    return AuditResult(
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        trust_root_digest=state.trust_root_digest,
        origin=state.trust.origin,
        geo_rechecked=state.geo_rechecked,
        consistent_from=consistent_from,
        summary=state.summary(),
        witnessing=witnessed,
    )


MAX_INVESTIGATIONS_CHECKED = 1000


TIMELINE_CAP = 10_000  # the most incidents one Timeline call returns
# Incidents per Timeline page the audit reads (the server's cap): every page is read, all
# judged on the audited size, so every incident's status is compared however many there are.
TIMELINE_PAGE = TIMELINE_CAP


T = TypeVar("T")

# Status rows read ahead of the replay (~100 bytes each); the rest are read as compared.
READ_AHEAD_ROWS = 200_000


class ReadAhead(Generic[T]):
    """The first `limit` items of `items`, read in a thread of their own (a daemon: an
    audit that fails does not wait for it), then the rest as they are iterated. An error
    reading them is raised where they are iterated."""

    def __init__(self, items: Iterator[T], limit: int) -> None:
        self._items = items
        self._first: list[T] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(limit,), daemon=True)
        self._thread.start()

    def _read(self, limit: int) -> None:
        try:
            self._first = list(itertools.islice(self._items, limit))
        except BaseException as e:  # raised again where iterated
            self._error = e

    def __iter__(self) -> Iterator[T]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._items


def _status_query(size: int) -> api.TimelineRequest:
    """Every incident's status, as of the log's first `size` entries: the status view, what
    the links give, without the entries the replay reads anyway."""
    return api.TimelineRequest(as_of_index=size, limit=TIMELINE_PAGE, view=api.TIMELINE_VIEW_STATUS)


def _check_statuses(
    client: LedgerClient, state: Replay, rows: Iterable[api.TimelineResponse]
) -> None:
    """What the server shows must be what the entries give: its timeline as of the audited
    size (every incident once, its status, its newest amendment, its retraction and the
    reports flagged as its likely duplicates) and its investigations' states."""
    replayed = {i for i, s in state.subjects.items() if isinstance(s, IncidentInfo)}
    shown: set[int] = set()
    # A server before paging sends no page tokens: then only its first page can be checked.
    paged = True
    for row in rows:  # _status_query(state.size)
        paged = paged and bool(row.next_page_token)
        if row.index not in replayed:
            raise VerificationError(
                "the server's timeline shows it as an incident report; its entry is not one",
                index=row.index,
            )
        shown.add(row.index)
        links = state.links.get(row.index, [])
        expected = state.status(row.index)
        if row.status != expected:
            raise VerificationError(
                f"the server shows it as {incidents.status_name(row.status)}; its linked "
                f"entries make it {incidents.status_name(expected)}",
                index=row.index,
            )
        facts = {
            "amended at": (row.current.amended_at_index, _last(links, incidents.AMENDMENT)),
            "retracted at": (row.current.retracted_at_index, _last(links, incidents.RETRACTION)),
            "likely duplicated by": (
                list(row.current.likely_duplicated_by),
                [x.index for x in links if x.relation == incidents.LIKELY_DUPLICATE],
            ),
        }
        for what, (got, want) in facts.items():
            if got != want:
                raise VerificationError(
                    f"the server shows it {what} {got or 'none'}; its entries give "
                    f"{want or 'none'}",
                    index=row.index,
                )
    if (paged or len(replayed) <= TIMELINE_CAP) and shown != replayed:
        missing = min(replayed - shown)
        raise VerificationError("the server's timeline leaves out this incident", index=missing)
    found = [i for i, s in sorted(state.subjects.items()) if isinstance(s, InvestigationInfo)]
    for index in found[-MAX_INVESTIGATIONS_CHECKED:]:
        got = client.investigation(index)
        newer = any(e.index >= state.size for e in got.entries)
        expected_status = state.investigation_status(index, to_us(got.as_of))
        if not newer and got.status != expected_status:
            raise VerificationError(
                f"the server shows investigation {index} as "
                f"{investigations.status_name(got.status)}; its entries make it "
                f"{investigations.status_name(expected_status)}",
                index=index,
            )


def _last(links: list[Link], relation: str) -> int:
    return max((x.index for x in links if x.relation == relation), default=0)


def fetcher(client: LedgerClient) -> Callable[[DatasetInfo], BorderDataset | None]:
    """Loads a registered data set from the log's blob store, each file checked by digest."""

    def load(info: DatasetInfo) -> BorderDataset:
        contents = {name: client.blob(digest) for name, digest in info.files}
        return load_dataset(info, contents)

    return load


def load_dataset(info: DatasetInfo, contents: dict[str, bytes]) -> BorderDataset:
    """A registered data set from its files, each checked against the registration's
    digest, and checked again as read back from the user's own cache folder (mode 0700)."""
    try:
        return datasets.load_files(contents, datasets.user_cache_dir("datasets"), dict(info.files))
    except DatasetError as e:
        raise VerificationError(f"border data set {info.sha256}: {e}") from e


def _locate(client: LedgerClient, state: Replay, cp: Checkpoint) -> None:
    """Raise "not included" for the first entry received (those taken in, and the one that
    failed) whose bytes are not the ones the log committed to in `cp`; return if there is
    none, or if the log's proofs do not say which.

    The first m leaves received are cp's first m exactly when a consistency proof from
    size m to cp verifies against the root of those m leaves (a prefix tree is fixed by
    its root). That holds up to the first altered entry and fails from there on, so
    bisection finds it in O(log n) proofs; its inclusion proof then names it."""
    leaves = list(state.leaf_hashes)
    if state.failed is not None:
        leaves.append(merkle.leaf_hash(state.failed[1]))
    leaves = leaves[: cp.size]
    tree = merkle.LeafTree(leaves)

    def committed(m: int) -> bool:
        if m == 0:
            return True
        if m == cp.size:
            return tree.root(m) == cp.root_hash
        proof = client.consistency_proof(m, cp.size)
        try:
            merkle.verify_consistency(m, cp.size, tree.root(m), cp.root_hash, list(proof.hashes))
        except merkle.ProofError:
            return False
        return True

    try:
        if committed(len(leaves)):
            return
        good, bad = 0, len(leaves)  # committed(good), not committed(bad)
        while bad - good > 1:
            mid = (good + bad) // 2
            if committed(mid):
                good = mid
            else:
                bad = mid
        _check_inclusion(client, good, leaves[good], cp)
    except grpc.RpcError:
        return  # the log did not answer: the replay's own error stands


def _check_inclusion(client: LedgerClient, index: int, leaf: bytes, cp: Checkpoint) -> None:
    proof = client.inclusion_proof(index, cp.size)
    try:
        merkle.verify_inclusion(leaf, index, cp.size, list(proof.hashes), cp.root_hash)
    except merkle.ProofError as e:
        raise VerificationError(
            f"not included in the signed checkpoint of size {cp.size}: its bytes are not the "
            f"ones the log committed to ({e})",
            index=index,
        ) from e
