"""`ceasefire monitor`: follow a log over time, verify only what is new, and alert.

Each run: the log's newest checkpoint (signed by the log key, through `accept_checkpoint`),
compared with the last one accepted:
- the same size: the same root, or a split;
- smaller (a lagging replica): the root of that many leaves held, or a split;
- larger: the log's consistency proof from the last accepted, or a split; then the new
  entries only are fetched and replayed (`ledger.verifier.Replay`, the auditor's judgment)
  and the root rebuilt from ALL leaves must be the signed one. Only then is it accepted.

A split writes its evidence to DIR/split-<time>.json (clients/split_evidence.py), which
`ceasefire monitor check-split` re-checks offline.

The state directory (mode 0700; its files are trusted as the monitor's own memory):
- checkpoints.jsonl: every signed checkpoint seen, appended: when, from which server, its
  note, and what it was found to be (first, same, older, advance, split);
- monitor.state: the replay after the last entry verified (trust state, leaf hashes,
  subjects ...) and the last checkpoint accepted; pickled, with the format and a digest of
  the replay's fields, so a state written by another version is refused, never misread.
  Written whole (atomic replace) at the end of a run, when stopped, and every
  `save_every_s` during a long one: a run cut short resumes where it was saved.

Alerts are JSON lines on `out`, each also given to the hook on its stdin: "signed" (a key
of a watched party signed an entry), "trust" (an entry that changes the key state:
ledger.kinds.KEY_EVENTS), "split", and "tampered" (an entry or root that fails the audit).
An entry's alerts are sent once the replay has judged it, before the run's root check; an
entry is alerted again only if a run is killed after it and before the next save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc

from clients import checkpoints, exit_codes, split_evidence
from clients.audit import _locate, fetcher
from clients.checkpoints import TrustedCheckpoint
from clients.client import LedgerClient, describe_error
from clients.progress import Progress
from clients.split_evidence import Consistency, Evidence, LeafAt, LeafConflict, Seen, now_iso
from geo.borders import BorderDataset
from ledger import trust
from ledger.clock import to_iso, to_us
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.formats.note import Checkpoint, NoteVerifier
from ledger.kinds import KEY_EVENTS, KINDS
from ledger.trust import TrustState
from ledger.verifier import Replay, VerificationError, check_root, default_workers
from ledger.witnesses import QuorumError

STATE_FORMAT = "ceasefire-monitor-state/1"
STATE_FILE = "monitor.state"
CHECKPOINTS_FILE = "checkpoints.jsonl"
LOCK_FILE = "lock"
SAVE_EVERY_S = 60.0
HOOK_TIMEOUT_S = 60.0
# Replay fields not kept: the caller's data sets and fetcher (given again on load), and
# the diagnosis of a failed entry (a state is never saved after a failure).
_NOT_KEPT = frozenset({"borders", "load_dataset", "failed"})


def accept_checkpoint(
    note: str, state: TrustState, *, require_witnesses: bool = False
) -> TrustedCheckpoint:
    """Every checkpoint the monitor accepts passes here: signed by the log key for this
    log's origin, its witness cosignatures verified, and with `require_witnesses` the
    trust root's witness policy met (QuorumError)."""
    return checkpoints.check(note, state, require_witnesses=require_witnesses)


class MonitorStateError(Exception):
    """The state directory cannot be used (another version's, another log's, in use)."""


class Split(Exception):
    """Two signed checkpoints that cannot both be true; the evidence is written."""

    def __init__(self, message: str, evidence: Path, index: int | None) -> None:
        super().__init__(message)
        self.evidence = evidence
        self.index = index


class Stopped(Exception):
    """A stop was asked for (SIGINT, SIGTERM): the run saved where it was and ended."""


@dataclass(frozen=True)
class Options:
    state_dir: Path
    pinned_trust_root: str | None = None
    watch: frozenset[str] = frozenset()
    hook: str | None = None
    borders: tuple[BorderDataset, ...] = ()
    workers: int | None = None  # None: default_workers for the entries to check
    save_every_s: float = SAVE_EVERY_S
    # Accept only checkpoints cosigned as the trust root's witness policy requires.
    require_witnesses: bool = False


@dataclass
class RunResult:
    code: int
    server: str
    tree_size: int | None = None  # the checkpoint accepted (or seen, if not accepted)
    verdict: str | None = None  # first, same, older, advance, split
    fetched: int = 0  # entries fetched from the log in this run
    alerts: int = 0
    error: str | None = None
    index: int | None = None
    evidence: str | None = None
    stopped: bool = False
    witnesses: str | None = None  # whose cosignatures the checkpoint carried, and the policy

    def doc(self) -> dict[str, Any]:
        doc = {"ok": self.code == exit_codes.OK, "exit": self.code}
        doc |= {k: v for k, v in dataclasses.asdict(self).items() if k != "code"}
        return doc


@dataclass
class _State:
    replay: Replay
    accepted: Seen | None  # the last checkpoint accepted; the replay has all its leaves


def _schema() -> str:
    """A digest of the pickled classes' fields: a state whose classes changed is refused."""
    classes = (Replay, TrustState, trust.KeyInfo, trust.PartyInfo, trust.DatasetInfo)
    names = [f"{c.__name__}:{','.join(f.name for f in dataclasses.fields(c))}" for c in classes]
    return hashlib.sha256(";".join(names).encode()).hexdigest()[:16]


class Monitor:
    def __init__(
        self,
        client: LedgerClient,
        options: Options,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.options = options
        self.dir = options.state_dir
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.progress = progress or Progress(self.err)
        self.stop = stop or threading.Event()
        self.clock = clock

    # -- one run -------------------------------------------------------------------------

    def run_once(self) -> RunResult:
        self.result = RunResult(exit_codes.OK, self.client.target)
        self.hook_failed = False
        try:
            with self._locked():
                self._run()
        except Stopped:
            self.result.stopped = True
        except Split as e:
            self._failed(exit_codes.EVIDENCE, str(e), e.index)
            self.result.evidence = str(e.evidence)
        except VerificationError as e:
            self._failed(exit_codes.EVIDENCE, str(e), e.index)
            self._emit({"alert": "tampered", "server": self.client.target, "index": e.index,
                        "error": str(e)})  # fmt: skip
        except QuorumError as e:
            self._failed(exit_codes.FAILED, f"not witnessed: {e}", None)
        except grpc.RpcError as e:
            self._failed(exit_codes.for_rpc_error(e), describe_error(e), None)
        except (MonitorStateError, OSError) as e:
            self._failed(exit_codes.FAILED, str(e), None)
        finally:
            self.progress.close()
        if self.hook_failed:
            self.result.code = exit_codes.worst(self.result.code, exit_codes.FAILED)
        return self.result

    def _failed(self, code: int, message: str, index: int | None) -> None:
        self.result.code, self.result.error, self.result.index = code, message, index

    def _run(self) -> None:
        state = self._load()
        served = checkpoints.served_checkpoint(
            self.client, require_witnesses=self.options.require_witnesses
        )
        if state is None:
            replay = Replay(
                self.options.pinned_trust_root,
                {b.sha256: b for b in self.options.borders},
                load_dataset=fetcher(self.client),
            )
            data = self.client.entry(0).entry
            self.result.fetched += 1
            replay.add(0, data)  # the trust root: it names the log key
            self._alerts_for(replay, 0, data)
            state = _State(replay, None)
        replay = state.replay
        assert replay.trust is not None
        trusted = accept_checkpoint(
            served.signed_note, replay.trust, require_witnesses=self.options.require_witnesses
        )
        self.result.witnesses = trusted.witnessing.describe()
        seen = Seen(served.signed_note, trusted.checkpoint, self.client.target, now_iso())
        cp = seen.checkpoint
        self.result.tree_size = cp.size
        verdict = self._compare(state, seen)
        self.result.verdict = verdict
        self._record(seen, verdict)
        if verdict in ("same", "older"):
            if state.accepted is not None:
                self.result.tree_size = state.accepted.checkpoint.size
            return
        try:
            if replay.size < cp.size:
                self._replay_new(state, cp)
            check_root(replay, cp)
        except VerificationError:
            _locate(self.client, replay, cp)  # an entry the log did not commit to, by index
            raise
        state.accepted = seen
        self._save(state)

    def _compare(self, state: _State, seen: Seen) -> str:
        """What `seen` is beside the last accepted: first, same, older, advance; or a Split."""
        last = state.accepted
        if last is None:
            return "first"
        a, b = last.checkpoint, seen.checkpoint
        leaves = state.replay.leaf_hashes
        if b.size == a.size:
            if b.root_hash == a.root_hash:
                return "same"
            proof = Consistency(a.size, b.size, [], "log", None, "two roots for one size")
            self._split(state, "same_size", last, seen, proof,
                        f"the log signed two roots for size {a.size}")  # fmt: skip
        if b.size < a.size:
            if merkle.root_from_leaf_hashes(leaves[: b.size]) == b.root_hash:
                return "older"
            # The proof from the leaves held (those of the newer tree): it leads to the
            # newer root, from a prefix root that is not the one the older note signs.
            tree = merkle.LeafTree(leaves[: a.size])
            hashes = merkle.consistency_proof(tree.get, b.size, a.size)
            proof = Consistency(
                b.size, a.size, hashes, "monitor", tree.root(b.size),
                f"the root of the first {b.size} leaves of the tree of size {a.size} is "
                "not the older note's root",
            )  # fmt: skip
            self._split(state, "older_not_prefix", last, seen, proof,
                        f"the checkpoint of size {b.size} is not a prefix of the one of size "
                        f"{a.size} accepted before")  # fmt: skip
        hashes = list(self.client.consistency_proof(a.size, b.size).hashes)
        try:
            merkle.verify_consistency(a.size, b.size, a.root_hash, b.root_hash, hashes)
        except merkle.ProofError as e:
            roots = merkle.consistency_roots(a.size, b.size, hashes, a.root_hash)
            # Where the proof itself names the older root (size not a power of two) and
            # leads to the newer root, it shows the log's own prefix root.
            power_of_two = a.size & (a.size - 1) == 0
            prefix = roots[0] if roots and roots[1] == b.root_hash and not power_of_two else None
            proof = Consistency(a.size, b.size, hashes, "log", prefix, str(e))
            self._split(state, "inconsistent_advance", last, seen, proof,
                        f"the log's consistency proof from size {a.size} to {b.size} fails: "
                        f"{e}")  # fmt: skip
        return "advance"

    def _split(
        self, state: _State, kind: str, first: Seen, second: Seen, proof: Consistency, why: str
    ) -> NoReturn:
        self._record(second, "split")
        self.result.verdict = "split"
        trust_state = state.replay.trust
        assert trust_state is not None
        conflict = self._leaf_conflict(state.replay.leaf_hashes, first, second)
        evidence = Evidence(
            kind, why, trust_state.origin,
            NoteVerifier(trust_state.origin, trust_state.log_public_key).vkey,
            first, second, proof, conflict,
        )  # fmt: skip
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = split_evidence.write(self.dir, evidence)
        index = conflict.index if conflict is not None else None
        self._emit(
            {
                "alert": "split",
                "kind": kind,
                "why": why,
                "evidence": str(path),
                "index": index,
                "first": _brief(first),
                "second": _brief(second),
            }
        )
        raise Split(f"SPLIT: {why}; evidence in {path}", path, index)

    def _leaf_conflict(self, held: list[bytes], first: Seen, second: Seen) -> LeafConflict | None:
        """The first entry whose leaf in the server's tree (`second`) is not the one held
        (verified against `first`), with an inclusion proof on each side; found by
        bisection with the server's consistency proofs, O(log n) of them. None if the
        server does not say (its proofs fail or it does not answer)."""
        ours = held[: first.checkpoint.size]
        size, root = second.checkpoint.size, second.checkpoint.root_hash
        tree = merkle.LeafTree(ours)

        def same_prefix(m: int) -> bool:
            if m == 0:
                return True
            if m == size:
                return tree.root(m) == root
            hashes = list(self.client.consistency_proof(m, size).hashes)
            try:
                merkle.verify_consistency(m, size, tree.root(m), root, hashes)
            except merkle.ProofError:
                return False
            return True

        try:
            limit = min(len(ours), size)
            if same_prefix(limit):
                return None
            good, bad = 0, limit
            while bad - good > 1:
                mid = (good + bad) // 2
                good, bad = (mid, bad) if same_prefix(mid) else (good, mid)
            got = self.client.inclusion_proof(good, size)
            theirs, their_proof = bytes(got.leaf_hash), list(got.hashes)
            merkle.verify_inclusion(theirs, good, size, their_proof, root)
        except (grpc.RpcError, merkle.ProofError):
            return None
        if theirs == ours[good]:
            return None
        our_proof = merkle.inclusion_proof(tree.get, good, len(ours))
        return LeafConflict(
            good, LeafAt(ours[good], len(ours), our_proof), LeafAt(theirs, size, their_proof)
        )

    def _replay_new(self, state: _State, cp: Checkpoint) -> None:
        """Fetch and replay entries [replay.size, cp.size): only what is new."""
        replay = state.replay
        start = replay.size
        pending: dict[int, bytes] = {}  # fetched (perhaps ahead, for workers), not yet judged

        def fetched() -> Iterator[tuple[int, bytes]]:
            for e in self.client.entries(start, cp.size):
                self.result.fetched += 1
                pending[e.index] = e.entry
                yield e.index, e.entry

        saved = self.clock()

        def judged(size: int) -> None:
            nonlocal saved
            self._alerts_for(replay, size - 1, pending.pop(size - 1))
            self.progress(size - start)
            # Between two entries the replay is whole: the one place to save it.
            if self.stop.is_set():
                self._save(state)
                raise Stopped
            if self.clock() - saved >= self.options.save_every_s:
                self._save(state)
                saved = self.clock()

        count = cp.size - start
        self.progress.start(count, "checked new")
        workers = self.options.workers
        replay.add_all(
            fetched(),
            workers=default_workers(count) if workers is None else workers,
            progress=judged,
        )
        self.progress.finish()

    # -- alerts --------------------------------------------------------------------------

    def _alerts_for(self, replay: Replay, index: int, data: bytes) -> None:
        state = replay.trust
        assert state is not None
        entry = parse_entry(data)
        envelope = dsse.Envelope.from_json(entry.envelope)
        kind = KINDS.get(envelope.payload_type)
        signers = list(dict.fromkeys(s.keyid for s in envelope.signatures))
        base = {
            "server": self.client.target,
            "origin": state.origin,
            "index": index,
            "payload_type": envelope.payload_type,
            "statement": kind.name if kind is not None else "TrustRoot",
            "party": entry.validation.party,
            "integrated_time": to_iso(to_us(entry.integrated_time)),
            "signers": signers,
        }
        if envelope.payload_type in KEY_EVENTS:
            self._emit({"alert": "trust", **base, "changes": _changes(state, index)})
        for key_id in signers:
            key = state.keys.get(key_id)
            if key is not None and key.party in self.options.watch:
                self._emit(
                    {"alert": "signed", **base, "party": key.party, "key_id": key_id,
                     "role": key.role_name}
                )  # fmt: skip

    def _emit(self, alert: dict[str, Any]) -> None:
        line = json.dumps(alert, ensure_ascii=False)
        print(line, file=self.out, flush=True)
        self.result.alerts += 1
        if self.options.hook is None:
            return
        try:
            done = subprocess.run(
                self.options.hook, shell=True, input=(line + "\n").encode(),
                capture_output=True, timeout=HOOK_TIMEOUT_S, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            self._hook_failed(f"the hook did not run to its end ({e})")
            return
        # The hook's own output goes to stderr: stdout carries only alerts.
        self.err.write(done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace"))
        if done.returncode != 0:
            self._hook_failed(f"the hook exited {done.returncode} on a {alert['alert']} alert")

    def _hook_failed(self, message: str) -> None:
        self.hook_failed = True
        print(f"monitor: warning: {message}", file=self.err, flush=True)

    # -- the state directory -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.dir / LOCK_FILE).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MonitorStateError(f"another monitor is running on {self.dir}") from None
            yield

    def _record(self, seen: Seen, verdict: str) -> None:
        line = json.dumps({**seen.doc(), "verdict": verdict}, ensure_ascii=False)
        with (self.dir / CHECKPOINTS_FILE).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _save(self, state: _State) -> None:
        replay = state.replay
        kept = {
            f.name: getattr(replay, f.name)
            for f in dataclasses.fields(Replay)
            if f.name not in _NOT_KEPT
        }
        accepted = state.accepted
        doc = {
            "format": STATE_FORMAT,
            "schema": _schema(),
            "replay": kept,
            "accepted": (
                None
                if accepted is None
                else {"note": accepted.note, "server": accepted.server, "seen_at": accepted.seen_at}
            ),
        }
        path = self.dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _load(self) -> _State | None:
        path = self.dir / STATE_FILE
        if not path.exists():
            return None
        doc = _read_state(path, f"move {self.dir} aside to start again from entry 0")
        replay = Replay(
            **doc["replay"],
            borders={b.sha256: b for b in self.options.borders},
            load_dataset=fetcher(self.client),
        )
        pinned = self.options.pinned_trust_root
        if pinned and replay.trust_root_digest != pinned:
            raise MonitorStateError(
                f"{self.dir} follows the log with trust root {replay.trust_root_digest}, "
                f"not the pinned {pinned}"
            )
        accepted = None
        if doc["accepted"] is not None:
            assert replay.trust is not None
            a = doc["accepted"]
            cp = accept_checkpoint(a["note"], replay.trust).checkpoint
            accepted = Seen(a["note"], cp, a["server"], a["seen_at"])
        return _State(replay, accepted)


def trust_state(state_dir: Path, *, trust_root: str | None = None) -> TrustState:
    """The key state a `ceasefire monitor --state-dir DIR` replayed, as of its last run
    (after the last entry it verified): the witness keys IN FORCE, a witness revoked since
    entry 0 no more, one added since counted. Give it as `trust` to `checkpoints.check`,
    `LedgerClient.prove_inclusion` or `verify_receipt` to judge cosignatures as the full
    audit does. With `trust_root` (the SHA-256 hex of the log's entry 0 envelope), a state
    of another log is refused. MonitorStateError when DIR holds no state of this version,
    or another log's. Read only: no lock is taken (the monitor replaces the file whole)."""
    path = state_dir / STATE_FILE
    if not path.is_file():
        raise MonitorStateError(
            f"{state_dir} holds no monitor state ({STATE_FILE}): run "
            f"`ceasefire monitor --state-dir {state_dir}` first"
        )
    doc = _read_state(path, "run the monitor of this version on a new DIR")
    kept = doc["replay"]
    state, digest = kept.get("trust"), kept.get("trust_root_digest", "")
    if not isinstance(state, TrustState):
        raise MonitorStateError(f"{path} holds no key state (the monitor verified no entry)")
    if trust_root is not None and digest != trust_root.lower():
        raise MonitorStateError(
            f"{state_dir} is the monitor state of another log (trust root {digest}, not "
            f"{trust_root.lower()})"
        )
    return state


def _read_state(path: Path, remedy: str) -> dict[str, Any]:
    """The monitor state document at `path`, of this version's format and schema."""
    try:
        with path.open("rb") as f:
            doc: dict[str, Any] = pickle.load(f)
    except Exception as e:  # any unpickling failure: classes moved, a torn file ...
        raise MonitorStateError(f"{path} cannot be read ({e}); {remedy}") from e
    found = (doc.get("format"), doc.get("schema")) if isinstance(doc, dict) else None
    if found != (STATE_FORMAT, _schema()):
        raise MonitorStateError(
            f"{path} was written by another version of ceasefire "
            f"({found}, this one reads {(STATE_FORMAT, _schema())}); {remedy}"
        )
    return doc


def _changes(state: TrustState, index: int) -> dict[str, Any]:
    """What the entry at `index` changed in the key state (read back from the state)."""
    changes: dict[str, Any] = {
        "keys_added": [
            {"key_id": k.key_id, "party": k.party, "role": k.role_name}
            for k in state.keys.values()
            if k.added_at == index
        ],
        "keys_revoked": [
            {"key_id": k.key_id, "party": k.party, "role": k.role_name}
            for k in state.keys.values()
            if k.revoked_at == index
        ],
        "parties_admitted": [p.code for p in state.parties.values() if p.admitted_at == index],
        "datasets_registered": [
            d.sha256 for d in state.datasets.values() if d.registered_at == index
        ],
    }
    changes["border_dataset_in_force"] = state.border_dataset_sha256
    return {k: v for k, v in changes.items() if v}


def _brief(seen: Seen) -> dict[str, Any]:
    return {
        "server": seen.server,
        "size": seen.checkpoint.size,
        "root_hash": seen.checkpoint.root_hash.hex(),
    }
