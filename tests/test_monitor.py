"""`ceasefire monitor` against real gRPC servers: each run verifies only what is new, alerts
on watched keys and key changes, and a log that shows two histories (two servers sharing
the log key and a common prefix, then diverging) leaves split evidence that an independent
check (PyNaCl and hashlib only, from the C2SP signed-note and RFC 9162 texts) confirms.
Also the exit codes and the state `verify --state` keeps (an older checkpoint after a
newer one).

The commands run in the test's process (`main`), except test_interval_runs_until_sigterm: a
real `monitor --interval` process, which runs until a signal its own handler catches."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ceasefire.v1 import statements_pb2 as pb
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import text

from clients.cli import main
from clients.client import LedgerClient
from clients.monitor import Monitor, Options, RunResult
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, RunningLedger
from tests.reports import report, signed

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
pytestmark = SQLITE_ONLY  # what the server stores in is not what is tested here
PLACES = [(40.8811, 45.3875), (41.0933, 45.3661), (40.9650, 45.1700)]


def _report(running: RunningLedger, party: str = "ARM", n: int = 0, key: Any = None) -> None:
    p = running.parties
    lat, lon = PLACES[n % len(PLACES)]
    r = report(party, lat=lat + n * 1e-3, lon=lon, narrative=f"report {n} by {party}")
    signer = key or (p.arm_monitor if party == "ARM" else p.aze_monitor)
    running.client.submit(signed(r, signer))


def _fill(running: RunningLedger, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        _report(running, ("ARM", "AZE")[n % 2], n)


def _run(
    address: str, state_dir: Path, borders: BorderDataset, **options: Any
) -> tuple[RunResult, list[dict[str, Any]]]:
    """One monitor run; its result and the alerts it printed."""
    out = io.StringIO()
    stop = options.pop("stop", None)
    with LedgerClient(address) as client:
        monitor = Monitor(
            client,
            Options(state_dir, borders=(borders,), workers=0, **options),
            out=out,
            err=io.StringIO(),
            progress=Progress(quiet=True),
            stop=stop,
        )
        result = monitor.run_once()
    return result, [json.loads(line) for line in out.getvalue().splitlines()]


def _rewrite_entry(store: LedgerStore, index: int) -> None:
    """What an operator with the database can do: flip a byte of a stored entry."""
    with store.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS entries_no_update"))
        data = conn.execute(
            text("SELECT entry FROM entries WHERE idx = :i"), {"i": index}
        ).scalar_one()
        tampered = bytearray(data)
        tampered[-3] ^= 0x01  # inside the validation facts: no author's signature covers them
        conn.execute(
            text("UPDATE entries SET entry = :e WHERE idx = :i"), {"e": bytes(tampered), "i": index}
        )


# -- incremental, resumable ----------------------------------------------------------------


def test_a_second_run_reads_only_what_is_new(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    state = tmp_path / "mon"
    _fill(running, 3)
    first, _ = _run(running.address, state, borders)
    assert (first.code, first.verdict, first.tree_size, first.fetched) == (0, "first", 4, 4)

    _fill(running, 2, start=3)
    # An old entry altered on the server after it was verified: not read again (the
    # consistency proof comes from the stored tree, which still holds the original).
    _rewrite_entry(running.ledger.store, 2)
    second, _ = _run(running.address, state, borders)
    assert (second.code, second.verdict, second.tree_size, second.fetched) == (0, "advance", 6, 2)

    again, _ = _run(running.address, state, borders)
    assert (again.code, again.verdict, again.fetched) == (0, "same", 0)

    _fill(running, 3, start=5)
    _rewrite_entry(running.ledger.store, 7)  # a NEW entry altered: caught, by its index
    third, alerts = _run(running.address, state, borders)
    assert third.code == 3 and third.index == 7, third.error
    assert "not included in the signed checkpoint of size 9" in (third.error or "")
    assert alerts[-1]["alert"] == "tampered" and alerts[-1]["index"] == 7
    seen = [json.loads(line) for line in (state / "checkpoints.jsonl").read_text().splitlines()]
    assert [(s["size"], s["verdict"]) for s in seen] == [
        (4, "first"), (6, "advance"), (6, "same"), (9, "advance"),
    ]  # fmt: skip


def test_a_stopped_run_resumes_where_it_was_saved(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    state = tmp_path / "mon"
    _fill(running, 6)
    stop = threading.Event()
    stop.set()  # as SIGTERM would: the run stops after the next entry, saved
    stopped, _ = _run(running.address, state, borders, stop=stop)
    assert stopped.stopped and stopped.fetched >= 2
    resumed, _ = _run(running.address, state, borders)
    assert resumed.code == 0 and resumed.verdict == "first" and resumed.tree_size == 7
    assert stopped.fetched + resumed.fetched == 7  # nothing fetched twice


def test_a_state_of_another_version_is_refused(
    running: RunningLedger, borders: BorderDataset, tmp_path: Path
) -> None:
    import pickle

    state = tmp_path / "mon"
    assert _run(running.address, state, borders)[0].code == 0
    doc = pickle.loads((state / "monitor.state").read_bytes())
    doc["schema"] = "0" * 16
    (state / "monitor.state").write_bytes(pickle.dumps(doc))
    result, _ = _run(running.address, state, borders)
    assert result.code == 1
    assert "written by another version of ceasefire" in (result.error or "")


# -- alerts ----------------------------------------------------------------------------------


def test_alerts_on_a_watched_key_and_on_a_key_change(
    running: RunningLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = running.parties
    state, hooked = tmp_path / "mon", tmp_path / "hooked.jsonl"
    args = ["monitor", "--server", running.address, "--state-dir", str(state),
            "--watch", "ARM", "--hook", f"cat >> {hooked}", "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    new_key = SigningKey.generate()
    added = pb.KeyChange(
        party="ARM",
        created_time=to_timestamp(now_us()),
        add=[pb.PartyKey(public_key=keys.public_bytes(new_key), role=pb.ROLE_MONITOR)],
    )
    change = dsse.sign(statements.KEY_CHANGE, added.SerializeToString(), [p.arm_authority])
    running.client.submit(change.to_json())  # entry 1
    _report(running, "AZE", 1)  # entry 2: not watched
    _report(running, "ARM", 2, key=new_key)  # entry 3: by the key just added
    assert main(args) == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    new_id, authority_id = (
        dsse.key_id(keys.public_bytes(new_key)),
        dsse.key_id(keys.public_bytes(p.arm_authority)),
    )
    assert [(a["alert"], a["index"]) for a in alerts] == [
        ("trust", 1), ("signed", 1), ("signed", 3),
    ]  # fmt: skip
    trust = alerts[0]
    assert trust["statement"] == "KeyChange" and trust["party"] == "ARM"
    assert trust["changes"]["keys_added"] == [{"key_id": new_id, "party": "ARM", "role": "monitor"}]
    assert (alerts[1]["key_id"], alerts[1]["role"]) == (authority_id, "authority")
    assert (alerts[2]["key_id"], alerts[2]["party"]) == (new_id, "ARM")
    assert alerts[2]["payload_type"] == statements.payload_type(pb.IncidentReport)
    # The hook had each alert on its stdin (the first run's: the trust root, a key event
    # signed by ARM's authority among others).
    given = [json.loads(line) for line in hooked.read_text().splitlines()]
    assert [(a["alert"], a["index"]) for a in given[:2]] == [("trust", 0), ("signed", 0)]
    assert given[2:] == alerts


def test_a_failing_hook_is_exit_code_1(
    running: RunningLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["monitor", "--server", running.address, "--state-dir", str(tmp_path / "m"),
            "--hook", "exit 7"]  # fmt: skip
    assert main(args) == 1
    assert "the hook exited 7 on a trust alert" in capsys.readouterr().err


# -- exit codes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exit_codes_verified_evidence_unreachable(
    running: RunningLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running, 2)
    state = str(tmp_path / "m")
    assert main(["monitor", "--server", running.address, "--state-dir", state]) == 0
    nobody = f"127.0.0.1:{_free_port()}"
    capsys.readouterr()
    assert main(["monitor", "--server", nobody, "--state-dir", state, "--json"]) == 4
    run = json.loads(capsys.readouterr().out)["run"]
    assert (run["ok"], run["exit"]) == (False, 4) and "UNAVAILABLE" in run["error"]
    for command in (["verify"], ["checkpoint"], ["proof", "inclusion", "--index", "0"]):
        assert main([command[0], "--server", nobody, *command[1:]]) == 4, command
    capsys.readouterr()

    _fill(running, 1, start=2)
    _rewrite_entry(running.ledger.store, 3)
    assert main(["monitor", "--server", running.address, "--state-dir", state]) == 3
    assert "VERIFICATION FAILED: entry 3:" in capsys.readouterr().err
    # verify: the same evidence is 3, and with --json a document on stdout.
    assert main(["verify", "--server", running.address, "--json"]) == 3
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False and doc["exit"] == 3 and doc["index"] == 3
    assert "not included in the signed checkpoint" in doc["error"]
    assert "VERIFICATION FAILED: entry 3:" in captured.err


def test_interval_runs_until_sigterm(running: RunningLedger, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "monitor", "--server", running.address,
         "--state-dir", str(tmp_path / "m"), "--interval", "0.2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    runs = 0
    try:
        for line in proc.stdout:
            if line.startswith('{"run"'):
                runs += 1
                assert json.loads(line)["run"]["exit"] == 0
            if runs == 3:
                break
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


# -- a log with two histories ---------------------------------------------------------------


@dataclass
class Replica:
    ledger: Ledger
    server: LedgerServer
    address: str
    client: LedgerClient


@pytest.fixture
def copies(running: RunningLedger, borders: BorderDataset, tmp_path: Path) -> Iterator[Any]:
    """make(name): a second server on a copy of the ledger as it stands now, signing with
    the same log key: it shares the prefix, then goes its own way."""
    made: list[tuple[Replica, LedgerStore]] = []

    def make(name: str) -> Replica:
        path = tmp_path / f"{name}.db"
        source = sqlite3.connect(running.db_url.removeprefix("sqlite:///"))
        copy = sqlite3.connect(path)
        source.backup(copy)
        source.close()
        copy.close()
        store = LedgerStore.open(f"sqlite:///{path}")
        ledger = Ledger(store, LogKey(ORIGIN, running.parties.log), borders)
        server, port = build_server(ledger, "127.0.0.1:0", spool_dir=tmp_path / f"{name}-up")
        server.start()
        replica = Replica(ledger, server, f"127.0.0.1:{port}", LedgerClient(f"127.0.0.1:{port}"))
        replica.client.wait_ready()
        made.append((replica, store))
        return replica

    yield make
    for replica, store in made:
        replica.client.close()
        replica.server.stop(grace=None).wait()
        replica.ledger.close()
        store.close()


def _on(replica: Replica, running: RunningLedger) -> RunningLedger:
    return RunningLedger(replica.ledger, replica.client, replica.address, "", running.parties)


def test_a_split_leaves_evidence_an_independent_check_confirms(
    running: RunningLedger, copies: Any, borders: BorderDataset, tmp_path: Path
) -> None:
    state = tmp_path / "mon"
    _fill(running, 2)  # entries 0..2 shared
    other = copies("other")
    _fill(running, 2, start=2)  # A: 3, 4
    assert _run(running.address, state, borders)[0].tree_size == 5
    forked = _on(other, running)
    _report(forked, "AZE", 50)  # B's own entry 3

    # B at size 4: older than the 5 accepted, and not its prefix.
    older, alerts = _run(other.address, state, borders)
    _report(forked, "ARM", 51)
    # B at size 5: the same size as accepted, another root.
    same, _ = _run(other.address, state, borders)
    _report(forked, "AZE", 52)
    _report(forked, "ARM", 53)
    # B at size 7: an advance whose consistency proof from 5 fails.
    advance, _ = _run(other.address, state, borders)

    results = {"older_not_prefix": older, "same_size": same, "inconsistent_advance": advance}
    log_key = keys.public_bytes(running.parties.log)
    for kind, result in results.items():
        assert result.code == 3 and result.evidence is not None, result.error
        assert result.index == 3  # the first entry whose leaf differs
        evidence = json.loads(Path(result.evidence).read_text())
        assert evidence["kind"] == kind
        _independent_check(evidence, log_key)
        assert main(["monitor", "check-split", result.evidence,
                     "--log-key", evidence["log_key"]]) == 3  # fmt: skip
    assert alerts[-1]["alert"] == "split" and alerts[-1]["evidence"] == older.evidence
    # A's view is still the one accepted: A itself stays fine.
    assert _run(running.address, state, borders)[0].verdict == "same"

    # The offline check can fail: another log key, or a note that is not the log's.
    evidence = json.loads(Path(advance.evidence or "").read_text())
    other_key = LogKey(ORIGIN, SigningKey.generate()).verifier.vkey
    assert main(["monitor", "check-split", advance.evidence or "", "--log-key", other_key]) == 0
    honest = dict(evidence, second=evidence["first"], consistency=None, leaf_conflict=None)
    path = tmp_path / "honest.json"
    path.write_text(json.dumps(honest))
    assert main(["monitor", "check-split", str(path), "--log-key", evidence["log_key"]]) == 0


# An independent check of the evidence: PyNaCl and hashlib only, no ledger module.


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _open_note(note: str, name: str, public_key: bytes) -> tuple[str, int, bytes]:
    """C2SP signed-note: text, a blank line, lines "— <name> <base64(keyhash[4] || sig)>";
    the key hash is SHA-256(name || 0x0A || 0x01 || key)[:4]; Ed25519 over the text. The
    text is a C2SP tlog-checkpoint: origin, size, base64 root hash."""
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    key_hash = _h(name.encode(), b"\n", b"\x01", public_key)[:4]
    signed_by_log = False
    for line in signatures.splitlines():
        who, raw = line.removeprefix("\u2014 ").split(" ")
        blob = base64.b64decode(raw)
        if who == name and blob[:4] == key_hash:
            try:
                VerifyKey(public_key).verify(text.encode(), blob[4:])
                signed_by_log = True
            except BadSignatureError:
                pass
    assert signed_by_log, "not signed by the log key"
    origin, size, root = text.splitlines()[:3]
    assert origin == name
    return origin, int(size), base64.b64decode(root)


def _consistency(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, as written there."""
    if m == n:
        return old == new and not proof
    if m & (m - 1) == 0:
        proof = [old, *proof]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _h(b"\x01", c, fr), _h(b"\x01", c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01", sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old and sr == new


def _inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2, as written there."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01", p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01", r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def _independent_check(evidence: dict[str, Any], log_key: bytes) -> None:
    first = _open_note(evidence["first"]["note"], ORIGIN, log_key)
    second = _open_note(evidence["second"]["note"], ORIGIN, log_key)
    (_, size_a, root_a), (_, size_b, root_b) = first, second
    assert (size_a, root_a) != (size_b, root_b)
    c = evidence["consistency"]
    old, new = sorted([(size_a, root_a), (size_b, root_b)])
    hashes = [bytes.fromhex(x) for x in c["hashes"]]
    assert (c["old_size"], c["new_size"]) == (old[0], new[0])
    assert not _consistency(old[0], new[0], old[1], new[1], hashes)  # the proof fails
    if old[0] < new[0] and c["older_root_in_newer_tree"]:
        # ... and it is the newer tree's own proof: from its prefix root, not the older's.
        prefix = bytes.fromhex(c["older_root_in_newer_tree"])
        assert _consistency(old[0], new[0], prefix, new[1], hashes) and prefix != old[1]
    # One entry, two leaves, each proven in its signed tree.
    conflict = evidence["leaf_conflict"]
    index = conflict["index"]
    sides = [(conflict["first"], size_a, root_a), (conflict["second"], size_b, root_b)]
    leaves = set()
    for side, size, root in sides:
        leaf = bytes.fromhex(side["leaf_hash"])
        proof = [bytes.fromhex(x) for x in side["proof"]]
        assert side["tree_size"] == size and _inclusion(index, size, leaf, proof, root)
        leaves.add(leaf)
    assert len(leaves) == 2


# -- verify --state: an older checkpoint after a newer one ----------------------------------


def test_an_older_bundle_after_a_newer_passes_another_history_fails(
    running: RunningLedger, copies: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running, 2)
    old, new, forked = (str(tmp_path / f"{n}.bundle") for n in ("old", "new", "forked"))
    assert main(["export", "--server", running.address, "--out", old]) == 0
    other = copies("other")
    _fill(running, 2, start=2)
    assert main(["export", "--server", running.address, "--out", new]) == 0
    _report(_on(other, running), "AZE", 50)
    _report(_on(other, running), "ARM", 51)
    assert main(["export", "--server", other.address, "--out", forked]) == 0
    state = tmp_path / "seen.checkpoint"
    capsys.readouterr()

    assert main(["verify", "--bundle", new, "--state", str(state), "--json"]) == 0
    kept = state.read_text()
    capsys.readouterr()
    assert main(["verify", "--bundle", old, "--state", str(state), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tree_size"] == 3 and doc["consistent_with_size"] == 5
    assert state.read_text() == kept  # the newer stays kept
    assert (tmp_path / "seen.checkpoint.leaves").stat().st_size == 5 * 32

    # Another history of the same size as the old one: refused, with its first leaf.
    assert main(["verify", "--bundle", forked, "--state", str(state)]) == 3
    said = capsys.readouterr().out  # verify's result, VERIFICATION FAILED too, is on stdout
    assert "entry 3: the checkpoint of size 5 verified before is not a prefix" in said
    assert state.read_text() == kept

    # A state written before the leaves were kept: the forward direction still works.
    (tmp_path / "seen.checkpoint.leaves").unlink()
    assert main(["verify", "--bundle", new, "--state", str(state)]) == 0
    assert (tmp_path / "seen.checkpoint.leaves").exists()  # and now keeps them


def test_a_lagging_server_passes_a_forked_one_fails(
    running: RunningLedger, copies: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running, 2)
    lagging = copies("lagging")  # the ledger as it stands: a replica that stopped here
    forked = copies("forked")
    _fill(running, 2, start=2)
    _report(_on(forked, running), "AZE", 50)
    state = str(tmp_path / "seen.checkpoint")
    assert main(["verify", "--server", running.address, "--state", state]) == 0
    kept = Path(state).read_text()
    capsys.readouterr()
    assert main(["verify", "--server", lagging.address, "--state", state, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tree_size"] == 3 and doc["consistent_with_size"] == 5
    assert Path(state).read_text() == kept
    assert main(["verify", "--server", forked.address, "--state", state]) == 3
    said = capsys.readouterr().out  # verify's result, VERIFICATION FAILED too, is on stdout
    assert "entry 3: the checkpoint of size 4 is not a prefix of the one of size 5" in said
