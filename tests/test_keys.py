"""Trust root, key lifecycle, thresholds, party admission and freshness: a positive and a
negative test for every rule, through a real gRPC server on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey

from clients.cli import main
from clients.client import LedgerClient, batches, field_violations
from clients.reports import sign_report
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.errors import PermissionDenied, Unauthenticated
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from ledger.verifier import replay
from tests.conftest import ORIGIN
from tests.reports import report

HOUR_S = 3600


def _pk(k: SigningKey, role: pb.Role.ValueType) -> pb.PartyKey:
    return pb.PartyKey(public_key=keys.public_bytes(k), role=role)


def _kid(k: SigningKey) -> str:
    return dsse.key_id(keys.public_bytes(k))


@dataclass
class Keys:
    log: SigningKey = field(default_factory=SigningKey.generate)
    arm_auth: list[SigningKey] = field(
        default_factory=lambda: [SigningKey.generate() for _ in range(3)]
    )
    arm_monitor: SigningKey = field(default_factory=SigningKey.generate)
    aze_auth: SigningKey = field(default_factory=SigningKey.generate)
    aze_monitor: SigningKey = field(default_factory=SigningKey.generate)
    obs_auth: SigningKey = field(default_factory=SigningKey.generate)
    obs_observer: SigningKey = field(default_factory=SigningKey.generate)

    def root(self, borders: BorderDataset, **extra: object) -> pb.TrustRoot:
        return pb.TrustRoot(
            origin=ORIGIN,
            log_public_key=keys.public_bytes(self.log),
            border_dataset_sha256=borders.sha256,
            border_dataset_files=dataset_files(borders),
            parties=[
                pb.Party(
                    code="ARM",
                    name="Armenia",
                    authority_threshold=2,
                    keys=[_pk(k, pb.ROLE_AUTHORITY) for k in self.arm_auth]
                    + [_pk(self.arm_monitor, pb.ROLE_MONITOR)],
                ),
                pb.Party(
                    code="AZE",
                    name="Azerbaijan",
                    authority_threshold=1,
                    keys=[
                        _pk(self.aze_auth, pb.ROLE_AUTHORITY),
                        _pk(self.aze_monitor, pb.ROLE_MONITOR),
                    ],
                ),
            ],
            **extra,  # type: ignore[arg-type]
        )

    def founding(self, borders: BorderDataset, **extra: object) -> dsse.Envelope:
        payload = self.root(borders, **extra).SerializeToString()
        return dsse.sign(statements.TRUST_ROOT, payload, [*self.arm_auth[:2], self.aze_auth])


@dataclass
class Env:
    keys: Keys
    store: LedgerStore
    ledger: Ledger
    client: LedgerClient

    def submit(self, kind: str, statement: Message, *signers: SigningKey) -> int:
        payload = statement.SerializeToString()
        return self.client.submit(dsse.sign(kind, payload, list(signers)).to_json()).receipt.index

    def refused(
        self, kind: str, statement: Message, *signers: SigningKey
    ) -> tuple[grpc.StatusCode, str]:
        size = self.client.checkpoint().tree_size
        with pytest.raises(grpc.RpcError) as info:
            self.submit(kind, statement, *signers)
        assert self.client.checkpoint().tree_size == size, "a refusal changed the ledger"
        e = info.value
        assert isinstance(e, grpc.Call)
        return e.code(), f"{e.details()} {field_violations(e)}"

    def report(self, key: SigningKey, party: str = "ARM", **kw: object) -> bytes:
        lat, lon = (40.8811, 45.3875) if party in ("ARM", "OBS") else (41.0933, 45.3661)
        return sign_report(report(party, lat=lat, lon=lon, **kw), [key])  # type: ignore[arg-type]

    def audit(self) -> None:
        entries = [(e.index, e.entry) for e in self.client.entries(0, 0)]
        replay(entries)


@pytest.fixture
def env(db_url: str, borders: BorderDataset) -> Iterator[Env]:
    k = Keys()
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, k.log)
    initialize(store, k.founding(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0")
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    try:
        yield Env(k, store, ledger, client)
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def change(party: str = "ARM", **kw: object) -> pb.KeyChange:
    return pb.KeyChange(party=party, created_time=to_timestamp(now_us()), **kw)  # type: ignore[arg-type]


# -- founding ------------------------------------------------------------------------------


def test_trust_root_needs_every_founding_partys_threshold(
    tmp_path: Path, borders: BorderDataset
) -> None:
    k = Keys()
    store = LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    log_key = LogKey(ORIGIN, k.log)
    payload = k.root(borders).SerializeToString()
    arm_alone = dsse.sign(statements.TRUST_ROOT, payload, k.arm_auth[:2])
    with pytest.raises(PermissionDenied, match="authority threshold of AZE"):
        initialize(store, arm_alone, log_key, borders)
    below_threshold = dsse.sign(statements.TRUST_ROOT, payload, [k.arm_auth[0], k.aze_auth])
    with pytest.raises(PermissionDenied, match="authority threshold of ARM"):
        initialize(store, below_threshold, log_key, borders)
    forged = dsse.sign(statements.TRUST_ROOT, payload, [*k.arm_auth[:2], SigningKey.generate()])
    with pytest.raises(PermissionDenied, match="not a founding key"):
        initialize(store, forged, log_key, borders)
    assert store.tree_size() == 0
    initialize(store, k.founding(borders), log_key, borders)
    assert store.tree_size() == 1
    store.close()


def test_trust_root_signed_by_another_log_is_refused(
    tmp_path: Path, borders: BorderDataset
) -> None:
    k = Keys()
    store = LedgerStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    envelope = k.founding(borders).add_signature(SigningKey.generate())
    with pytest.raises(PermissionDenied):
        initialize(store, envelope, LogKey(ORIGIN, k.log), borders)
    store.close()


# -- revocation ------------------------------------------------------------------------------


def test_revoked_key_accepted_before_and_refused_after_its_index(env: Env) -> None:
    k = env.keys
    before = env.client.submit(env.report(k.arm_monitor)).receipt.index
    at = env.submit(
        statements.KEY_CHANGE,
        change(revoke_key_ids=[_kid(k.arm_monitor)], reason="handset lost"),
        *k.arm_auth[:2],
    )
    assert (before, at) == (1, 2)
    with pytest.raises(grpc.RpcError) as info:
        env.client.submit(env.report(k.arm_monitor, narrative="later"))
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked at index 2" in (info.value.details() or "")
    env.audit()  # entry 1, signed before the revocation, stays valid


def test_revocation_survives_a_restart(env: Env, borders: BorderDataset) -> None:
    k = env.keys
    env.submit(statements.KEY_CHANGE, change(revoke_key_ids=[_kid(k.arm_monitor)]), *k.arm_auth[1:])
    restarted = Ledger(env.store, env.ledger.log_key, borders)
    try:
        with pytest.raises(PermissionDenied, match="revoked at index 1"):
            restarted.submit(env.report(k.arm_monitor))
    finally:
        restarted.close()


def test_a_second_writer_catches_up_under_the_lock(env: Env, borders: BorderDataset) -> None:
    """Two service replicas on one database: B's key state is stale until B takes the lock."""
    k = env.keys
    replica = Ledger(env.store, env.ledger.log_key, borders)
    try:
        env.submit(
            statements.KEY_CHANGE, change(revoke_key_ids=[_kid(k.arm_monitor)]), *k.arm_auth[:2]
        )
        # B's pre-check reads A's key events too; B's sequencer would refuse at the index.
        with pytest.raises(PermissionDenied, match="revoked at index 1"):
            replica.submit(env.report(k.arm_monitor))
        assert replica.submit(env.report(k.aze_monitor, "AZE")).receipt.index == 2
    finally:
        replica.close()
    env.audit()


# -- thresholds --------------------------------------------------------------------------------


def test_key_change_needs_the_partys_authority_threshold(env: Env) -> None:
    k = env.keys
    new = SigningKey.generate()
    add = change(add=[_pk(new, pb.ROLE_MONITOR)])
    code, msg = env.refused(statements.KEY_CHANGE, add, k.arm_auth[0])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs 2 of ARM's authority keys" in msg
    code, msg = env.refused(statements.KEY_CHANGE, add, k.arm_auth[0], k.arm_monitor)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "monitor key may not sign" in msg
    code, msg = env.refused(statements.KEY_CHANGE, add, k.arm_auth[0], k.aze_auth)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "a key of AZE cannot speak for ARM" in msg
    assert env.submit(statements.KEY_CHANGE, add, k.arm_auth[0], k.arm_auth[2]) == 1
    assert env.client.submit(env.report(new)).receipt.index == 2  # the new key works at once


def test_impossible_key_changes_are_refused(env: Env) -> None:
    k = env.keys
    auth = k.arm_auth[:2]
    cases = [
        (change(add=[_pk(k.arm_monitor, pb.ROLE_MONITOR)]), "never reused"),
        (change(revoke_key_ids=[_kid(k.aze_monitor)]), "is not a key of ARM"),
        (change(revoke_key_ids=["ab" * 32]), "is not a key of ARM"),
        (change(authority_threshold=4), "from 1 to its 3 active authority keys"),
        (change(revoke_key_ids=[_kid(a) for a in k.arm_auth[:2]]), "authority threshold"),
        (change(), "changes nothing"),
        (change(party="XYZ", reason="x", authority_threshold=1), "unknown party"),
    ]
    for statement, expected in cases:
        code, msg = env.refused(statements.KEY_CHANGE, statement, *auth)
        assert expected in msg, (expected, msg)
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    # Rotation: one entry adds the new key and revokes the old.
    new = SigningKey.generate()
    rotate = change(add=[_pk(new, pb.ROLE_MONITOR)], revoke_key_ids=[_kid(k.arm_monitor)])
    assert env.submit(statements.KEY_CHANGE, rotate, *auth) == 1
    env.audit()


def test_a_party_cannot_change_another_partys_keys(env: Env) -> None:
    k = env.keys
    code, msg = env.refused(
        statements.KEY_CHANGE, change(revoke_key_ids=[_kid(k.arm_monitor)]), k.aze_auth
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot speak for ARM" in msg


def test_revoked_authority_no_longer_counts(env: Env) -> None:
    k = env.keys
    a1, a2, a3 = k.arm_auth
    env.submit(statements.KEY_CHANGE, change(revoke_key_ids=[_kid(a1)]), a1, a2)
    code, msg = env.refused(statements.KEY_CHANGE, change(authority_threshold=1), a1, a3)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked at index 1" in msg
    assert env.submit(statements.KEY_CHANGE, change(authority_threshold=1), a2, a3) == 2
    new = SigningKey.generate()
    assert env.submit(statements.KEY_CHANGE, change(add=[_pk(new, pb.ROLE_AUTHORITY)]), a2) == 3
    env.audit()


# -- admitting a party -------------------------------------------------------------------------


def _admission(k: Keys) -> pb.PartyAdmission:
    return pb.PartyAdmission(
        party=pb.Party(
            code="OBS",
            name="Neutral observer mission",
            authority_threshold=1,
            keys=[_pk(k.obs_auth, pb.ROLE_AUTHORITY), _pk(k.obs_observer, pb.ROLE_OBSERVER)],
        ),
        created_time=to_timestamp(now_us()),
        reason="agreed at the talks",
    )


def test_admitting_a_party_needs_the_consent_the_trust_root_names(env: Env) -> None:
    k = env.keys
    adm = _admission(k)
    code, msg = env.refused(statements.PARTY_ADMISSION, adm, *k.arm_auth[:2], k.obs_auth)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "consent" in msg
    code, msg = env.refused(statements.PARTY_ADMISSION, adm, *k.arm_auth[:2], k.aze_auth)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs 1 of OBS's authority keys" in msg
    assert env.submit(statements.PARTY_ADMISSION, adm, *k.arm_auth[:2], k.aze_auth, k.obs_auth) == 1
    # The observer now reports for its own mission, and cannot for a party.
    assert env.client.submit(env.report(k.obs_observer, "OBS")).receipt.index == 2
    with pytest.raises(grpc.RpcError):
        env.client.submit(env.report(k.obs_observer, "ARM"))
    again = _admission(k)
    again.reason = "admitted twice?"
    signers = (*k.arm_auth[:2], k.aze_auth, k.obs_auth)
    code, msg = env.refused(statements.PARTY_ADMISSION, again, *signers)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "party OBS exists already" in msg
    env.audit()


def test_admission_policy_from_the_trust_root(db_url: str, borders: BorderDataset) -> None:
    """A trust root may let either founder admit an observer mission."""
    k = Keys()
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, k.log)
    initialize(
        store,
        k.founding(borders, admission_policy="OR(ARM.authority, AZE.authority)"),
        log_key,
        borders,
    )
    ledger = Ledger(store, log_key, borders)
    try:
        adm = _admission(k)
        envelope = dsse.sign(
            statements.PARTY_ADMISSION, adm.SerializeToString(), [k.aze_auth, k.obs_auth]
        )
        assert ledger.submit(envelope.to_json()).receipt.index == 1
    finally:
        ledger.close()
        store.close()


# -- freshness and replay ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [(-73 * HOUR_S, "older than the 259200 s"), (10 * 60, "ahead of the log's clock")],
)
def test_statements_outside_the_freshness_window_are_refused(
    env: Env, offset_s: int, expected: str
) -> None:
    r = report("ARM")
    r.created_time.CopyFrom(to_timestamp(now_us() + offset_s * 1_000_000))
    with pytest.raises(grpc.RpcError) as info:
        env.client.submit(sign_report(r, [env.keys.arm_monitor]))
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (info.value.details() or "")
    assert field_violations(info.value) == ["created_time"]
    ok = report("ARM")
    ok.created_time.CopyFrom(to_timestamp(now_us() - 71 * HOUR_S * 1_000_000))
    assert env.client.submit(sign_report(ok, [env.keys.arm_monitor])).receipt.index == 1


def test_replayed_key_change_returns_the_first_receipt(env: Env) -> None:
    k = env.keys
    envelope = dsse.sign(
        statements.KEY_CHANGE,
        change(revoke_key_ids=[_kid(k.arm_monitor)]).SerializeToString(),
        k.arm_auth[:2],
    ).to_json()
    first = env.client.submit(envelope)
    again = env.client.submit(envelope)
    assert again.duplicate and again.signed_receipt == first.signed_receipt
    assert env.client.checkpoint().tree_size == 2


def test_bad_signature_on_a_key_change_is_unauthenticated(env: Env) -> None:
    k = env.keys
    good = dsse.sign(
        statements.KEY_CHANGE, change(authority_threshold=3).SerializeToString(), k.arm_auth[:2]
    )
    other = change(authority_threshold=1).SerializeToString()
    forged = dsse.Envelope(other, good.payload_type, good.signatures)
    with pytest.raises(Unauthenticated):
        env.ledger.submit(forged.to_json())


def test_verifier_pinned_to_one_trust_root_refuses_a_ledger_founded_on_another(
    env: Env, tmp_path: Path, borders: BorderDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same parties, same origin, other keys: an impostor ledger cannot pass as this one."""
    pinned = hashlib.sha256(parse_entry(env.client.entry(0).entry).envelope).hexdigest()
    other = Keys()
    store = LedgerStore.open(f"sqlite:///{tmp_path / 'impostor.db'}")
    log_key = LogKey(ORIGIN, other.log)
    initialize(store, other.founding(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0")
    server.start()
    try:
        assert main(["verify", "--server", env.client.target, "--trust-root", pinned]) == 0
        capsys.readouterr()
        assert main(["verify", "--server", f"127.0.0.1:{port}", "--trust-root", pinned]) == 3
        assert f"is not the pinned one {pinned}" in capsys.readouterr().out
    finally:
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def test_a_new_key_signs_in_the_batch_after_the_change_that_adds_it(env: Env) -> None:
    """`batches` ends a SubmitBatch call after a key change, so a field team's queue of a
    rotation and the reports its new key signed is logged in one sync, in order."""
    k = env.keys
    new = SigningKey.generate()
    rotation = dsse.sign(
        statements.KEY_CHANGE,
        change(add=[_pk(new, pb.ROLE_MONITOR)], reason="new handset").SerializeToString(),
        list(k.arm_auth[:2]),
    ).to_json()
    queued = [env.report(k.arm_monitor), rotation, env.report(new), env.report(new, hours_ago=2)]
    calls = list(batches(queued))
    assert calls == [queued[:2], queued[2:]]
    results = [r for call in calls for r in env.client.submit_batch(call)]
    assert [r.receipt.index for r in results] == [1, 2, 3, 4]  # type: ignore[union-attr]
    env.audit()
