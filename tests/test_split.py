"""The split issue 13 is about: whoever runs the log shows ARM one history and AZE another.

Two servers share the log key and a common prefix (a copy of one database), then go
their own ways. ARM's witness is fed one history and AZE's the other: each cosigns its
own and refuses the other with a conflict; no checkpoint past the prefix meets the policy
"one witness of each party", so a client that requires it trusts neither; and a monitor
that sees both writes split evidence, which a check written from the C2SP and RFC 6962
texts alone (tests/test_monitor.py) confirms.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from clients import checkpoints
from clients.cli import main
from clients.client import LedgerClient
from clients.monitor import Monitor, Options
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.formats import dsse
from ledger.formats.cosignature import CosignatureSigner
from ledger.log_key import LogKey
from ledger.rules import admit_trust_root
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore
from ledger.trust import TrustState
from ledger.witness import client as witness_client
from ledger.witness.server import Witness, WitnessHTTPServer, serve
from ledger.witness.state import WitnessState
from ledger.witnesses import QuorumError
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed
from tests.test_monitor import _independent_check
from tests.test_witnessed import (
    ARM_WITNESS,
    AZE_WITNESS,
    POLICY,
    _trust_root,
    independent_cosigners,
)


@dataclass
class Side:
    """One of the two histories: its own database copy and server."""

    ledger: Ledger
    store: LedgerStore
    server: LedgerServer
    client: LedgerClient

    def submit(self, parties: Parties, n: int, party: str, offset: int) -> int:
        key = parties.arm_monitor if party == "ARM" else parties.aze_monitor
        for i in range(n):
            r = report(party, lat=40.8811 + (offset + i) * 1e-3, narrative=f"{party} {i}")
            self.client.submit(signed(r, key))
        return self.client.checkpoint().tree_size


@dataclass
class Fork:
    parties: Parties
    trust: TrustState
    a: Side
    b: Side
    arm: WitnessHTTPServer
    aze: WitnessHTTPServer
    witness_keys: dict[str, SigningKey]


def _wait(what: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def fork(parties: Parties, borders: BorderDataset, tmp_path: Path) -> Iterator[Fork]:
    witness_keys = {ARM_WITNESS: SigningKey.generate(), AZE_WITNESS: SigningKey.generate()}
    root = _trust_root(parties, borders, witness_keys, POLICY)
    authorities = [parties.arm_authority, parties.aze_authority]
    envelope = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), authorities)
    log_key = LogKey(ORIGIN, parties.log)

    # The common prefix: the trust root and two reports, in one database, then copied.
    prefix = tmp_path / "a.db"
    store = LedgerStore.open(f"sqlite:///{prefix}")
    initialize(store, envelope, log_key, borders)
    ledger = Ledger(store, log_key, borders)
    for i in range(2):
        ledger.submit(signed(report("ARM", narrative=f"common {i}"), parties.arm_monitor))
    ledger.close()
    store.close()
    source, copy = sqlite3.connect(prefix), sqlite3.connect(tmp_path / "b.db")
    source.backup(copy)
    source.close()
    copy.close()

    witnesses: dict[str, WitnessHTTPServer] = {}
    for name, key in witness_keys.items():
        witness = Witness(
            CosignatureSigner(name, key),
            {ORIGIN: [log_key.verifier]},
            WitnessState(tmp_path / f"{name.split('.')[1]}.db"),
        )
        witnesses[name] = serve(witness, "127.0.0.1", 0)
        witnesses[name].start()

    sides = []
    # History A is shown to ARM's witness, history B to AZE's.
    for db, name in (("a.db", ARM_WITNESS), ("b.db", AZE_WITNESS)):
        store = LedgerStore.open(f"sqlite:///{tmp_path / db}")
        ledger = Ledger(store, log_key, borders)
        server, port = build_server(
            ledger, "127.0.0.1:0", spool_dir=tmp_path / f"{db}-up", witnesses=[witnesses[name].url]
        )
        server.start()
        client = LedgerClient(f"127.0.0.1:{port}")
        client.wait_ready()
        sides.append(Side(ledger, store, server, client))
    try:
        yield Fork(
            parties,
            admit_trust_root(envelope.add_signature(parties.log)),
            sides[0],
            sides[1],
            witnesses[ARM_WITNESS],
            witnesses[AZE_WITNESS],
            witness_keys,
        )
    finally:
        for side in sides:
            side.client.close()
            side.server.stop(grace=None).wait()
            side.ledger.close()
            side.store.close()
        for w in witnesses.values():
            w.stop()


def test_each_party_witness_cosigns_one_history_and_refuses_the_other(
    fork: Fork, borders: BorderDataset, tmp_path: Path
) -> None:
    size_a = fork.a.submit(fork.parties, 3, "ARM", 10)  # 3 + 3 = 6
    size_b = fork.b.submit(fork.parties, 2, "AZE", 20)  # 3 + 2 = 5
    assert (size_a, size_b) == (6, 5)

    def held(w: WitnessHTTPServer) -> int:
        state = w.witness.state.get(ORIGIN)
        return state.size if state else 0

    _wait(lambda: held(fork.arm) == size_a and held(fork.aze) == size_b)
    note_a = fork.a.client.checkpoint().signed_note
    note_b = fork.b.client.checkpoint().signed_note
    cosigners = {n: keys.public_bytes(k) for n, k in fork.witness_keys.items()}
    assert set(independent_cosigners(note_a, cosigners)) == {ARM_WITNESS}
    assert set(independent_cosigners(note_b, cosigners)) == {AZE_WITNESS}

    # History A offered to AZE's witness: a conflict (409: it holds B's 5), then, proven
    # from 5 with A's own tree, refused (422): B's root at 5 is not A's. And the reverse:
    # ARM's witness holds 6 and will not hear of B's 5.
    log_note = note_a.split("\n\n")[0] + "\n\n" + note_a.split("\n\n")[1].split("\n")[0] + "\n"
    first = witness_client.add_checkpoint(fork.aze.url, 0, [], log_note)
    assert (first.kind, first.size) == ("conflict", size_b)
    proof = fork.a.ledger.store.consistency_proof(size_b, size_a)
    second = witness_client.add_checkpoint(fork.aze.url, size_b, proof, log_note)
    assert (second.kind, second.status) == ("refused", 422)
    (refusal, *_) = fork.aze.witness.state.refusals()
    assert log_note.encode() in refusal.body  # kept as evidence of the log's misbehaviour
    # A's own checkpoint of B's size, from that size: the same size with another root is
    # a conflict (tlog-witness: 409, with the size held), and kept as evidence too.
    a_at_b = fork.a.ledger.store.checkpoint_at(size_b)
    assert a_at_b is not None and a_at_b.root != fork.b.ledger.store.root_at(size_b)
    same = witness_client.add_checkpoint(fork.aze.url, size_b, [], a_at_b.note)
    assert (same.kind, same.status, same.size) == ("conflict", 409, size_b)
    (refusal, *_) = fork.aze.witness.state.refusals()
    assert (refusal.status, a_at_b.note.encode() in refusal.body) == (409, True)
    note_b_log = note_b.split("\n\n")[0] + "\n\n" + note_b.split("\n\n")[1].split("\n")[0] + "\n"
    back = witness_client.add_checkpoint(fork.arm.url, 0, [], note_b_log)
    assert (back.kind, back.size) == ("conflict", size_a)
    assert held(fork.arm) == size_a and held(fork.aze) == size_b  # neither moved

    # Neither history meets "one witness of each party": a client that requires it trusts
    # neither, and the CLI says why.
    for side in (fork.a, fork.b):
        with pytest.raises(QuorumError):
            checkpoints.trusted_checkpoint(side.client, fork.trust, require_witnesses=True)
        for argv in (
            ["proof", "--require-witnesses", "--server", side.client.target, "inclusion",
             "--index", "1"],
            ["proof", "inclusion", "--index", "1", "--require-witnesses", "--server",
             side.client.target],
            ["proof", "consistency", "--old", "1", "--require-witnesses", "--server",
             side.client.target],
        ):  # fmt: skip
            assert main(argv) == 1, argv

    # A monitor that follows both writes the split down; the evidence stands on its own.
    state = tmp_path / "monitor"

    def run(side: Side) -> object:
        return Monitor(
            side.client,
            Options(state, borders=(borders,), workers=0),
            out=io.StringIO(),
            err=io.StringIO(),
            progress=Progress(quiet=True),
        ).run_once()

    seen_a = run(fork.a)
    assert getattr(seen_a, "code") == 0  # noqa: B009
    assert "ARM witness.arm.test/w1" in str(getattr(seen_a, "witnesses"))  # noqa: B009
    assert "NOT met" in str(getattr(seen_a, "witnesses"))  # noqa: B009
    seen_b = run(fork.b)
    assert getattr(seen_b, "code") == 3, getattr(seen_b, "error")  # noqa: B009
    evidence_path = str(getattr(seen_b, "evidence"))  # noqa: B009
    evidence = json.loads(Path(evidence_path).read_text())
    _independent_check(evidence, keys.public_bytes(fork.parties.log))
    assert evidence["leaf_conflict"]["index"] == 3  # the first entry after the prefix
    log_vkey = LogKey(ORIGIN, fork.parties.log).verifier.vkey
    assert main(["monitor", "check-split", evidence_path, "--log-key", log_vkey]) == 3


def test_both_witnesses_on_one_history_meet_the_policy(fork: Fork) -> None:
    """The control: the same setup, history A shown to both witnesses, is trusted."""
    size = fork.a.submit(fork.parties, 2, "ARM", 30)
    note = fork.a.client.checkpoint().signed_note.split("\n\n")
    log_note = note[0] + "\n\n" + note[1].split("\n")[0] + "\n"

    def aze_cosigned() -> bool:
        state = fork.aze.witness.state.get(ORIGIN)
        return state is not None and state.size == size

    # AZE's witness holds the common prefix (B fed it): from there it cosigns A too.
    _wait(lambda: fork.aze.witness.state.get(ORIGIN) is not None)
    result = witness_client.add_checkpoint(fork.aze.url, 0, [], log_note)
    assert result.kind == "conflict" and result.size == 3
    proof = fork.a.ledger.store.consistency_proof(3, size)
    result = witness_client.add_checkpoint(fork.aze.url, 3, proof, log_note)
    assert result.accepted and aze_cosigned()
    _wait(lambda: ARM_WITNESS in fork.a.client.checkpoint().signed_note)
    served = fork.a.client.checkpoint().signed_note
    with pytest.raises(QuorumError):  # the log was not given AZE's line: not met
        checkpoints.check(served, fork.trust, require_witnesses=True)
    both = served + "".join(s.line() for s in result.cosignatures)
    trusted = checkpoints.check(both, fork.trust, require_witnesses=True)
    assert trusted.witnessing.met and trusted.checkpoint.size == size
