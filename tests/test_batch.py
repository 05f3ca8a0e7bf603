"""SubmitBatch: many signed statements in one call, each answered on its own, through a real
gRPC server on loopback (SQLite and PostgreSQL), and `ceasefire submit` with many files (in
the test's process: tests.cli_runner, or `main`)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2

from clients.cli import main
from clients.client import (
    MAX_BATCH,
    MAX_BATCH_REQUEST_BYTES,
    LedgerClient,
    Refused,
    batches,
    field_violations,
)
from ledger import keys, service, statements
from ledger.formats import dsse, merkle
from ledger.serving import grpc_server
from ledger.tls import TlsConfig
from tests.conftest import Parties, RunningLedger, selects_run
from tests.reports import report, signed
from tests.test_cli import EXAMPLES, ceasefire
from tests.test_serving import evidence
from tests.test_tls import (  # noqa: F401
    Served,
    certs,
    client_tls,
    ledger,
    serve,
    writes_need_client_cert,
)

AZE_LAT, AZE_LON = 41.0933, 45.3661


def _reports(running: RunningLedger, n: int, tag: str = "") -> list[bytes]:
    """`n` distinct signed reports, from both parties, spread in time."""
    p = running.parties
    out = []
    for i in range(n):
        said = f"Report {tag}{i}: small-arms fire heard."
        if i % 2:
            out.append(
                signed(
                    report("AZE", lat=AZE_LAT, lon=AZE_LON, hours_ago=i + 1, narrative=said),
                    p.aze_monitor,
                )
            )
        else:
            out.append(signed(report("ARM", hours_ago=i + 1, narrative=said), p.arm_monitor))
    return out


def _verified(running: RunningLedger, accepted: api.SubmitResponse) -> int:
    """The receipt is signed by the log key over the receipt given, and names the entry
    that the log holds at its index, included in the latest checkpoint."""
    receipt = accepted.receipt
    env = dsse.Envelope.from_json(accepted.signed_receipt)
    assert env.payload_type == statements.RECEIPT
    assert dsse.verify_signature(env, env.signatures[0], bytes(running.parties.log.verify_key))
    assert log_pb2.Receipt.FromString(env.payload) == receipt
    got = running.client.entry(receipt.index)
    assert merkle.leaf_hash(got.entry) == receipt.leaf_hash == got.leaf_hash
    cp = running.client.checkpoint()
    proof = running.client.inclusion_proof(receipt.index, cp.tree_size)
    merkle.verify_inclusion(
        receipt.leaf_hash, receipt.index, cp.tree_size, list(proof.hashes), cp.root_hash
    )
    return receipt.index


def _accepted(result: api.SubmitResponse | Refused) -> api.SubmitResponse:
    assert isinstance(result, api.SubmitResponse), result
    return result


def _refused(result: api.SubmitResponse | Refused) -> Refused:
    assert isinstance(result, Refused), result
    return result


def _alone(running: RunningLedger, envelope: bytes) -> Refused:
    """What the unary Submit says of the envelope sent alone (it must refuse it)."""
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit(envelope)
    return Refused.from_error(info.value)


def _flip_signature(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    raw = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    raw[7] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(doc).encode()


def test_a_batch_of_reports_is_logged_in_order_sharing_commits(running: RunningLedger) -> None:
    envelopes = _reports(running, 24)
    commits = running.ledger.sequencer.stats.batches
    results = running.client.submit_batch(envelopes)
    assert len(results) == len(envelopes)
    accepted = [_accepted(r) for r in results]
    assert not any(a.duplicate for a in accepted)
    # Nobody else writes: the batch takes the next indexes, in the order sent.
    assert [_verified(running, a) for a in accepted] == list(range(1, 25))
    # Each envelope is the entry at its receipt's index (by its statement's identity).
    for envelope, a in zip(envelopes, accepted, strict=True):
        identity = dsse.Envelope.from_json(envelope).statement_sha256()
        assert running.client.entry_by_statement(identity).index == a.receipt.index
    # Queued back to back, they share transactions (flushes): one, or two or three when
    # the scheduler takes the thread between two of them. One commit each would be 24.
    transactions = running.ledger.sequencer.stats.batches - commits
    assert 1 <= transactions <= 3
    assert len({a.receipt.integrated_time.ToNanoseconds() for a in accepted}) == transactions
    assert running.client.checkpoint().tree_size == 25


def test_a_batch_is_checked_on_one_read_of_the_log(running: RunningLedger) -> None:
    """Which statements the log holds, and its size, are read once for the whole batch
    before the sequencer takes it (they were read for each envelope), a retried one among
    them answered from that read."""
    first = _reports(running, 1)
    running.client.submit(first[0])
    envelopes = _reports(running, 24) + first

    def queued() -> None:
        items = running.ledger.queue_batch(envelopes)
        running.ledger.committed_batch(items)
        assert isinstance(items[-1], service.Accepted) and items[-1].duplicate

    ran = [s for s, _ in selects_run(running.ledger.store.engine, queued)]
    assert not any("statements.sha256 = " in s for s in ran)  # one look-up each, before
    assert sum("statements.sha256 IN" in s for s in ran) <= 4  # the check's + the writer's
    assert sum(s.startswith("SELECT tree_state.size") for s in ran) == 1


def test_a_mixed_batch_answers_each_envelope_on_its_own(running: RunningLedger) -> None:
    p = running.parties
    earlier = signed(report("ARM", hours_ago=20), p.arm_monitor)
    logged = running.client.submit(earlier)
    # The logged statement spelt otherwise: the same signed statement all the same.
    again = json.dumps(json.loads(earlier), indent=1).encode()
    first, second = _reports(running, 2, tag="mixed ")
    malformed = b'{"payload": "eyJ9", "payloadType": '
    bad_signature = _flip_signature(signed(report("ARM", hours_ago=7), p.arm_monitor))
    needs_blob = evidence(p.arm_monitor, logged.receipt.index, b"crater photo")
    batch = [first, malformed, bad_signature, again, second, second, needs_blob]
    size = running.client.checkpoint().tree_size

    results = running.client.submit_batch(batch)

    assert len(results) == len(batch)
    a, b, b_again = _accepted(results[0]), _accepted(results[4]), _accepted(results[5])
    assert not a.duplicate and not b.duplicate
    assert size <= _verified(running, a) < _verified(running, b)
    # The same statement twice in one call: logged once, both get the first receipt.
    assert b_again.duplicate and b_again.signed_receipt == b.signed_receipt
    # A statement logged before: its first receipt, however it is spelt.
    resubmitted = _accepted(results[3])
    assert resubmitted.duplicate and resubmitted.signed_receipt == logged.signed_receipt
    # The valid ones are logged exactly once; the refused ones not at all.
    assert running.client.checkpoint().tree_size == size + 2
    assert [e.index for e in running.client.entries(size, 0)] == [size, size + 1]

    # Each refusal is the status (code, message, BadRequest, ...) Submit gives it alone.
    refusals = {i: _refused(results[i]) for i in (1, 2, 6)}
    for i, refusal in refusals.items():
        assert refusal.status == _alone(running, batch[i]).status, i
    assert refusals[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert refusals[2].code == grpc.StatusCode.UNAUTHENTICATED
    assert refusals[2].fields() == ["signatures[0].sig"]
    assert refusals[6].code == grpc.StatusCode.INVALID_ARGUMENT
    assert refusals[6].fields() == ["files"] and "blob" in refusals[6].status.message
    assert running.client.checkpoint().tree_size == size + 2


@pytest.mark.parametrize(
    ("count", "said"),
    [(0, "at least one envelope"), (MAX_BATCH + 1, f"at most {MAX_BATCH} in one call")],
)
def test_an_empty_or_oversized_batch_is_refused_whole(
    running: RunningLedger, count: int, said: str
) -> None:
    # A valid report among junk: logged if the bound were not checked before anything.
    envelopes = [b"{}"] * (count - 1) + _reports(running, 1) if count else []
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit_batch(envelopes)
    error = info.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert said in (error.details() or "") and field_violations(error) == ["envelopes"]
    assert running.client.checkpoint().tree_size == 1
    # At the bound itself, the call is answered item by item.
    results = running.client.submit_batch([b"{}"] * (MAX_BATCH - 1) + _reports(running, 1))
    assert len(results) == MAX_BATCH
    assert all(_refused(r).code == grpc.StatusCode.INVALID_ARGUMENT for r in results[:-1])
    assert _verified(running, _accepted(results[-1])) == 1


def test_batches_are_packed_by_count_and_by_the_servers_message_size(
    running: RunningLedger,
) -> None:
    # The client's bounds are the server's.
    assert (MAX_BATCH, MAX_BATCH_REQUEST_BYTES) == (
        service.MAX_BATCH,
        grpc_server.MAX_MESSAGE_BYTES,
    )
    tiny = [b"{}"] * (2 * MAX_BATCH + 3)
    assert [len(b) for b in batches(tiny)] == [MAX_BATCH, MAX_BATCH, 3]
    # Real reports: more bytes than one request may carry, so several calls, each taken.
    envelopes = _reports(running, 200, tag="packed ")
    assert sum(len(e) for e in envelopes) > MAX_BATCH_REQUEST_BYTES
    calls = list(batches(envelopes))
    assert len(calls) > 1 and [e for c in calls for e in c] == envelopes
    for call in calls:
        assert api.SubmitBatchRequest(envelopes=call).ByteSize() <= MAX_BATCH_REQUEST_BYTES
    results = [r for call in calls for r in running.client.submit_batch(call)]
    assert [_accepted(r).receipt.index for r in results] == list(range(1, 201))
    # One envelope larger than any request travels alone.
    huge = b"x" * (MAX_BATCH_REQUEST_BYTES + 1)
    assert [len(b) for b in batches([b"{}", huge, b"{}"])] == [1, 1, 1]


def test_a_batch_on_the_public_port_is_refused_when_writes_need_a_certificate(
    certs: Path,  # noqa: F811
    serve: Callable[[TlsConfig], Served],  # noqa: F811
    parties: Parties,
) -> None:
    served = serve(writes_need_client_cert(certs))
    assert served.writers is not None
    envelope = signed(report(), parties.arm_monitor)
    with LedgerClient(served.address, tls=client_tls(certs)) as reader:
        with pytest.raises(grpc.RpcError) as info:
            reader.submit_batch([envelope])
        assert isinstance(info.value, grpc.Call)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reader.checkpoint().tree_size == 1
    with LedgerClient(served.writers, tls=client_tls(certs, client=("ours", "arm-field"))) as w:
        (result,) = w.submit_batch([envelope])
        assert _accepted(result).receipt.index == 1


# -- `ceasefire submit` with many files --------------------------------------------------------


def _report_files(folder: Path, n: int, per_file: int = 1) -> list[Path]:
    """`n` ARM report files (copies of the example, each narrative its own), each holding
    `per_file` reports."""
    base = yaml.safe_load((EXAMPLES / "incident-arm.yaml").read_text())
    paths = []
    for i in range(n):
        docs = [{**base, "narrative": f"File {i}, report {j}."} for j in range(per_file)]
        path = folder / f"arm-{i}.json"
        path.write_text(json.dumps(docs if per_file > 1 else docs[0]))
        paths.append(path)
    return paths


def test_submit_with_many_files_prints_a_result_for_each(
    running: RunningLedger, tmp_path: Path
) -> None:
    wd = tmp_path
    keys.write_private(wd / "arm-monitor.key", running.parties.arm_monitor)
    s = ("--server", running.address, "--key", "arm-monitor.key")
    for name in ("incident-arm.yaml", "incident-aze.json"):
        shutil.copy(EXAMPLES / name, wd / name)
    shutil.copy(wd / "incident-arm.yaml", wd / "again.yaml")
    files = [*(p.name for p in _report_files(wd, 2)), "incident-aze.json"]
    out = ceasefire("submit", *s, *files, cwd=wd, check=False)
    # One line per file: its entry, or why it was refused (an ARM key cannot speak for AZE).
    assert out.returncode == 1
    assert [line.split(" leaf ")[0] for line in out.stdout.splitlines()] == [
        "arm-0.json[0]: entry 1",
        "arm-1.json[0]: entry 2",
    ]
    assert out.stderr.splitlines() == [
        "incident-aze.json[0]: refused: PERMISSION_DENIED: reporting_party: a key of ARM "
        "cannot speak for AZE"
    ]
    # --json: a record per file, the refused one with its error; every file is read first.
    files = ["again.yaml", "arm-0.json", "incident-aze.json"]
    records = json.loads(ceasefire("submit", *s, *files, "--json", cwd=wd, check=False).stdout)
    assert [(r["file"], r.get("index"), r.get("duplicate")) for r in records] == [
        ("again.yaml", 3, False),
        ("arm-0.json", 4, False),  # signed anew (a new created_time): another statement
        ("incident-aze.json", None, None),
    ]
    assert records[2]["error"]["code"] == "PERMISSION_DENIED"
    assert "cannot speak for AZE" in records[2]["error"]["message"]
    # A single file is sent as before, with Submit.
    one = ceasefire("submit", *s, "incident-arm.yaml", "--json", cwd=wd)
    assert json.loads(one.stdout)[0]["index"] == 5


def test_submit_with_many_files_uses_submit_batch_only(
    running: RunningLedger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = tmp_path / "arm-monitor.key"
    keys.write_private(key, running.parties.arm_monitor)
    calls: list[int] = []
    batch = LedgerClient.submit_batch

    def counted(self: LedgerClient, envelopes: list[bytes]) -> list[api.SubmitResponse | Refused]:
        calls.append(len(envelopes))
        return batch(self, envelopes)

    def unary(self: LedgerClient, envelope: bytes) -> api.SubmitResponse:
        raise AssertionError("many files must not go one Submit each")

    monkeypatch.setattr(LedgerClient, "submit_batch", counted)
    monkeypatch.setattr(LedgerClient, "submit", unary)
    # Three files of 50 reports: more bytes than one request, so more than one call.
    files = [str(p) for p in _report_files(tmp_path, 3, per_file=50)]
    capsys.readouterr()
    code = main(["submit", "--server", running.address, "--key", str(key), *files, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    records = json.loads(out)
    assert [r["index"] for r in records] == list(range(1, 151))
    assert [(Path(r["file"]).name, r["item"]) for r in records[:2]] == [
        ("arm-0.json", 0),
        ("arm-0.json", 1),
    ]
    assert len(calls) > 1 and sum(calls) == 150 and max(calls) <= MAX_BATCH
