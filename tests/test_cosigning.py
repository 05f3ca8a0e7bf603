"""Signing on several machines: every signed command can write its statement to a file
(--out) instead of submitting it; others add their signatures (`ceasefire cosign`, with
--out to another file), the last submits it. A party whose threshold is 2 of 3 attests a
finding this way, and `--digest` pins the draft a signer read.

Through `clients.cli.main` against a real gRPC server on loopback (SQLite and PostgreSQL).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from clients.cli import main
from clients.client import LedgerClient
from geo.borders import BorderDataset
from ledger import incidents, keys, statements
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from ledger.verifier import replay
from tests.conftest import ORIGIN
from tests.reports import report, signed
from tests.test_borders import shifted_dataset
from tests.test_keys import Keys

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


@dataclass
class Served:
    """A ledger where ARM needs 2 of its 3 authority keys and AZE 1, with the finding
    policy "joint"; key files in `dir/keys`; the `ceasefire` command run in-process."""

    keys: Keys
    client: LedgerClient
    dir: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str, server: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, *(("--server", self.client.target) if server else ())])
        out, err = self.capsys.readouterr()
        return code, out, err

    def key(self, name: str) -> str:
        return str(self.dir / "keys" / f"{name}.key")

    def size(self) -> int:
        return self.client.checkpoint().tree_size


@pytest.fixture
def served(
    db_url: str, borders: BorderDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Served]:
    k = Keys()
    named: dict[str, SigningKey] = {
        **{f"arm-authority-{i}": a for i, a in enumerate(k.arm_auth, 1)},
        "arm-monitor": k.arm_monitor,
        "aze-authority": k.aze_auth,
        "aze-monitor": k.aze_monitor,
    }
    (tmp_path / "keys").mkdir()
    for name, key in named.items():
        keys.write_private(tmp_path / "keys" / f"{name}.key", key)
        keys.write_public(tmp_path / "keys" / f"{name}.pub", keys.public_bytes(key))
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, k.log)
    joint = pb.NamedPolicy(name="joint", expression="AND(ARM.authority, AZE.authority)")
    initialize(store, k.founding(borders, finding_policies=[joint]), log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0")
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    try:
        yield Served(k, client, tmp_path, capsys)
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def _draft(s: Served) -> tuple[int, str]:
    """Incident 1 by ARM's monitor, and a finding about it drafted by one ARM authority:
    the finding's index and its draft's SHA-256 (what attestations sign)."""
    assert s.client.submit(signed(report("ARM"), s.keys.arm_monitor)).receipt.index == 1
    code, out, _ = s.run(
        "finding", "draft", "--incident", "1", "--party", "ARM", "--policy", "joint",
        "--outcome", "confirmed", "--reasoning", "Both logs agree.",
        "--key", s.key("arm-authority-1"),
    )  # fmt: skip
    assert (code, out.strip()) == (0, "entry 2: FindingDraft about entry 1")
    envelope = dsse.Envelope.from_json(parse_entry(s.client.entry(2).entry).envelope)
    return 2, hashlib.sha256(envelope.payload).hexdigest()


def test_a_two_of_three_party_attests_with_keys_on_separate_machines(served: Served) -> None:
    s = served
    finding, digest = _draft(s)
    att, att2 = s.dir / "att.json", s.dir / "att2.json"

    # One of ARM's authorities alone cannot attest for ARM (2 of 3), nor use up its turn.
    code, _, err = s.run(
        "attest", str(finding), "--party", "ARM", "--key", s.key("arm-authority-1")
    )
    assert code == 1 and "PERMISSION_DENIED" in err, err
    assert "needs 2 of ARM's authority keys" in err and "Traceback" not in err
    assert s.size() == 3  # nothing written

    # A digest other than the draft's: refused before anything is signed.
    other = hashlib.sha256(b"another draft").hexdigest()
    code, _, err = s.run(
        "attest", str(finding), "--party", "ARM", "--key", s.key("arm-authority-1"),
        "--digest", other, "--out", str(att),
    )  # fmt: skip
    assert code == 1
    assert f"has SHA-256 {digest}, not {other}" in err and "nothing signed" in err
    assert not att.exists() and s.size() == 3

    # The first authority signs the draft it read, pinned by its digest, into a file ...
    code, out, err = s.run(
        "attest", str(finding), "--party", "ARM", "--key", s.key("arm-authority-1"),
        "--digest", digest.upper(), "--out", str(att),
    )  # fmt: skip
    assert code == 0 and digest in err  # shown before signing
    assert f"wrote {att} with 1 signature(s) (Attestation)" in out
    assert f"ceasefire cosign {att} --key KEY" in out and f"ceasefire submit {att}" in out
    assert s.size() == 3
    first = att.read_bytes()

    # ... the second, on another machine, reads it and adds theirs: to another file ...
    a2 = s.key("arm-authority-2")
    code, out, err = s.run("cosign", str(att), "--key", a2, "--out", str(att2), server=False)
    assert code == 0 and f"{att2}: now 2 signature(s) ({att} is unchanged)" in out
    assert '"party": "ARM"' in err and digest in err  # what is signed, shown first
    assert att.read_bytes() == first
    # ... or in place (Ed25519 is deterministic: the same envelope either way).
    code, out, _ = s.run("cosign", str(att), "--key", a2, server=False)
    assert code == 0 and "now 2 signature(s)" in out
    assert att.read_bytes() == att2.read_bytes()
    envelope = dsse.Envelope.from_json(att.read_bytes())
    assert envelope.payload_type == statements.ATTESTATION and len(envelope.signatures) == 2

    code, out, _ = s.run("submit", str(att))
    assert code == 0 and "entry 3" in out
    assert incidents.status_name(s.client.dossier(1).status) == "under_investigation"

    # AZE: a dissent pinned to another digest is refused too; its attestation completes it.
    code, _, err = s.run(
        "dissent", str(finding), "--party", "AZE", "--reasons", "No.", "--digest", other,
        "--key", s.key("aze-authority"),
    )  # fmt: skip
    assert code == 1 and "nothing signed" in err and s.size() == 4
    code, out, _ = s.run(
        "attest", str(finding), "--party", "AZE", "--digest", digest,
        "--key", s.key("aze-authority"),
    )  # fmt: skip
    assert (code, out.strip()) == (0, "entry 4: Attestation about entry 2")
    assert incidents.status_name(s.client.dossier(1).status) == "jointly_confirmed"
    replay([(e.index, e.entry) for e in s.client.entries(0, 0)])


def test_digest_must_be_a_sha256(served: Served) -> None:
    finding, _ = _draft(served)
    with pytest.raises(SystemExit) as info:
        served.run("attest", str(finding), "--party", "ARM", "--digest", "abc", "--key", "k")
    assert info.value.code == 2
    assert "is not a SHA-256 in hex" in served.capsys.readouterr().err


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def test_every_signed_command_can_write_its_statement_to_a_file(served: Served) -> None:
    s = served
    finding, _ = _draft(s)
    shutil.copy(EXAMPLES / "incident-arm.yaml", s.dir / "corrected.yaml")
    (s.dir / "photo.jpg").write_bytes(b"\xff\xd8 photo \xff\xd9")
    shifted_dataset(s.dir / "shifted")
    new_key = keys.generate()
    keys.write_public(s.dir / "keys" / "new.pub", keys.public_bytes(new_key))
    arm1, aze, arm_mon, aze_mon = (
        s.key(n) for n in ("arm-authority-1", "aze-authority", "arm-monitor", "aze-monitor")
    )
    d = str(s.dir)
    commands: list[tuple[str, list[str], str]] = [
        (statements.COUNTER_CLAIM,
         ["answer", "1", "--party", "AZE", "--kind", "denial", "--key", aze], ""),
        (statements.AMENDMENT, ["amend", "1", f"{d}/corrected.yaml", "--key", arm_mon], ""),
        (statements.RETRACTION, ["retract", "1", "--party", "ARM", "--key", arm_mon], ""),
        (statements.EVIDENCE,
         ["evidence", "add", f"{d}/photo.jpg", "--party", "ARM", "--incident", "1",
          "--key", arm_mon], ""),
        (statements.FINDING,
         ["finding", "draft", "--incident", "1", "--party", "ARM", "--policy", "joint",
          "--outcome", "confirmed", "--key", arm1], ""),
        (statements.ATTESTATION, ["attest", str(finding), "--party", "AZE", "--key", aze], ""),
        (statements.DISSENT, ["dissent", str(finding), "--party", "AZE", "--key", aze], ""),
        (statements.INVESTIGATION_REQUEST,
         ["investigation", "request", "--party", "ARM", "--incident", "1", "--respondent",
          "AZE", "--answer-within", "48", "--key", arm1], ""),
        (statements.INVESTIGATION_RESPONSE,
         ["investigation", "answer", "3", "--party", "AZE", "--accept", "--key", aze], ""),
        (statements.INVESTIGATION_TERMS,
         ["investigation", "terms", "3", "--member", f"{d}/keys/arm-monitor.pub",
          "--site", "Berd=40.8811,45.3875,500", "--outcome", "confirmed",
          "--publication", "open", "--key", arm1], ""),
        (statements.VISIT,
         ["investigation", "visit", "3", "--party", "ARM", "--site", "Berd",
          "--started", _iso(timedelta(hours=-2)), "--ended", _iso(timedelta(hours=-1)),
          "--outcome", "completed", "--key", arm_mon], ""),
        (statements.NOTICE,
         ["notice", "--party", "AZE", "--activity", "demining", "--start",
          _iso(timedelta(hours=1)), "--end", _iso(timedelta(hours=7)),
          "--point", "41.0933,45.3661", "--radius-m", "1500", "--key", aze], ""),
        (statements.HOTLINE,
         ["hotline", "send", "--party", "ARM", "--to", "AZE", "--text", "Shots at Berd?",
          "--key", arm_mon], ""),
        (statements.ACKNOWLEDGEMENT,
         ["hotline", "ack", "1", "--party", "AZE", "--key", aze_mon], ""),
        (statements.KEY_CHANGE,
         ["keys", "add", "--party", "ARM", "--role", "monitor", "--public-key",
          f"{d}/keys/new.pub", "--key", arm1], ""),
        (statements.BORDER_DATASET,
         ["border", "add", f"{d}/shifted", "--name", "Shifted", "--source", "test",
          "--licence", "public domain", "--key", arm1],
         f"ceasefire border send {{out}} {d}/shifted"),
    ]  # fmt: skip
    size = s.size()
    for n, (kind, args, then) in enumerate(commands):
        out_file = s.dir / f"statement-{n}.json"
        code, out, err = s.run(*args, "--out", str(out_file))
        assert code == 0, (args, out, err)
        envelope = dsse.Envelope.from_json(out_file.read_bytes())
        assert envelope.payload_type == kind and len(envelope.signatures) == 1, args
        assert f"wrote {out_file} with 1 signature(s)" in out, out
        assert f"ceasefire cosign {out_file} --key KEY" in out, out
        assert (then.format(out=out_file) or f"ceasefire submit {out_file}") in out, out
    assert s.size() == size  # nothing was submitted

    # A file so written is sent as it is, here after AZE's authority signed the answer.
    code, out, _ = s.run("submit", str(s.dir / "statement-0.json"))
    assert code == 0 and f"entry {size}" in out
    logged = parse_entry(s.client.entry(size).entry).envelope
    assert dsse.Envelope.from_json(logged).payload_type == statements.COUNTER_CLAIM


def test_evidence_written_to_a_file_travels_with_its_blob(served: Served) -> None:
    s = served
    assert s.client.submit(signed(report("ARM"), s.keys.arm_monitor)).receipt.index == 1
    photo = s.dir / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 crater \xff\xd9")
    aze_authority = dsse.key_id(keys.public_bytes(s.keys.aze_auth))
    ev = s.dir / "ev.json"
    code, out, _ = s.run(
        "evidence", "add", str(photo), "--party", "ARM", "--incident", "1", "--blob", "sealed",
        "--seal-to", aze_authority, "--key", s.key("arm-monitor"), "--out", str(ev),
    )  # fmt: skip
    sealed = s.dir / "ev.json.sealed"
    assert code == 0 and f"wrote {sealed}" in out
    assert f"ceasefire evidence send {ev} {sealed}" in out
    assert s.size() == 2

    # Not the blob the record names: refused, nothing written.
    code, _, err = s.run("evidence", "send", str(ev), str(photo))
    assert code == 1 and "not the blob" in err and s.size() == 2
    code, _, err = s.run("evidence", "send", str(ev))
    assert code == 1 and "give its file" in err and s.size() == 2

    code, out, _ = s.run("evidence", "send", str(ev), str(sealed))
    assert code == 0 and "entry 2: evidence" in out and "(sealed)" in out
    got = s.dir / "got.jpg"
    code, out, _ = s.run(
        "evidence", "open", "2", "--key", s.key("aze-authority"), "--out", str(got)
    )
    assert code == 0 and got.read_bytes() == photo.read_bytes()

    # Plain: the blob is the file itself.
    plain = s.dir / "plain.json"
    code, out, _ = s.run(
        "evidence", "add", str(photo), "--party", "ARM", "--incident", "1", "--blob", "plain",
        "--key", s.key("arm-monitor"), "--out", str(plain),
    )  # fmt: skip
    assert code == 0 and f"ceasefire evidence send {plain} {photo}" in out
    code, out, _ = s.run("evidence", "send", str(plain), str(photo))
    assert code == 0 and "entry 3: evidence" in out and "(plain)" in out
