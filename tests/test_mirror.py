"""A read-only mirror seeded from offline bundles (issue 13, part C): it serves the log's
own signed checkpoint byte for byte, the same entries, proofs and derived views, passes
the online audit, refuses every submission, follows newer bundles of the same history,
and refuses, writing nothing, a bundle that does not verify or shows another history.

The origin logs run on SQLite files behind real gRPC servers; the mirror's database is
SQLite or PostgreSQL (`db_url`)."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey
from sqlalchemy import Engine, insert, inspect, select
from sqlalchemy.exc import DBAPIError

from clients import bundle
from clients.audit import audit
from clients.cli import main
from clients.client import LedgerClient
from clients.mirror_cli import verify
from geo.borders import BorderDataset
from ledger import keys, mirror, statements, storage
from ledger.clock import now_us, to_timestamp
from ledger.errors import Corrupt, FailedPrecondition
from ledger.formats import dsse
from ledger.formats.note import NoteSigner, add_signatures
from ledger.log_key import LogKey
from ledger.service import Checked, Ledger, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.serving.runtime import open_ledger
from ledger.storage import LedgerStore, create_ledger_engine
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed
from tests.test_witnessed import (  # noqa: F401 (fixture)
    ARM_WITNESS,
    AZE_WITNESS,
    POLICY,
    Witnessed,
    _witnessed_size,
    independent_cosigners,
    witnessed,
)

PLACES = [(40.8811, 45.3875), (41.0933, 45.3661), (40.9650, 45.1700), (41.0300, 45.0500)]
# The tables a mirror fills as the log's writer does, row for row.
DERIVED = (
    storage.entries,
    storage.statements,
    storage.tree_nodes,
    storage.tree_state,
    storage.incidents,
    storage.notices,
    storage.evidence_refs,
    storage.sighting_keys,
    storage.links,
    storage.blobs,
)


# -- logs, bundles and mirrors -------------------------------------------------------------


@dataclass
class Log:
    ledger: Ledger
    client: LedgerClient
    db: Path


def _found(db: Path, parties: Parties, borders: BorderDataset) -> None:
    store = LedgerStore.open(str(db))
    try:
        initialize(store, parties.founding_envelope(borders), LogKey(ORIGIN, parties.log), borders)
    finally:
        store.close()


def _fork(db: Path, copy: Path) -> None:
    """A second log with the same key and the same entries so far: a split view from here."""
    with (
        contextlib.closing(sqlite3.connect(db)) as a,
        contextlib.closing(sqlite3.connect(copy)) as b,
    ):
        a.backup(b)


@contextlib.contextmanager
def _serving(ledger: Ledger, spool: Path) -> Iterator[tuple[LedgerServer, LedgerClient]]:
    server, port = build_server(ledger, "127.0.0.1:0", spool_dir=spool)
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    client.wait_ready()
    try:
        yield server, client
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        ledger.store.close()


@contextlib.contextmanager
def _log(db: Path, parties: Parties, borders: BorderDataset) -> Iterator[Log]:
    ledger = Ledger(LedgerStore.open(str(db)), LogKey(ORIGIN, parties.log), borders)
    with _serving(ledger, db.with_suffix(".uploads")) as (_server, client):
        yield Log(ledger, client, db)


@contextlib.contextmanager
def _mirror(db_url: str, tmp_path: Path) -> Iterator[tuple[mirror.MirrorLedger, LedgerClient]]:
    """The mirror as `ceasefire serve --db` serves it: opened by the runtime, which finds
    no log key (there is none to find) and serves it read-only."""
    ledger = open_ledger(db_url, tmp_path / "there-is-no-log.key", workers=2)
    assert isinstance(ledger, mirror.MirrorLedger)
    with _serving(ledger, tmp_path / "mirror-uploads") as (_server, client):
        yield ledger, client


def _submit(client: LedgerClient, envelopes: list[bytes]) -> list[int]:
    results = client.submit_batch(envelopes)
    assert all(not isinstance(r, Exception) for r in results), results
    return [r.receipt.index for r in results]  # type: ignore[union-attr]


def _reports(p: Parties, n: int, salt: int) -> list[bytes]:
    """n reports from both sides at places along the border, over days."""
    out = []
    for i in range(n):
        party = ("ARM", "AZE")[i % 2]
        lat, lon = PLACES[i % len(PLACES)]
        r = report(
            party,
            lat=lat + (salt * 100 + i) * 1e-4,
            lon=lon,
            hours_ago=1 + (i * 7) % 60,
            narrative=f"Fire heard, report {salt}-{i}.",
        )
        out.append(signed(r, p.arm_monitor if party == "ARM" else p.aze_monitor))
    return out


def _sign(kind: str, statement: Message, key: SigningKey) -> bytes:
    return dsse.sign(kind, statement.SerializeToString(), [key]).to_json()


def _every_kind_of_view(log: Log, p: Parties) -> None:
    """Entries behind every derived view: likely duplicates, an amendment, a counter-claim,
    a retraction, an advance notice and a hotline message."""
    first, _twin, other = _submit(
        log.client,
        [
            signed(report("ARM", hours_ago=3, blames="AZE"), p.arm_monitor),
            signed(report("AZE", hours_ago=3, narrative="Shots near the post."), p.aze_monitor),
            signed(report("ARM", lat=41.0933, lon=45.3661, hours_ago=9), p.arm_monitor),
        ],
    )
    now = to_timestamp(now_us())
    hour = to_timestamp(now_us() + 3_600_000_000)
    corrected = report("ARM", lat=40.8830, lon=45.3900, hours_ago=3, narrative="Corrected.")
    for kind, statement, key in (
        (statements.AMENDMENT, pb.IncidentAmendment(
            incident_index=first, created_time=now, party="ARM", corrected=corrected,
            reason="the post's GPS was off")
         , p.arm_monitor),
        (statements.COUNTER_CLAIM, pb.CounterClaim(
            incident_index=first, created_time=now, party="AZE", kind=pb.RESPONSE_KIND_DENIAL,
            narrative="Not from our side.", narrative_language="en"), p.aze_authority),
        (statements.RETRACTION, pb.IncidentRetraction(
            incident_index=other, created_time=now, party="ARM", reason="double-counted"),
         p.arm_authority),
        (statements.NOTICE, pb.AdvanceNotice(
            created_time=now, party="AZE", activity=pb.ACTIVITY_KIND_DEMINING,
            window=pb.TimeWindow(start=now, end=hour, precision=pb.TIME_PRECISION_HOUR),
            location=pb.Location(point=pb.GeoPoint(latitude=40.99, longitude=45.63),
                                 uncertainty_m=2000, precision=pb.LOCATION_PRECISION_NEAR),
            description="Demining", description_language="en"), p.aze_authority),
        (statements.HOTLINE, pb.HotlineMessage(
            created_time=now, party="ARM", to_party="AZE", urgency=pb.HOTLINE_URGENCY_URGENT,
            text="Explosions near Tovuz?", text_language="en"), p.arm_monitor),
    ):  # fmt: skip
        log.client.submit(_sign(kind, statement, key))


def _export(log: Log, path: Path) -> Path:
    bundle.export_bundle(log.client, path)
    return path


def _rewrite(path: Path, out: Path, line: int, change: Any) -> Path:
    """A copy of a bundle with one JSON line changed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = json.loads(lines[line])
    change(doc)
    lines[line] = json.dumps(doc)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    def plain(v: Any) -> Any:
        return bytes(v) if isinstance(v, memoryview) else v

    with engine.connect() as conn:
        return {
            t.name: [
                tuple(plain(v) for v in r)
                for r in conn.execute(select(t).order_by(*t.primary_key.columns))
            ]
            for t in (*DERIVED, storage.checkpoints, mirror.mirror_of)
        }


def _mirror_rows(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_ledger_engine(db_url)
    try:
        return _rows(engine)
    finally:
        engine.dispose()


def _nothing_written(db_url: str) -> bool:
    if db_url.startswith("sqlite"):
        return not Path(db_url.removeprefix("sqlite:///")).exists()
    engine = create_ledger_engine(db_url)
    try:
        return inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def _same(a: Iterator[Message], b: Iterator[Message]) -> None:
    got = [m.SerializeToString() for m in a]
    assert got == [m.SerializeToString() for m in b]
    assert got


# -- the tests -----------------------------------------------------------------------------


def test_a_mirror_serves_what_the_log_serves_and_refuses_submissions(
    db_url: str,
    tmp_path: Path,
    parties: Parties,
    borders: BorderDataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = parties
    _found(tmp_path / "origin.db", p, borders)
    with _log(tmp_path / "origin.db", p, borders) as origin:
        _submit(origin.client, _reports(p, 30, salt=0))
        _every_kind_of_view(origin, p)
        path = _export(origin, tmp_path / "ledger.bundle")
        capsys.readouterr()
        assert main(["mirror", "init", "--bundle", str(path), "--db", db_url, "--json"]) == 0
        said = json.loads(capsys.readouterr().out)
        size = origin.client.checkpoint().tree_size
        assert (said["origin"], said["tree_size"]) == (ORIGIN, size)
        assert size == 39

        with _mirror(db_url, tmp_path) as (served, m):
            theirs, ours = origin.client.checkpoint(), m.checkpoint()
            assert ours.signed_note.encode() == theirs.signed_note.encode()
            assert (ours.tree_size, ours.root_hash) == (theirs.tree_size, theirs.root_hash)
            for index, at in [(0, 1), (0, size), (5, 17), (16, 17), (17, 32), (size - 1, size)]:
                _same(
                    iter([m.inclusion_proof(index, at)]),
                    iter([origin.client.inclusion_proof(index, at)]),
                )
            for old, new in [(1, size), (7, 20), (16, 32), (31, size), (size, size)]:
                _same(
                    iter([m.consistency_proof(old, new)]),
                    iter([origin.client.consistency_proof(old, new)]),
                )
            _same(m.entries(0, 0), origin.client.entries(0, 0))
            _same(m.timeline(), origin.client.timeline())
            _same(m.messages(), origin.client.messages())
            incidents = [t.index for t in origin.client.timeline()]
            _same(map(m.dossier, incidents), map(origin.client.dossier, incidents))
            for digest in {d for _, d in served.trust.dataset.files}:
                assert m.blob(digest) == origin.client.blob(digest)
            # The derived tables are the writer's, row for row; the one checkpoint row is
            # the log's latest (the log keeps one per batch).
            want, got = _rows(origin.ledger.store.engine), _mirror_rows(db_url)
            for table in DERIVED:
                assert got[table.name] == want[table.name], table.name
            assert any(r[2] == "likely_duplicate" for r in got["links"])
            assert got["checkpoints"] == [want["checkpoints"][-1]]
            assert got["mirror_of"] == [(1, ORIGIN, served.mirror.trust_root_sha256)]

            # The online audit of the mirror: replay, the signed root, its derived views.
            result = audit(m, pinned_trust_root=served.mirror.trust_root_sha256, borders=[borders])
            assert (result.tree_size, result.root_hash) == (size, theirs.root_hash)

            # Every way to submit is refused, naming the log and the size held.
            refusal = f"read-only mirror of {ORIGIN} at size {size}"
            envelope = _reports(p, 1, salt=9)[0]
            for attempt in (
                lambda: m.submit(envelope),
                lambda: m.submit(b"not even an envelope"),  # refused before it is judged
                lambda: m.submit_batch([envelope]),
                lambda: m.submit_with_blobs(envelope, {"blob": b"evidence"}),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    attempt()
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert refusal in (refused.value.details() or "")
            # Were a submission to reach the sequencer past those refusals, it commits
            # nothing; and the mirror holds no key to sign with.
            checked = Ledger.check(served, envelope)
            assert isinstance(checked, Checked)
            with pytest.raises(FailedPrecondition, match=refusal):
                served.committed(Ledger.enqueue(served, checked, {}))
            with pytest.raises(FailedPrecondition, match="signs no checkpoint"):
                served.log_key.sign_checkpoint(size, theirs.root_hash)
            assert not hasattr(served.log_key, "signing_key")
            # Beneath the service, the database itself refuses the server's writes.
            with pytest.raises(DBAPIError), served.store.engine.begin() as conn:
                conn.execute(insert(storage.blobs).values(sha256="0" * 64, size=0, data=b""))
            assert m.checkpoint().signed_note == theirs.signed_note
        assert _mirror_rows(db_url) == got


def test_update_follows_the_same_history_and_refuses_another(
    db_url: str,
    tmp_path: Path,
    parties: Parties,
    borders: BorderDataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = parties
    a_db, b_db = tmp_path / "a.db", tmp_path / "b.db"
    _found(a_db, p, borders)
    _fork(a_db, b_db)  # the same log key and entry 0; each log goes its own way after
    with _log(a_db, p, borders) as a, _log(b_db, p, borders) as b:
        _submit(a.client, _reports(p, 12, salt=0))
        a1 = _export(a, tmp_path / "a1.bundle")
        _submit(b.client, _reports(p, 4, salt=1))
        b_small = _export(b, tmp_path / "b-small.bundle")
        assert main(["mirror", "init", "--bundle", str(a1), "--db", db_url]) == 0
        capsys.readouterr()

        with _mirror(db_url, tmp_path) as (served, m):
            # ARM adds a monitor key and reports with it: the replay, the import and the
            # running mirror's key state all follow.
            new_monitor = SigningKey.generate()
            added = pb.KeyChange(
                party="ARM",
                created_time=to_timestamp(now_us()),
                add=[pb.PartyKey(public_key=keys.public_bytes(new_monitor), role=pb.ROLE_MONITOR)],
            )
            a.client.submit(_sign(statements.KEY_CHANGE, added, p.arm_authority))
            _submit(a.client, _reports(p, 8, salt=2))
            a.client.submit(signed(report("ARM", hours_ago=2), new_monitor))
            a2 = _export(a, tmp_path / "a2.bundle")
            _submit(b.client, _reports(p, 25, salt=3))
            b_big = _export(b, tmp_path / "b-big.bundle")

            # Another history of the log, smaller or larger than the mirror's: refused,
            # and the mirror is as it was.
            before = _mirror_rows(db_url)
            for fork in (b_small, b_big):
                assert main(["mirror", "update", "--bundle", str(fork), "--db", db_url]) == 3
                err = capsys.readouterr().err.splitlines()[-1]  # after the progress lines
                assert err.startswith("ceasefire mirror update: refused: not an extension: ")
                assert "the log's histories differ" in err
                assert _mirror_rows(db_url) == before
            assert m.checkpoint().tree_size == 13

            # The same history, further on: appended, served at once by the running mirror.
            new_key = dsse.key_id(keys.public_bytes(new_monitor))
            assert new_key not in served.trust.keys
            assert main(["mirror", "update", "--bundle", str(a2), "--db", db_url]) == 0
            assert "13 -> 23 entries" in capsys.readouterr().out
            assert new_key in served.trust.keys
            assert m.checkpoint().signed_note == a.client.checkpoint().signed_note
            _same(iter([m.consistency_proof(13, 23)]), iter([a.client.consistency_proof(13, 23)]))
            _same(m.entries(0, 0), a.client.entries(0, 0))
            _same(m.timeline(), a.client.timeline())
            want, got = _rows(a.ledger.store.engine), _mirror_rows(db_url)
            for table in DERIVED:
                assert got[table.name] == want[table.name], table.name

            # An equal or older bundle of it: nothing to do.
            for same_or_older in (a2, a1):
                args = ["mirror", "update", "--bundle", str(same_or_older), "--db", db_url]
                assert main([*args, "--json"]) == 0
                said = json.loads(capsys.readouterr().out)
                assert (said["appended"], said["tree_size"]) == (0, 23)
            assert _mirror_rows(db_url) == got


def test_a_bundle_that_does_not_verify_writes_nothing(
    db_url: str,
    tmp_path: Path,
    parties: Parties,
    borders: BorderDataset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = parties
    _found(tmp_path / "origin.db", p, borders)
    with _log(tmp_path / "origin.db", p, borders) as origin:
        _submit(origin.client, _reports(p, 8, salt=0))
        good = _export(origin, tmp_path / "good.bundle")

        def forge_party(doc: dict[str, Any]) -> None:
            entry = log_pb2.LogEntry.FromString(base64.b64decode(doc["entry"]))
            entry.validation.party = "AZE" if entry.validation.party == "ARM" else "ARM"
            doc["entry"] = base64.b64encode(entry.SerializeToString()).decode()

        forged = _rewrite(good, tmp_path / "forged.bundle", 5, forge_party)
        init = ["mirror", "init", "--db", db_url, "--bundle"]
        assert main([*init, str(forged)]) == 3
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith(
            "ceasefire mirror init: refused: the bundle does not verify: entry 4: "
        )
        assert _nothing_written(db_url)
        # Verified, but not the trust root the caller pinned.
        assert main([*init, str(good), "--trust-root", "ab" * 32]) == 3
        assert "is not the pinned one" in capsys.readouterr().err
        assert _nothing_written(db_url)

        # What is imported is what was verified: entries or a note swapped after the
        # verification are refused, and nothing of the import is kept.
        verified = verify(good, pinned_trust_root=None, borders=[borders])
        _submit(origin.client, _reports(p, 1, salt=7))
        later_note = origin.client.checkpoint().signed_note  # the log's, of another size
        store = LedgerStore.open(db_url)
        try:
            for swapped in (
                replace(verified, entries=bundle.read_entries(forged)[1]),
                replace(verified, note=later_note),
            ):
                with pytest.raises(Corrupt, match="changed since it was verified"):
                    mirror.load(store, swapped)
                assert store.tree_size() == 0 and mirror.mirror_info(store) is None
        finally:
            store.close()

        assert main([*init, str(good)]) == 0
        assert main([*init, str(good)]) == 1  # a mirror starts empty
        assert "a mirror of" in capsys.readouterr().err
        before = _mirror_rows(db_url)

        # A newer bundle whose checkpoint the log did not sign: the mirror stays as it was.
        _submit(origin.client, _reports(p, 5, salt=1))
        newer = _export(origin, tmp_path / "newer.bundle")

        def other_root(doc: dict[str, Any]) -> None:
            lines = doc["checkpoint"].split("\n")
            lines[2] = base64.b64encode(bytes(32)).decode()  # the root line
            doc["checkpoint"] = "\n".join(lines)

        unsigned = _rewrite(newer, tmp_path / "unsigned.bundle", 0, other_root)
        assert main(["mirror", "update", "--db", db_url, "--bundle", str(unsigned)]) == 3
        assert "the bundle does not verify: checkpoint" in capsys.readouterr().err
        assert _mirror_rows(db_url) == before
        # Nor is a ledger of the log's own a mirror to update.
        log_db = str(tmp_path / "origin.db")
        assert main(["mirror", "update", "--db", log_db, "--bundle", str(newer)]) == 1
        assert "is not a mirror" in capsys.readouterr().err


def test_each_import_keeps_one_checkpoint_the_logs_note_verbatim(
    db_url: str, tmp_path: Path, parties: Parties, borders: BorderDataset
) -> None:
    """Imported a few entries at a time, in one transaction: the only checkpoint rows are
    the bundles' notes, witness lines and all; none for a size the log did not sign."""
    p, b = parties, [borders]
    _found(tmp_path / "origin.db", p, borders)
    with _log(tmp_path / "origin.db", p, borders) as origin:
        _submit(origin.client, _reports(p, 10, salt=0))
        first = _export(origin, tmp_path / "first.bundle")
        witness = NoteSigner("witness.example/w1", SigningKey.generate())

        def cosigned(doc: dict[str, Any]) -> None:
            doc["checkpoint"] = add_signatures(doc["checkpoint"], [witness])

        first = _rewrite(first, tmp_path / "cosigned.bundle", 0, cosigned)
        note = json.loads(first.read_text(encoding="utf-8").splitlines()[0])["checkpoint"]
        assert note.count("\n\u2014 ") == 2
        _submit(origin.client, _reports(p, 7, salt=1))
        second = _export(origin, tmp_path / "second.bundle")

        store = LedgerStore.open(db_url)
        try:
            loaded = mirror.load(store, verify(first, pinned_trust_root=None, borders=b), chunk=4)
            assert loaded == 11
            with _mirror(db_url, tmp_path) as (_served, m):
                assert m.checkpoint().signed_note.encode() == note.encode()
                newer = verify(second, pinned_trust_root=None, borders=b)
                assert mirror.extend(store, newer, chunk=3) == mirror.Extended(11, 18)
                assert m.checkpoint().signed_note == origin.client.checkpoint().signed_note
        finally:
            store.close()
        rows = _mirror_rows(db_url)["checkpoints"]
        assert [(size, text) for size, _root, text in rows] == [
            (11, note),
            (18, origin.client.checkpoint().signed_note),
        ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the log's; the mirror: SQLite
def test_a_witnessed_bundle_seeds_a_mirror_that_serves_its_cosignatures(
    witnessed: Witnessed,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Real witnesses cosign the log's checkpoints (C2SP tlog-cosignature); the bundle of a
    witnessed checkpoint seeds a mirror, which serves those cosignatures with the note, and
    the clients that require the quorum accept the mirror as they accept the log."""
    size = witnessed.submit(3)
    witnessed.wait(lambda: _witnessed_size(witnessed.client) == size)
    for w in witnessed.witnesses.values():
        w.stop()  # newer entries: no witness cosigns them
    assert witnessed.submit(2) > size
    path = tmp_path / "witnessed.bundle"
    target = witnessed.client.target
    assert main(["export", "--witnessed", "--out", str(path), "--server", target]) == 0
    note = bundle.checkpoint_note(path)
    cosigners = witnessed.cosigners()
    assert set(independent_cosigners(note, cosigners)) == {ARM_WITNESS, AZE_WITNESS}

    db = f"sqlite:///{tmp_path / 'mirror.db'}"
    assert main(["mirror", "init", "--bundle", str(path), "--db", db]) == 0
    with _mirror(db, tmp_path) as (_served, m):
        capsys.readouterr()
        assert main(["checkpoint", "--witnessed", "--server", m.target]) == 0
        served = capsys.readouterr().out
        assert served == note  # the log's note and both cosignatures, verbatim
        assert set(independent_cosigners(served, cosigners)) == {ARM_WITNESS, AZE_WITNESS}
        argv = ["verify", "--json", "--require-witnesses", "--workers", "0", "--server", m.target]
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["tree_size"] == size and doc["witnesses"]["policy_met"]
        assert doc["witnesses"]["policy"] == POLICY
        assert {c["name"] for c in doc["witnesses"]["cosigned_by"]} == set(cosigners)
        argv = ["proof", "inclusion", "--index", "1", "--require-witnesses", "--server", m.target]
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["verified"] and doc["tree_size"] == size and doc["witnesses"]["policy_met"]
