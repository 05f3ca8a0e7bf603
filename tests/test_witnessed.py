"""Cosigned checkpoints: the trust root names each party's witness and a quorum policy;
the log asks its witnesses to cosign every new checkpoint and serves their cosignatures;
clients require the quorum, and a missing one is shown, never skipped.

Real witnesses over HTTP on loopback, a real gRPC server, real signatures; cosignatures
also checked by a checker written from the C2SP text alone (hashlib and PyNaCl).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from clients import checkpoints
from clients.cli import main
from clients.client import LedgerClient
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.errors import InvalidArgument
from ledger.formats import dsse
from ledger.formats.cosignature import CosignatureSigner
from ledger.log_key import LogKey
from ledger.rules import admit_trust_root
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore
from ledger.trust import TrustState
from ledger.witness.server import Witness, WitnessHTTPServer, serve
from ledger.witness.state import WitnessState
from ledger.witnesses import QuorumError
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed

ARM_WITNESS = "witness.arm.test/w1"
AZE_WITNESS = "witness.aze.test/w1"
POLICY = "AND(ARM.witness, AZE.witness)"


def independent_cosigners(note: str, cosigners: dict[str, bytes]) -> dict[str, int]:
    """C2SP tlog-cosignature v1, from the spec's text alone: the names of the cosigners
    (name -> raw Ed25519 key) whose lines on `note` verify, with their timestamps."""
    text, _, block = note.rpartition("\n\n")
    text += "\n"
    found: dict[str, int] = {}
    for line in block.splitlines():
        name, _, b64 = line.removeprefix("\u2014 ").rpartition(" ")
        if name not in cosigners:
            continue
        raw = base64.b64decode(b64)
        key = cosigners[name]
        if raw[:4] != hashlib.sha256(name.encode() + b"\n\x04" + key).digest()[:4]:
            continue
        timestamp = int.from_bytes(raw[4:12], "big")
        message = b"cosignature/v1\ntime %d\n" % timestamp + text.encode()
        try:
            VerifyKey(key).verify(message, raw[12:])
        except BadSignatureError:
            continue
        found[name] = timestamp
    return found


def _trust_root(
    parties: Parties, borders: BorderDataset, witness_keys: dict[str, SigningKey], policy: str
) -> pb.TrustRoot:
    root = parties.trust_root(borders)
    for party in root.parties:
        name = {"ARM": ARM_WITNESS, "AZE": AZE_WITNESS}[party.code]
        party.keys.append(
            pb.PartyKey(
                public_key=keys.public_bytes(witness_keys[name]),
                role=pb.ROLE_WITNESS,
                witness_name=name,
            )
        )
    root.witness_policy = policy
    return root


@dataclass
class Witnessed:
    """A ledger whose trust root names one witness of each party, both running."""

    parties: Parties
    ledger: Ledger
    client: LedgerClient
    server: LedgerServer
    witness_keys: dict[str, SigningKey]
    witnesses: dict[str, WitnessHTTPServer]
    start_witness: Callable[[str, int], WitnessHTTPServer]
    trust: TrustState

    def cosigners(self) -> dict[str, bytes]:
        return {n: keys.public_bytes(k) for n, k in self.witness_keys.items()}

    def submit(self, n: int) -> int:
        for _ in range(n):
            self.client.submit(signed(report(), self.parties.arm_monitor))
        return self.client.checkpoint().tree_size

    def wait(self, what: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)


def _witnessed_size(client: LedgerClient) -> int:
    try:
        return client.checkpoint(witnessed=True).tree_size
    except grpc.RpcError:
        return 0


@pytest.fixture
def witnessed(
    db_url: str,
    parties: Parties,
    borders: BorderDataset,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Witnessed]:
    policy = getattr(request, "param", POLICY)
    witness_keys = {ARM_WITNESS: SigningKey.generate(), AZE_WITNESS: SigningKey.generate()}
    root = _trust_root(parties, borders, witness_keys, policy)
    envelope = dsse.sign(
        statements.TRUST_ROOT,
        root.SerializeToString(),
        [parties.arm_authority, parties.aze_authority],
    )
    log_key = LogKey(ORIGIN, parties.log)
    running: dict[str, WitnessHTTPServer] = {}

    def start_witness(name: str, port: int = 0) -> WitnessHTTPServer:
        state = WitnessState(tmp_path / f"{name.split('.')[1]}-witness.db")
        w = Witness(
            CosignatureSigner(name, witness_keys[name]),
            {ORIGIN: [log_key.note_signer.verifier]},
            state,
        )
        server = serve(w, "127.0.0.1", port)
        server.start()
        running[name] = server
        return server

    for name in witness_keys:
        start_witness(name, 0)
    store = LedgerStore.open(db_url)
    initialize(store, envelope, log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(
        ledger,
        "127.0.0.1:0",
        spool_dir=tmp_path / "uploads",
        witnesses=[running[ARM_WITNESS].url, running[AZE_WITNESS].url],
    )
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    client.wait_ready()
    try:
        yield Witnessed(
            parties,
            ledger,
            client,
            server,
            witness_keys,
            running,
            start_witness,
            admit_trust_root(envelope.add_signature(parties.log)),
        )
    finally:
        client.close()
        server.stop(grace=None).wait()
        for w in running.values():
            w.stop()
        ledger.close()
        store.close()


def _verified(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """`ceasefire verify --json ARGS`: its exit code and its JSON document."""
    capsys.readouterr()
    code = main(["verify", "--json", "--workers", "0", *args])
    return code, json.loads(capsys.readouterr().out)


def test_every_checkpoint_is_cosigned_by_each_party_witness(
    witnessed: Witnessed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    size = witnessed.submit(3)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == size)
    # The audits say whose cosignatures they checked, online and offline: a bundle
    # carries the checkpoint with its cosignatures.
    code, doc = _verified(capsys, "--require-witnesses", "--server", witnessed.client.target)
    assert code == 0 and doc["tree_size"] == size and doc["witnesses"]["policy_met"]
    assert {c["name"] for c in doc["witnesses"]["cosigned_by"]} == {ARM_WITNESS, AZE_WITNESS}
    bundle = tmp_path / "ledger.bundle"
    assert main(["export", "--out", str(bundle), "--server", witnessed.client.target]) == 0
    code, doc = _verified(capsys, "--require-witnesses", "--bundle", str(bundle))
    assert code == 0 and doc["tree_size"] == size and doc["witnesses"]["policy_met"]

    trusted = checkpoints.trusted_checkpoint(
        witnessed.client, witnessed.trust, require_witnesses=True
    )
    assert trusted.checkpoint.size == size
    assert trusted.witnessing.met
    assert {(c.party, c.name) for c in trusted.witnessing.cosigned} == {
        ("ARM", ARM_WITNESS),
        ("AZE", AZE_WITNESS),
    }
    # The lines are C2SP cosignatures, by the spec's text alone; the log's own line first.
    note = trusted.signed_note
    assert set(independent_cosigners(note, witnessed.cosigners())) == {ARM_WITNESS, AZE_WITNESS}
    assert note.split("\n\n")[1].startswith(f"\u2014 {ORIGIN} ")
    # Each witness holds what it cosigned.
    for w in witnessed.witnesses.values():
        held = w.witness.state.get(ORIGIN)
        assert held is not None and held.size == size
    # The client library makes a receipt an inclusion proof in a witnessed checkpoint.
    response = witnessed.client.submit(signed(report("AZE"), witnessed.parties.aze_monitor))
    got, proof = checkpoints.await_inclusion(
        witnessed.client,
        response.receipt.index,
        response.receipt.leaf_hash,
        witnessed.trust,
        require_witnesses=True,
    )
    assert got.checkpoint.size > response.receipt.index and got.witnessing.met
    assert len(proof) >= 1


def test_a_missing_quorum_is_shown_and_never_trusted(
    witnessed: Witnessed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = witnessed.submit(2)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == before)
    aze = witnessed.witnesses[AZE_WITNESS]
    port = aze.port
    aze.stop()

    after = witnessed.submit(2)
    arm_url = witnessed.witnesses[ARM_WITNESS].url

    def arm_cosigned_and_aze_failed() -> bool:
        shown = {w.url: w for w in witnessed.client.checkpoint().witnesses}
        return shown[arm_url].cosigned_size == after and shown[aze.url].error != ""

    witnessed.wait(arm_cosigned_and_aze_failed)
    served = witnessed.client.checkpoint()
    assert served.tree_size == after
    shown = checkpoints.check(served.signed_note, witnessed.trust, require_witnesses=False)
    assert not shown.witnessing.met
    assert [c.party for c in shown.witnessing.cosigned] == ["ARM"]
    assert "NOT met" in shown.witnessing.describe()
    with pytest.raises(QuorumError):
        checkpoints.check(served.signed_note, witnessed.trust, require_witnesses=True)
    # Asked for a witnessed checkpoint, the log serves the newest the policy accepts.
    assert witnessed.client.checkpoint(witnessed=True).tree_size == before
    # `proof` with --require-witnesses before the subcommand or after it (as
    # docs/witnesses.md writes it): against the newest witnessed checkpoint, naming whose
    # cosignatures it checked; without it, against the newest, which is NOT met.
    target = witnessed.client.target
    for argv in (
        ["proof", "--require-witnesses", "--server", target, "inclusion", "--index", "1"],
        ["proof", "inclusion", "--index", "1", "--require-witnesses", "--server", target],
        ["proof", "consistency", "--old", "1", "--require-witnesses", "--server", target],
        ["proof", "inclusion", "--index", "1", "--server", target],
    ):
        capsys.readouterr()
        assert main(argv) == 0, argv
        doc = json.loads(capsys.readouterr().out)
        required = "--require-witnesses" in argv
        assert doc.get("tree_size", doc.get("new_size")) == (before if required else after)
        assert doc["witnesses"]["policy_met"] is required, argv
        cosigned = {(c["party"], c["name"]) for c in doc["witnesses"]["cosigned_by"]}
        summary = doc["witnesses"]["summary"]
        if required:
            assert cosigned == {("ARM", ARM_WITNESS), ("AZE", AZE_WITNESS)}
            assert f"ARM {ARM_WITNESS}" in summary and f"AZE {AZE_WITNESS}" in summary
            assert summary.endswith(f"witness policy {POLICY}: met")
        else:
            assert cosigned == {("ARM", ARM_WITNESS)}
            assert summary == f"cosigned by ARM {ARM_WITNESS}; witness policy {POLICY}: NOT met"
    code, doc = _verified(capsys, "--require-witnesses", "--server", witnessed.client.target)
    assert code == 0 and doc["tree_size"] == before  # the newest the quorum cosigned
    bundle = tmp_path / "ledger.bundle"  # exported now: its checkpoint lacks AZE's line
    assert main(["export", "--out", str(bundle), "--server", witnessed.client.target]) == 0
    code, doc = _verified(capsys, "--bundle", str(bundle))
    assert code == 0 and not doc["witnesses"]["policy_met"]
    code, doc = _verified(capsys, "--require-witnesses", "--bundle", str(bundle))
    assert code == 1 and "NOT met" in doc["error"]
    # `export --witnessed`: the newest checkpoint the policy accepts and the entries it
    # covers, leaving out the newer ones the quorum has not cosigned yet.
    capsys.readouterr()
    witnessed_bundle = tmp_path / "witnessed.bundle"
    argv = ["export", "--witnessed", "--json", "--out", str(witnessed_bundle), "--server", target]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["tree_size"] == before < after
    code, doc = _verified(capsys, "--require-witnesses", "--bundle", str(witnessed_bundle))
    assert code == 0 and doc["tree_size"] == before and doc["witnesses"]["policy_met"]
    assert {c["name"] for c in doc["witnesses"]["cosigned_by"]} == {ARM_WITNESS, AZE_WITNESS}
    capsys.readouterr()
    code = main(["verify", "--require-witnesses", "--server", witnessed.client.target])
    assert code == 0 and "witness policy AND(ARM.witness, AZE.witness): met" in (
        capsys.readouterr().out
    )
    code = main(["checkpoint", "--json", "--server", witnessed.client.target])
    out = capsys.readouterr().out
    assert code == 0 and '"error": "' in out and f'"cosigned_size": {after}' in out

    # The witness comes back (same state, same address): it is caught up from its size.
    witnessed.start_witness(AZE_WITNESS, port)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == after)
    held = witnessed.witnesses[AZE_WITNESS].witness.state.get(ORIGIN)
    assert held is not None and held.size == after


def test_a_restarted_log_learns_each_witness_size_from_its_conflict(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    size = witnessed.submit(2)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == size)
    # A second replica on the same database starts knowing nothing of the witnesses: its
    # first request (old size 0) is answered 409 with their size, then it proves from there.
    server, port = build_server(
        witnessed.ledger,
        "127.0.0.1:0",
        spool_dir=tmp_path / "uploads2",
        witnesses=[w.url for w in witnessed.witnesses.values()],
    )
    witnessed.server.stop(grace=None).wait()
    server.start()
    try:
        client = LedgerClient(f"127.0.0.1:{port}")
        client.wait_ready()
        for _ in range(2):
            client.submit(signed(report(), witnessed.parties.arm_monitor))
        after = client.checkpoint().tree_size
        witnessed.wait(lambda: _witnessed_size(client) == after)
        assert all(w.error == "" for w in client.checkpoint().witnesses)
        client.close()
    finally:
        server.stop(grace=None).wait()


def test_a_witness_ahead_of_the_log_is_shown_as_an_error(witnessed: Witnessed) -> None:
    """A witness that cosigned a size this log never reached was shown another history
    (or the log's database was rolled back): the log says so, and keeps asking it, rather
    than counting it as caught up."""
    size = witnessed.submit(1)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == size)
    state = witnessed.witnesses[AZE_WITNESS].witness.state
    with state.transaction(ORIGIN) as tx:  # as if a fork of 100 entries had been cosigned
        assert tx.current is not None
        tx.store(replace(tx.current, size=100, root_hash=bytes(32)))
    after = witnessed.submit(1)

    url = witnessed.witnesses[AZE_WITNESS].url

    def aze() -> api.WitnessStatus:
        (status,) = [w for w in witnessed.client.checkpoint().witnesses if w.url == url]
        return status

    witnessed.wait(lambda: aze().error != "")
    assert "holds size 100, beyond this log's newest checkpoint" in aze().error, aze()
    assert f"({after})" in aze().error and "rolled back" in aze().error


def test_a_cosignature_by_a_key_the_trust_root_does_not_name_is_not_kept(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    stranger_key = SigningKey.generate()
    log_verifier = LogKey(ORIGIN, witnessed.parties.log).note_signer.verifier
    stranger = serve(
        Witness(
            CosignatureSigner(ARM_WITNESS, stranger_key),  # ARM's name, another key
            {ORIGIN: [log_verifier]},
            WitnessState(tmp_path / "stranger.db"),
        ),
        "127.0.0.1",
        0,
    )
    stranger.start()
    server, port = build_server(
        witnessed.ledger, "127.0.0.1:0", spool_dir=tmp_path / "u3", witnesses=[stranger.url]
    )
    server.start()
    try:
        client = LedgerClient(f"127.0.0.1:{port}")
        client.wait_ready()
        witnessed.submit(1)

        def refused() -> bool:
            (shown,) = client.checkpoint().witnesses
            return "no cosignature by a witness key of the trust root" in shown.error

        witnessed.wait(refused)
        held = stranger.witness.state.get(ORIGIN)
        assert held is not None and held.size >= 1  # it did cosign, with its own key
        served = client.checkpoint().signed_note
        assert stranger.witness.verifier.vkey.split("+")[1] not in served  # not kept
        assert ARM_WITNESS not in independent_cosigners(
            served, {ARM_WITNESS: bytes(stranger_key.verify_key)}
        )
        client.close()
    finally:
        server.stop(grace=None).wait()
        stranger.stop()


@pytest.mark.parametrize("witnessed", [""], indirect=True)
def test_without_a_policy_nothing_is_witnessed_and_the_client_says_so(
    witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = witnessed.submit(1)
    witnessed.wait(lambda: len(witnessed.ledger.store.cosignatures(size)) == 2)
    with pytest.raises(grpc.RpcError) as info:
        witnessed.client.checkpoint(witnessed=True)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trust = witnessed.trust
    shown = checkpoints.trusted_checkpoint(witnessed.client, trust)
    assert "names no witness policy" in shown.witnessing.describe()
    assert {c.party for c in shown.witnessing.cosigned} == {"ARM", "AZE"}  # shown all the same
    with pytest.raises(QuorumError):
        checkpoints.trusted_checkpoint(witnessed.client, trust, require_witnesses=True)
    # Nor is there a witnessed bundle to export: refused in one line, nothing written.
    out = tmp_path / "witnessed.bundle"
    capsys.readouterr()
    argv = ["export", "--witnessed", "--out", str(out), "--server", witnessed.client.target]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not out.exists()


def _root_with(parties: Parties, borders: BorderDataset, **change: object) -> pb.TrustRoot:
    witness_keys = {ARM_WITNESS: SigningKey.generate(), AZE_WITNESS: SigningKey.generate()}
    root = _trust_root(parties, borders, witness_keys, POLICY)
    for field_name, value in change.items():
        if field_name == "arm_witness_name":
            root.parties[0].keys[-1].witness_name = str(value)
        elif field_name == "monitor_witness_name":
            root.parties[0].keys[0].witness_name = str(value)
        else:
            setattr(root, field_name, value)
    return root


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"arm_witness_name": ""}, "parties[0].keys[3].witness_name", "C2SP key name"),
        ({"arm_witness_name": "has space"}, "parties[0].keys[3].witness_name", "C2SP key name"),
        ({"arm_witness_name": AZE_WITNESS}, "parties[1].keys[3].witness_name", "in use"),
        ({"arm_witness_name": ORIGIN}, "parties[0].keys[3].witness_name", "in use"),
        ({"monitor_witness_name": "x.test/w"}, "parties[0].keys[0].witness_name", "only a witness"),
        ({"witness_policy": "AND(ARM.witness, AZE.authority)"}, "witness_policy", "PARTY.witness"),
        ({"witness_policy": "AND(ARM.witness, OBS.witness)"}, "witness_policy", "unknown parties"),
    ],
)
def test_the_trust_root_names_witnesses_exactly(
    parties: Parties, borders: BorderDataset, change: dict[str, object], field: str, says: str
) -> None:
    root = _root_with(parties, borders, **change)
    with pytest.raises(InvalidArgument) as info:
        TrustState.from_trust_root(root)
    assert info.value.field == field and says in str(info.value)


def test_a_trust_root_file_names_a_witness_by_its_cosigner_key(
    tmp_path: Path, parties: Parties, borders: BorderDataset
) -> None:
    from clients.trust_root_file import TrustRootFileError, load_trust_root
    from ledger.service import dataset_files
    from ledger.witnesses import witnesses

    cosigner = CosignatureSigner(ARM_WITNESS, SigningKey.generate()).verifier

    def b64(k: SigningKey) -> str:
        return base64.b64encode(keys.public_bytes(k)).decode()

    def write(witness_key: str) -> Path:
        path = tmp_path / "trust-root.yaml"
        path.write_text(
            f"""origin: {ORIGIN}
parties:
  - code: ARM
    name: Armenia
    keys:
      - {{role: authority, public_key: "{b64(parties.arm_authority)}"}}
      - {{role: witness, {witness_key}}}
  - code: AZE
    name: Azerbaijan
    keys:
      - {{role: authority, public_key: "{b64(parties.aze_authority)}"}}
witness_policy: ARM.witness
""",
            encoding="utf-8",
        )
        return path

    def load(path: Path) -> pb.TrustRoot:
        return load_trust_root(
            path,
            log_public_key=keys.public_bytes(parties.log),
            border_dataset_sha256=borders.sha256,
            border_dataset_files=dataset_files(borders),
        )

    root = load(write(f'witness_vkey: "{cosigner.vkey}"'))
    trust = TrustState.from_trust_root(root)
    (witness,) = witnesses(trust)
    assert (witness.key.party, witness.name) == ("ARM", ARM_WITNESS)
    assert witness.verifier.key_hash == cosigner.key_hash
    assert root.witness_policy == "ARM.witness"

    with pytest.raises(TrustRootFileError, match="witness_vkey alone"):
        load(write(f'witness_vkey: "{cosigner.vkey}", witness_name: x.test/w'))
    note_vkey = LogKey(ORIGIN, parties.log).verifier.vkey  # a signed-note key (0x01)
    with pytest.raises(TrustRootFileError, match=r"parties\[0\].keys\[1\].witness_vkey.*0x04"):
        load(write(f'witness_vkey: "{note_vkey}"'))


def test_a_party_adds_a_witness_by_its_cosigner_key(
    witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys add --role witness --witness-vkey`: the key and its C2SP name in one; a
    witness key without its name is refused, naming the field."""
    authority = tmp_path / "aze-authority.key"
    keys.write_private(authority, witnessed.parties.aze_authority)
    target = witnessed.client.target
    second = CosignatureSigner("witness.aze.test/w2", SigningKey.generate()).verifier
    add = ["keys", "add", "--party", "AZE", "--role", "witness", "--key", str(authority)]
    assert main([*add, "--witness-vkey", second.vkey, "--server", target]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--server", target]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert {"party": "AZE", "witness_name": "witness.aze.test/w2"}.items() <= next(
        k for k in listed if k.get("witness_name") == "witness.aze.test/w2"
    ).items()
    pub = tmp_path / "w3.pub"
    keys.write_public(pub, keys.public_bytes(SigningKey.generate()))
    assert main([*add, "--public-key", str(pub), "--server", target]) == 1
    assert "add[0].witness_name" in capsys.readouterr().err


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_warns_when_the_policy_has_no_witness_to_ask(
    witnessed: Witnessed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`serve` of a log whose trust root names a witness policy, with no --witness: one
    warning line at start (its new checkpoints would never be witnessed)."""
    from ledger.serving import runtime

    def served(ledger: Ledger, *_args: object, **_kwargs: object) -> None:
        ledger.close()
        ledger.store.close()

    monkeypatch.setattr(runtime, "serve_forever", served)
    log_key = tmp_path / "log.key"
    keys.write_private(log_key, witnessed.parties.log)
    db = str(witnessed.ledger.store.engine.url)
    serve = ["serve", "--db", db, "--log-key", str(log_key), "--listen", "127.0.0.1:0"]
    assert main(serve) == 0
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == (
        f"the trust root's witness policy {POLICY} asks for cosignatures, but no --witness "
        "is given: new checkpoints will not meet it"
    )
    caplog.clear()
    assert main([*serve, "--witness", witnessed.witnesses[ARM_WITNESS].url]) == 0
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
