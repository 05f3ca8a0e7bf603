"""The C2SP witness (c2sp.org/tlog-witness, c2sp.org/tlog-cosignature): cosignatures checked
by an independent checker written from the spec's text; the spec's examples; every status
over real HTTP on loopback; atomicity under concurrent requests; state across restarts; a
real ledger's checkpoints and a diverging history signed by the same key; the CLI.

The CLI runs in the test's process (tests.cli_runner), except `witness serve` while it
serves: a real process, stopped by SIGTERM as a service manager stops it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nacl.signing import SigningKey, VerifyKey

from geo.borders import BorderDataset
from ledger import keys
from ledger.formats.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    cosignatures,
    parse_cosigner_vkey,
)
from ledger.formats.merkle import EMPTY_ROOT, LeafTree, consistency_proof, leaf_hash
from ledger.formats.note import (
    Checkpoint,
    NoteError,
    NoteSignature,
    NoteVerifier,
    open_note,
    sign_note,
    split_note,
)
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.storage import LedgerStore
from ledger.witness import client as wclient
from ledger.witness.protocol import (
    AddCheckpointRequest,
    ProtocolError,
    parse_conflict_body,
    parse_cosignature_body,
)
from ledger.witness.server import Witness, WitnessHTTPServer, serve
from ledger.witness.state import WitnessState
from tests import cli_runner
from tests.conftest import ORIGIN, Parties, RunningLedger
from tests.reports import report, signed

WITNESS_NAME = "witness.test/w1"
LOG_ORIGIN = "log.test/witnessed"
NOW = 1_700_000_000

# -- an independent checker, from the C2SP text alone (hashlib and PyNaCl only) ------------


def spec_key_id(name: str, pub: bytes) -> bytes:
    # "SHA-256(<name> || "\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]"
    return hashlib.sha256(name.encode() + b"\n" + b"\x04" + pub).digest()[:4]


def spec_vkey(name: str, pub: bytes) -> str:
    # signed-note vkey: name "+" hex key id "+" base64(type byte || key); type 0x04 here.
    body = base64.b64encode(bytes([0x04]) + pub).decode()
    return f"{name}+{spec_key_id(name, pub).hex()}+{body}"


def spec_check(name: str, pub: bytes, checkpoint_body: str, line: str) -> int:
    """Verify one cosignature line ("— <name> base64(key ID || timestamped_signature)") over
    a checkpoint body; return its timestamp. Raises on any mismatch."""
    assert line.startswith("\u2014 ") and line.endswith("\n"), line
    line_name, b64 = line[2:-1].split(" ")
    assert line_name == name
    raw = base64.b64decode(b64, validate=True)
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == spec_key_id(name, pub)
    timestamp = int.from_bytes(raw[4:12], "big")  # u64, big-endian (RFC 8446 section 3.3)
    assert timestamp <= 2**63 - 1
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n"
    message += checkpoint_body.encode()
    VerifyKey(pub).verify(message, raw[12:])  # raises BadSignatureError
    return timestamp


def witness_lines(note: str, name: str = WITNESS_NAME) -> list[str]:
    return [ln + "\n" for ln in note.splitlines() if ln.startswith(f"\u2014 {name} ")]


# -- the C2SP texts' examples, verbatim -----------------------------------------------------

SPEC_REQUEST = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks"
    "+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()

SPEC_RESPONSE = (
    "\u2014 witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZT"
    "SvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n"
    "\u2014 witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt"
    "64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n"
    "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrr"
    "KbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
).encode()

SPEC_COSIGNED_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)

SPEC_SIGNED_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


# -- a log of our own, signing real checkpoints ---------------------------------------------


class Log:
    def __init__(self, origin: str = LOG_ORIGIN, key: SigningKey | None = None, seed: str = ""):
        self.key = LogKey(origin, key or SigningKey.generate())
        self.leaves = [leaf_hash(f"{seed}entry {i}".encode()) for i in range(300)]
        self.tree = LeafTree(self.leaves)

    def root(self, size: int) -> bytes:
        return self.tree.root(size)

    def checkpoint(self, size: int) -> str:
        return self.key.sign_checkpoint(size, self.root(size))

    def proof(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(self.tree.get, old, new) if 0 < old < new else []

    def body(self, old: int, new: int) -> bytes:
        return AddCheckpointRequest(old, self.proof(old, new), self.checkpoint(new)).to_body()


@dataclass
class Served:
    witness: Witness
    server: WitnessHTTPServer
    state_path: Path
    log: Log
    pub: bytes
    extra: list[WitnessHTTPServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, old: int, new: int, log: Log | None = None) -> wclient.AddResult:
        log = log or self.log
        return wclient.add_checkpoint(self.url, old, log.proof(old, new), log.checkpoint(new))

    def post(self, body: bytes, path: str = "/add-checkpoint") -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request("POST", path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def stored_size(self) -> int:
        s = self.witness.state.get(self.log.key.origin)
        return -1 if s is None else s.size


def start_witness(
    state_path: Path, witness_key: SigningKey, logs: list[Log], max_connections: int = 64
) -> tuple[Witness, WitnessHTTPServer]:
    by_origin: dict[str, list[NoteVerifier]] = {}
    for log in logs:
        by_origin.setdefault(log.key.origin, []).append(log.key.verifier)
    witness = Witness(
        CosignatureSigner(WITNESS_NAME, witness_key), by_origin, WitnessState(state_path)
    )
    server = serve(witness, "127.0.0.1", 0, max_connections=max_connections)
    server.start()
    return witness, server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    key = SigningKey.generate()
    log = Log()
    witness, server = start_witness(tmp_path / "witness.db", key, [log])
    s = Served(witness, server, tmp_path / "witness.db", log, bytes(key.verify_key))
    try:
        yield s
    finally:
        for srv in [server, *s.extra]:
            srv.stop()
        witness.state.close()


# -- cosignatures -------------------------------------------------------------------------


def test_cosignature_checks_out_independently() -> None:
    key = SigningKey.generate()
    pub = bytes(key.verify_key)
    signer = CosignatureSigner(WITNESS_NAME, key)
    text = Checkpoint(LOG_ORIGIN, 7, bytes(range(32)), ("ext line",)).to_text()
    sig = signer.cosign(text, NOW)
    assert spec_check(WITNESS_NAME, pub, text, sig.line()) == NOW
    assert signer.key_hash == spec_key_id(WITNESS_NAME, pub)
    assert signer.verifier.vkey == spec_vkey(WITNESS_NAME, pub)
    assert parse_cosigner_vkey(spec_vkey(WITNESS_NAME, pub)).public_key == pub
    assert signer.verifier.verify(text, sig) == NOW
    # A cosignature is bound to the checkpoint text, the timestamp, the name and the key.
    assert signer.verifier.verify(text.replace("7", "8", 1), sig) is None
    later = NoteSignature(sig.name, sig.key_hash, (NOW + 1).to_bytes(8, "big") + sig.signature[8:])
    assert signer.verifier.verify(text, later) is None
    assert CosignatureVerifier("witness.test/w2", pub).verify(text, sig) is None
    assert CosignatureVerifier(WITNESS_NAME, bytes(32)).verify(text, sig) is None


def test_the_spec_message_and_example_line() -> None:
    key = SigningKey.generate()
    text, sigs = split_note(SPEC_COSIGNED_CHECKPOINT)
    ours = CosignatureSigner("witness.example.com/w1", key).cosign(text, 1679315147)
    # Our signature is over the spec's example message, byte for byte.
    key.verify_key.verify(SPEC_SIGNED_MESSAGE, ours.signature[8:])
    # The spec's own cosignature line: key ID, then the timestamp of its message example.
    spec_line = sigs[1]
    assert spec_line.name == "witness.example.com/w1"
    assert len(spec_line.signature) == 8 + 64
    assert int.from_bytes(spec_line.signature[:8], "big") == 1679315147


def test_timestamps_past_2_63_are_refused() -> None:
    key = SigningKey.generate()
    signer = CosignatureSigner(WITNESS_NAME, key)
    text = Checkpoint(LOG_ORIGIN, 1, bytes(32)).to_text()
    with pytest.raises(NoteError):
        signer.cosign(text, 2**63)
    # A validly signed line with timestamp 2^63 (made here by hand) is still refused.
    ts = 2**63
    sig = key.sign(b"cosignature/v1\ntime %d\n" % ts + text.encode()).signature
    line = NoteSignature(WITNESS_NAME, signer.key_hash, ts.to_bytes(8, "big") + sig)
    assert signer.verifier.verify(text, line) is None


def test_parse_cosigner_vkey_is_strict() -> None:
    pub = bytes(SigningKey.generate().verify_key)
    good = spec_vkey(WITNESS_NAME, pub)
    assert parse_cosigner_vkey(good).vkey == good
    note_vkey = LogKey(WITNESS_NAME, SigningKey.generate()).verifier.vkey  # type 0x01
    bad_hash = good.replace(good.split("+")[1], "00000000")
    for bad in (note_vkey, bad_hash, good + "A", "no-plus-signs", f"a b+{good.split('+', 1)[1]}"):
        with pytest.raises(NoteError):
            parse_cosigner_vkey(bad)


def test_cosignatures_on_a_note() -> None:
    log = Log()
    w1, w2 = SigningKey.generate(), SigningKey.generate()
    s1 = CosignatureSigner(WITNESS_NAME, w1)
    s2 = CosignatureSigner("witness.test/w2", w2)
    note = log.checkpoint(5)
    text, _ = split_note(note)
    l1, l2 = s1.cosign(text, NOW).line(), s2.cosign(text, NOW + 5).line()
    cosigned = note + l1 + l2
    assert cosignatures(cosigned, [s1.verifier, s2.verifier]) == [
        (s1.verifier, NOW),
        (s2.verifier, NOW + 5),
    ]
    assert cosignatures(cosigned, [s2.verifier]) == [(s2.verifier, NOW + 5)]  # unknown: ignored
    assert open_note(cosigned, [log.key.verifier]).verified_names == [LOG_ORIGIN]
    # A known cosigner's line that does not verify makes the note malformed.
    forged = NoteSignature(WITNESS_NAME, s1.key_hash, NOW.to_bytes(8, "big") + bytes(64))
    with pytest.raises(NoteError, match="invalid cosignature"):
        cosignatures(note + forged.line(), [s1.verifier])


# -- the wire format ------------------------------------------------------------------------


def test_the_spec_request_example_parses_and_round_trips() -> None:
    req = AddCheckpointRequest.parse(SPEC_REQUEST)
    assert req.old_size == 20852014
    assert [base64.b64encode(h).decode()[:6] for h in req.proof] == [
        "PlRNCr",
        "jrJZDm",
        "5+pKlU",
        "/6WVhP",
    ]
    _, cp, sigs = req.parsed()
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert len(sigs) == 2
    assert req.to_body() == SPEC_REQUEST


def test_the_spec_response_example_parses() -> None:
    sigs = parse_cosignature_body(SPEC_RESPONSE)
    assert [s.name for s in sigs] == ["witness.example/w1"] * 2 + ["witness.example/w2"]
    assert all(len(s.signature) == 72 for s in sigs)
    assert "".join(s.line() for s in sigs).encode() == SPEC_RESPONSE
    for bad in (b"", b"\n" + SPEC_RESPONSE, SPEC_RESPONSE + b"\n", SPEC_RESPONSE[:-1]):
        with pytest.raises(ProtocolError):
            parse_cosignature_body(bad)
    assert parse_conflict_body(b"20852014\n") == 20852014
    for bad in (b"012\n", b"12", b"12\r\n", b"-1\n"):
        with pytest.raises(ProtocolError):
            parse_conflict_body(bad)


def _malformed_requests() -> list[bytes]:
    good = SPEC_REQUEST
    head, _, rest = good.partition(b"\n")
    h = base64.b64encode(bytes(32))
    return [
        good.replace(b"old 20852014", b"old 020852014"),
        good.replace(b"old 20852014", b"old -1"),
        good.replace(b"old 20852014", b"old  20852014"),
        good.replace(b"old 20852014", b"Old 20852014"),
        good.replace(b"old 20852014\n", b"old 20852014\r\n"),
        good.replace(b"old 20852014", "old \u0661".encode()),  # a non-ASCII digit
        good.replace(b"PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=", b"PlRNCr"),
        good.replace(b"PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=", base64.b64encode(b"x" * 31)),
        good.replace(b"Pd8=", b"Pd9="),  # non-canonical base64
        head + b"\n" + b"\n".join([h] * 64) + b"\n\n" + rest.partition(b"\n\n")[2],
        b"old 1\n" + rest.partition(b"\n\n")[2].replace(b"\n\n", b"\n"),  # no empty line
        b"old 0\n\n" + b"not a checkpoint\n",
        b"old 0\n\nexample.com/x\n1\nAAAA\n\n\xe2\x80\x94 k AAAAAAAA\n",  # short root hash
        b"old 0\n\n\xff\n",
        b"old 0\n\n" + b"x" * (64 * 1024),
    ]


@pytest.mark.parametrize("body", _malformed_requests())
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        AddCheckpointRequest.parse(body)


# -- every status over HTTP -----------------------------------------------------------------


def test_spec_example_against_a_witness(served: Served, tmp_path: Path) -> None:
    # Its origin is unknown here: 404.
    assert served.post(SPEC_REQUEST)[0] == 404
    # A witness trusting some other key named for that origin finds no trusted signature.
    other = Log("example.com/behind-the-sofa")
    witness, server = start_witness(tmp_path / "other.db", SigningKey.generate(), [other])
    served.extra.append(server)
    witness.state.close()  # (its connections are opened on demand)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/add-checkpoint", body=SPEC_REQUEST)
    resp = conn.getresponse()
    assert resp.status == 403, resp.read()
    conn.close()


def test_200_then_409_then_consistent_advance(served: Served) -> None:
    log = served.log
    first = served.add(0, 5)
    assert first.accepted, first
    (sig,) = first.cosignatures
    text = Checkpoint(LOG_ORIGIN, 5, log.root(5)).to_text()
    assert spec_check(WITNESS_NAME, served.pub, text, sig.line()) > 0
    assert cosignatures(log.checkpoint(5) + sig.line(), [served.witness.verifier])

    # A stale old size: 409 with the size it cosigned, as text/x.tlog.size.
    status, ctype, body = served.post(log.body(0, 9))
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"5\n")
    conflict = served.add(3, 9)
    assert (conflict.kind, conflict.size) == ("conflict", 5)

    advanced = served.add(5, 9)
    assert advanced.accepted
    assert served.stored_size() == 9
    # The same checkpoint again: cosigned again (same size, same root).
    assert served.add(9, 9).accepted
    # A smaller checkpoint is never cosigned: its old size cannot match.
    smaller = served.add(9, 4)
    assert (smaller.kind, smaller.status) == ("refused", 400)
    assert served.add(0, 4).kind == "conflict"
    assert served.stored_size() == 9


def test_400_malformed_and_old_above_size(served: Served) -> None:
    log = served.log
    status, ctype, body = served.post(b"old 01\n\n" + log.checkpoint(3).encode())
    assert status == 400 and ctype.startswith("text/plain") and b"old" in body
    body_8_to_3 = AddCheckpointRequest(8, [], log.checkpoint(3)).to_body()
    status, _, body = served.post(body_8_to_3)
    assert status == 400 and b"above checkpoint size" in body
    assert b"Traceback" not in body


def test_404_unknown_origin(served: Served) -> None:
    stranger = Log("log.test/stranger")
    result = served.add(0, 3, stranger)
    assert (result.kind, result.status) == ("refused", 404)


def test_403_untrusted_or_bad_signature(served: Served) -> None:
    impostor = Log(LOG_ORIGIN)  # same origin, another key
    assert served.add(0, 3, impostor).status == 403
    # The trusted key's name and hash, but a signature that fails: a malformed note.
    note = served.log.checkpoint(3)
    text, (sig,) = split_note(note)
    bad = NoteSignature(sig.name, sig.key_hash, bytes(64))
    result = wclient.add_checkpoint(served.url, 0, [], text + "\n" + bad.line())
    assert result.status == 403
    # ... even beside a good one. (A key's later lines are skipped unread, as sumdb/note and
    # so Go witnesses do: it is the first line of a key that counts.)
    result = wclient.add_checkpoint(served.url, 0, [], text + "\n" + bad.line() + sig.line())
    assert result.status == 403
    assert served.stored_size() == -1


def test_422_cases(served: Served) -> None:
    log = served.log
    # A tree of size 0 must have the empty root.
    zero = sign_note(Checkpoint(LOG_ORIGIN, 0, bytes(32)).to_text(), [log.key.note_signer])
    assert wclient.add_checkpoint(served.url, 0, [], zero).status == 422
    # Old size 0 takes no proof.
    r = wclient.add_checkpoint(served.url, 0, [bytes(32)], log.checkpoint(4))
    assert r.status == 422 and "empty" in r.message
    empty = sign_note(Checkpoint(LOG_ORIGIN, 0, EMPTY_ROOT).to_text(), [log.key.note_signer])
    assert wclient.add_checkpoint(served.url, 0, [], empty).accepted
    assert served.add(0, 8).accepted
    # A proof that does not verify.
    proof = log.proof(8, 13)
    proof[0] = bytes(32)
    r = wclient.add_checkpoint(served.url, 8, proof, log.checkpoint(13))
    assert r.status == 422 and "not consistent" in r.message
    # The right proof, for another tree.
    other = Log(LOG_ORIGIN, log.key.signing_key, seed="fork ")
    assert served.add(8, 13, other).status == 422
    # The same size with another root: tlog-witness says 409 Conflict, with the size held.
    r = served.add(8, 8, other)
    assert (r.kind, r.status, r.size) == ("conflict", 409, 8)
    status, content_type, body = served.post(
        AddCheckpointRequest(8, [], other.checkpoint(8)).to_body()
    )
    assert (status, content_type, body) == (409, "text/x.tlog.size", b"8\n")
    assert served.add(8, 8).accepted  # the same root again: cosigned again
    assert served.stored_size() == 8
    refused = served.witness.state.refusals()
    # Each kept, as evidence: the two same-size ones are two roots signed for size 8.
    assert [r.status for r in refused] == [409, 409] + [422] * 4
    assert refused[0].reason == "another root for the cosigned size 8"
    assert other.checkpoint(8).encode() in refused[0].body
    assert refused[2].reason.startswith("not consistent") and b"old 8\n" in refused[2].body
    assert served.add(8, 13).accepted  # the real log carries on


def test_monitoring_checkpoint(served: Served) -> None:
    assert wclient.get_checkpoint(served.url, LOG_ORIGIN) is None
    assert served.add(0, 6).accepted
    note = wclient.get_checkpoint(served.url, LOG_ORIGIN)
    assert note is not None
    opened = open_note(note, [served.log.key.verifier])
    assert opened.text == Checkpoint(LOG_ORIGIN, 6, served.log.root(6)).to_text()
    (line,) = witness_lines(note)
    spec_check(WITNESS_NAME, served.pub, opened.text, line)
    path = f"/{hashlib.sha256(LOG_ORIGIN.encode()).hexdigest().upper()}/checkpoint"
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request("GET", path)
    assert conn.getresponse().status == 404  # the hash is lowercase hex
    conn.close()
    assert wclient.get_checkpoint(served.url, "log.test/stranger") is None


def test_http_hygiene(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    # Keep-alive: several exchanges on one connection.
    for _ in range(2):
        conn.request("POST", "/add-checkpoint", body=served.log.body(0, 2))
        resp = conn.getresponse()
        resp.read()
    assert resp.status == 409 and resp.getheader("Connection") != "close"
    conn.request("GET", "/add-checkpoint")
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Allow")) == (405, "POST")
    resp.read()
    conn.request("GET", "/nothing/here")
    resp = conn.getresponse()
    assert resp.status == 404
    resp.read()
    conn.close()
    # No Content-Length: refused, not read until the client gives up.
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as s:
        s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    # A body over 64 KiB is refused before it is read.
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as s:
        s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    status, _, body = served.post(b"\xff" * 10)
    assert status == 400 and b"UTF-8" in body
    # An internal failure (here: the state closed under it) is a bare 500, no traceback.
    served.witness.state.close()
    status, _, body = served.post(served.log.body(0, 2))
    assert (status, body) == (500, b"internal error\n")


def test_connections_are_capped(served: Served, tmp_path: Path) -> None:
    witness, server = start_witness(
        tmp_path / "capped.db", SigningKey.generate(), [served.log], max_connections=1
    )
    served.extra.append(server)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
            held.sendall(b"GET /x")  # an unfinished request holds the one slot
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                assert second.recv(100).startswith(b"HTTP/1.1 503")
        for _ in range(100):  # the slot comes back when the held connection closes
            result = wclient.add_checkpoint(server.url, 0, [], served.log.checkpoint(1))
            if result.accepted:
                break
            time.sleep(0.05)
        assert result.accepted
    finally:
        witness.state.close()


def test_unreachable_witness() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    result = wclient.add_checkpoint(f"http://127.0.0.1:{port}", 0, [], Log().checkpoint(1))
    assert result.kind == "unreachable" and result.message


# -- atomicity and durability ---------------------------------------------------------------


def test_concurrent_requests_never_roll_back(served: Served) -> None:
    """Requests racing from the same old size: exactly one is cosigned, the others get 409,
    and the stored size is the winner's (never a smaller one written after it)."""
    assert served.add(0, 10).accepted
    size = 10
    for _ in range(6):
        sizes = [size + k for k in (1, 2, 3, 5, 8, 13, 21, 34)]
        bodies = [served.log.body(size, n) for n in sizes]
        start = threading.Barrier(len(bodies))
        results: dict[int, int] = {}

        def send(
            n: int, body: bytes, start: threading.Barrier = start, results: dict[int, int] = results
        ) -> None:
            start.wait()
            results[n] = served.post(body)[0]

        threads = [
            threading.Thread(target=send, args=(n, b)) for n, b in zip(sizes, bodies, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [n for n, status in results.items() if status == 200]
        assert len(won) == 1, results
        assert sorted(results.values()) == [200] + [409] * (len(sizes) - 1)
        assert served.stored_size() == won[0]
        size = won[0]
        note = served.witness.state.get(LOG_ORIGIN)
        assert note is not None and f"\n{size}\n" in note.checkpoint


def test_state_survives_a_restart(served: Served) -> None:
    assert served.add(0, 7).accepted
    served.server.stop()
    served.witness.state.close()
    witness, server = start_witness(
        served.state_path, SigningKey.generate(), [served.log]
    )  # a new object on the same file (even a new witness key)
    served.extra.append(server)
    try:
        again = wclient.add_checkpoint(server.url, 0, [], served.log.checkpoint(9))
        assert (again.kind, again.size) == ("conflict", 7)
        assert wclient.add_checkpoint(
            server.url, 7, served.log.proof(7, 9), served.log.checkpoint(9)
        ).accepted
    finally:
        witness.state.close()
    reopened = WitnessState(served.state_path, create=False)
    stored = reopened.get(LOG_ORIGIN)
    reopened.close()
    assert stored is not None and stored.size == 9 and stored.root_hash == served.log.root(9)


# -- a real ledger --------------------------------------------------------------------------


def _submit_reports(
    submit: Callable[[bytes], object], parties: Parties, n: int, lat: float
) -> None:
    for i in range(n):
        r = report("ARM", lat=lat + i * 0.0001, narrative=f"Shots heard, report {lat} {i}.")
        submit(signed(r, parties.arm_monitor))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_real_ledger_and_a_diverging_history(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    parties = running.parties
    log_key = LogKey(ORIGIN, parties.log)
    witness_key = SigningKey.generate()
    witness = Witness(
        CosignatureSigner(WITNESS_NAME, witness_key),
        {ORIGIN: [log_key.verifier]},
        WitnessState(tmp_path / "w.db"),
    )
    server = serve(witness, "127.0.0.1", 0)
    server.start()
    pub = bytes(witness_key.verify_key)
    try:
        client = running.client
        _submit_reports(client.submit, parties, 2, 40.8811)
        cp1 = client.checkpoint()
        first = wclient.add_checkpoint(server.url, 0, [], cp1.signed_note)
        assert first.accepted, first
        _submit_reports(client.submit, parties, 3, 40.8820)
        cp2 = client.checkpoint()
        proof = list(client.consistency_proof(cp1.tree_size, cp2.tree_size).hashes)
        second = wclient.add_checkpoint(server.url, cp1.tree_size, proof, cp2.signed_note)
        assert second.accepted, second
        text, _ = split_note(cp2.signed_note)
        (sig,) = second.cosignatures
        assert spec_check(WITNESS_NAME, pub, text, sig.line()) > 0
        assert [v for v, _ in cosignatures(cp2.signed_note + sig.line(), [witness.verifier])] == [
            witness.verifier
        ]

        # Another history under the same key and trust root: the log forked.
        store = LedgerStore.open(f"sqlite:///{tmp_path / 'fork.db'}")
        initialize(store, parties.founding_envelope(borders), log_key, borders)
        fork = Ledger(store, log_key, borders)
        try:
            _submit_reports(fork.submit, parties, 7, 40.8900)
            fcp = fork.checkpoint()
            assert fcp.size > cp2.tree_size
            conflict = wclient.add_checkpoint(server.url, 0, [], fcp.note)
            assert (conflict.kind, conflict.size) == ("conflict", cp2.tree_size)
            _, fproof = fork.consistency_proof(cp2.tree_size, fcp.size)
            refused = wclient.add_checkpoint(server.url, cp2.tree_size, fproof, fcp.note)
            assert (refused.kind, refused.status) == ("refused", 422), refused
        finally:
            fork.close()
            store.close()
        (evidence,) = witness.state.refusals()
        assert fcp.note.encode() in evidence.body  # the log's signature on the fork, kept
        stored = witness.state.get(ORIGIN)
        assert stored is not None and stored.size == cp2.tree_size
        assert wclient.get_checkpoint(server.url, ORIGIN) == stored.checkpoint
    finally:
        server.stop()
        witness.state.close()


# -- the CLI, as a user runs it --------------------------------------------------------------


def ceasefire(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`ceasefire ARGS` in this process (tests.cli_runner)."""
    return cli_runner.run(*args, cwd=cwd)


class WitnessProcess:
    """`ceasefire witness serve` as its own process: it serves until SIGTERM, which it
    handles itself, so it cannot run in the test's process."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "witness", "serve", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=(cwd / "witness.log").open("a"),
            text=True,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(Path(__file__).parent.parent),
            },
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"serving 1 log\(s\) on (http://127\.0\.0\.1:\d+);", line)
        assert m, f"witness did not start: {line!r} {(cwd / 'witness.log').read_text()}"
        self.url = m.group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def test_cli_init_serve_show(tmp_path: Path) -> None:
    made = ceasefire(
        "witness", "init", "--name", WITNESS_NAME, "--key", "w.key", "--state", "w.db", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["state"] == "w.db" and (tmp_path / "w.db").is_file()
    key = keys.read_private(tmp_path / "w.key")
    pub = bytes(key.verify_key)
    assert doc["vkey"] == spec_vkey(WITNESS_NAME, pub) and doc["public_key_hex"] == pub.hex()
    assert stat.S_IMODE((tmp_path / "w.key").stat().st_mode) == 0o600
    again = ceasefire("witness", "init", "--name", WITNESS_NAME, "--key", "w.key", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr

    log = Log()
    args = ("--key", "w.key", "--state", "w.db", "--log", log.key.verifier.vkey,
            "--listen", "127.0.0.1:0")  # fmt: skip
    proc = WitnessProcess(tmp_path, *args)
    try:
        result = wclient.add_checkpoint(proc.url, 0, [], log.checkpoint(5))
        assert result.accepted, result
        (sig,) = result.cosignatures
        spec_check(WITNESS_NAME, pub, Checkpoint(LOG_ORIGIN, 5, log.root(5)).to_text(), sig.line())
    finally:
        assert proc.stop() == 0
    shown = ceasefire("witness", "show", "--state", "w.db", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["logs"]
    assert (entry["origin"], entry["size"]) == (LOG_ORIGIN, 5)
    assert base64.b64decode(entry["root_hash"]) == log.root(5)

    # A new process on the same state remembers size 5.
    proc = WitnessProcess(tmp_path, *args)
    try:
        assert wclient.add_checkpoint(proc.url, 0, [], log.checkpoint(6)).size == 5
    finally:
        assert proc.stop() == 0

    missing = ceasefire("witness", "show", "--state", "nothing.db", cwd=tmp_path)
    assert missing.returncode == 2 and "no witness state file" in missing.stderr
    for other in ("w.key", "other.db"):  # neither is a witness's state: left as they are
        if other == "other.db":
            sqlite3.connect(tmp_path / other).execute("CREATE TABLE t (x)").connection.close()
        before = (tmp_path / other).read_bytes()
        wrong = ceasefire("witness", "serve", *args[:2], "--state", other, *args[4:], cwd=tmp_path)
        assert wrong.returncode == 2 and re.search(
            r"not a (witness state file|database)", wrong.stderr
        )
        assert (tmp_path / other).read_bytes() == before
    bad_log = ceasefire("witness", "serve", *args[:4], "--log", "nope", cwd=tmp_path)
    assert bad_log.returncode == 2 and bad_log.stderr.startswith("error: --log")


def test_serve_refuses_a_missing_state_file(tmp_path: Path) -> None:
    """A witness started on a missing state (a lost disk, a mistyped --state) would start
    from size 0 and cosign any history: refused, unless a new witness is asked for."""
    made = ceasefire("witness", "init", "--name", WITNESS_NAME, "--key", "w.key", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    log = Log()
    args = ("--key", "w.key", "--log", log.key.verifier.vkey, "--listen", "127.0.0.1:0")
    missing = ceasefire("witness", "serve", *args, "--state", "typo.db", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("error: typo.db: no witness state file;")
    assert "must be retired" in missing.stderr and "--new-state" in missing.stderr
    assert not (tmp_path / "typo.db").exists()
    # An init that makes the key may not clobber a state either.
    (tmp_path / "kept.db").write_bytes(b"")
    clobber = ceasefire(
        "witness", "init", "--name", WITNESS_NAME, "--key", "w2.key", "--state", "kept.db",
        cwd=tmp_path,
    )  # fmt: skip
    assert clobber.returncode == 2 and "kept.db exists" in clobber.stderr
    assert not (tmp_path / "w2.key").exists()

    # --new-state: a new witness, deliberately. It starts, and cosigns from size 0.
    proc = WitnessProcess(tmp_path, *args, "--state", "new.db", "--new-state")
    try:
        assert wclient.add_checkpoint(proc.url, 0, [], log.checkpoint(3)).accepted
    finally:
        assert proc.stop() == 0
    # ... and never over an existing state: that would be a witness starting again.
    again = ceasefire("witness", "serve", *args, "--state", "new.db", "--new-state", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("error: new.db exists")
    proc = WitnessProcess(tmp_path, *args, "--state", "new.db")  # as it holds it: size 3
    try:
        assert wclient.add_checkpoint(proc.url, 0, [], log.checkpoint(4)).size == 3
    finally:
        assert proc.stop() == 0
