"""Every integer, index and time a request names is bounded before it reaches SQL, and every
error leaves the server bounded and without a server path: each case a hostile client
found, with its status code and field, through the real gRPC server on SQLite and
PostgreSQL. Also where registered data sets are unpacked, and that they are checked again
as read back."""

from __future__ import annotations

import base64
import functools
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from clients.client import field_violations
from geo import datasets
from geo.borders import DEFAULT_DATASET_DIR, BorderDataset, DatasetError
from geo.manifest import dataset_digest, file_digests
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.errors import InvalidArgument, shown
from ledger.formats import dsse
from ledger.service import Ledger, default_dataset_dir
from ledger.serving.grpc_status import MAX_TEXT_BYTES, MAX_TEXT_CHARS, bounded, to_status
from tests.conftest import RunningLedger
from tests.reports import report, signed
from tests.test_borders import registration, shifted_dataset

HUGE = 9223372036855  # seconds: 2**63 microseconds and a little more
U63, U64 = 2**63, 2**64 - 1
LONG = "X" * 20_000


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    details: str
    fields: list[str]


def refused(running: RunningLedger, call: Callable[[], object]) -> Refusal:
    """The error a call ends in; the ledger did not change."""
    before = running.ledger.store.tree_size()
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert running.ledger.store.tree_size() == before
    error = info.value
    assert isinstance(error, grpc.Call)
    details = error.details() or ""
    assert "Traceback" not in details and len(details.encode()) <= 2 * MAX_TEXT_BYTES
    return Refusal(error.code(), details, field_violations(info.value))


def check(
    running: RunningLedger, call: Callable[[], object], code: grpc.StatusCode, field: str
) -> str:
    error = refused(running, call)
    assert (error.code, error.fields) == (code, [field]), error.details
    return error.details


def stub(running: RunningLedger) -> Any:
    return running.client.stub


OUT = grpc.StatusCode.OUT_OF_RANGE
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("method", "request_", "code", "field"),
    [
        ("GetDossier", api.GetDossierRequest(incident_index=U63), OUT, "incident_index"),
        ("GetDossier", api.GetDossierRequest(incident_index=U64), OUT, "incident_index"),
        ("GetDossier", api.GetDossierRequest(as_of_index=U63), OUT, "as_of_index"),
        (
            "GetInvestigation",
            api.GetInvestigationRequest(investigation_index=U64),
            OUT,
            "investigation_index",
        ),
        (
            "GetInvestigation",
            api.GetInvestigationRequest(investigation_index=U63),
            OUT,
            "investigation_index",
        ),
        ("GetEntry", api.GetEntryRequest(index=U63), grpc.StatusCode.NOT_FOUND, "index"),
        ("GetEntry", api.GetEntryRequest(index=U64), grpc.StatusCode.NOT_FOUND, "index"),
        ("GetInclusionProof", api.GetInclusionProofRequest(index=U63), OUT, "index"),
        ("GetInclusionProof", api.GetInclusionProofRequest(tree_size=U64), OUT, "tree_size"),
        ("GetConsistencyProof", api.GetConsistencyProofRequest(old_size=U63), OUT, "old_size"),
        (
            "GetConsistencyProof",
            api.GetConsistencyProofRequest(old_size=1, new_size=U64),
            OUT,
            "new_size",
        ),
    ],
)
def test_unary_indexes_beyond_the_tree(
    running: RunningLedger, method: str, request_: Any, code: grpc.StatusCode, field: str
) -> None:
    check(running, lambda: getattr(stub(running), method)(request_), code, field)


def _stream(running: RunningLedger, method: str, request_: Any) -> Callable[[], object]:
    return lambda: list(getattr(stub(running), method)(request_))


@pytest.mark.parametrize(
    ("method", "request_", "code", "field"),
    [
        ("ListMessages", api.ListMessagesRequest(start=U63), OUT, "start"),
        ("ListMessages", api.ListMessagesRequest(start=U64), OUT, "start"),
        ("GetEntries", api.GetEntriesRequest(start=U63), OUT, "start"),
        ("GetEntries", api.GetEntriesRequest(start=U64, end=U64), OUT, "start"),
        ("GetEntries", api.GetEntriesRequest(start=1), None, ""),
        ("Timeline", api.TimelineRequest(as_of_index=U63), OUT, "as_of_index"),
        ("Timeline", api.TimelineRequest(since=Timestamp(seconds=HUGE)), INVALID, "since"),
        ("Timeline", api.TimelineRequest(until=Timestamp(seconds=HUGE)), INVALID, "until"),
        ("Timeline", api.TimelineRequest(since=Timestamp(seconds=-HUGE)), INVALID, "since"),
        ("Timeline", api.TimelineRequest(until=Timestamp(seconds=-(2**63))), INVALID, "until"),
        (
            "Timeline",
            api.TimelineRequest(until=Timestamp(seconds=2**63 - 1, nanos=999_999_999)),
            INVALID,
            "until",
        ),
        ("Timeline", api.TimelineRequest(parties=[LONG]), INVALID, "parties[0]"),
        ("Timeline", api.TimelineRequest(parties=["ARM", "ж" * 20_000]), INVALID, "parties[1]"),
        ("ListMessages", api.ListMessagesRequest(to_party=LONG), INVALID, "to_party"),
        ("Revalidate", api.RevalidateRequest(dataset_sha256=LONG), None, "dataset_sha256"),
        # PostgreSQL refuses a NUL in a query's text: once INTERNAL there.
        ("GetBlob", api.GetBlobRequest(sha256="\x00"), None, "sha256"),
        ("GetBlob", api.GetBlobRequest(sha256="A" * 64), None, "sha256"),
        ("Revalidate", api.RevalidateRequest(dataset_sha256="\x00"), None, "dataset_sha256"),
    ],
)
def test_streams_bounded(
    running: RunningLedger, method: str, request_: Any, code: grpc.StatusCode | None, field: str
) -> None:
    if code is None and not field:  # GetEntries from the tree size on: nothing, no error
        assert _stream(running, method, request_)() == []
        return
    details = check(running, _stream(running, method, request_), code or NOT_FOUND, field)
    if request_.ByteSize() >= 20_000:  # a value of 20,000 characters, echoed cut short
        assert "…" in details and "(20,000 characters)" in details


NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("end", ["since", "until"])
@pytest.mark.parametrize("seconds", [HUGE, -HUGE, 253_402_300_800, -62_135_596_801])
def test_revalidate_times(running: RunningLedger, end: str, seconds: int) -> None:
    sha = running.ledger.trust.border_dataset_sha256
    request_ = api.RevalidateRequest(dataset_sha256=sha)
    getattr(request_, end).CopyFrom(Timestamp(seconds=seconds))
    check(running, _stream(running, "Revalidate", request_), INVALID, end)


def test_the_extremes_a_timestamp_allows_are_answered(running: RunningLedger) -> None:
    running.client.submit(signed(report("ARM"), running.parties.arm_monitor))
    first, last = Timestamp(seconds=-62_135_596_800), Timestamp(seconds=253_402_300_799)
    last.nanos = 999_999_999
    rows = list(stub(running).Timeline(api.TimelineRequest(since=first, until=last)))
    assert [r.index for r in rows] == [1]
    sha = running.ledger.trust.border_dataset_sha256
    request_ = api.RevalidateRequest(dataset_sha256=sha, since=first, until=last)
    assert [r.index for r in stub(running).Revalidate(request_)] == [1]
    # A party named ten thousand times is one party.
    many = api.TimelineRequest(parties=["ARM"] * 10_000)
    assert [r.index for r in stub(running).Timeline(many)] == [1]
    assert [r.index for r in stub(running).ListMessages(api.ListMessagesRequest(start=2))] == []
    error = refused(running, _stream(running, "GetEntries", api.GetEntriesRequest(start=2, end=1)))
    assert (error.code, error.fields) == (INVALID, ["end"])


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (2**63 - 3601, 2**63 - 1, "window.start"),  # once: INTERNAL, the whole batch lost
        (HUGE - 3600, HUGE, "window.start"),
        (253_402_300_800 - 3600, 253_402_300_800, "window.end"),  # the year 10000
    ],
)
def test_statement_times_are_bounded_before_sql(
    running: RunningLedger, start: int, end: int, field: str
) -> None:
    """An advance notice may lie in the future, but not beyond what a Timestamp holds (its
    window goes into the notices table as 64-bit microseconds)."""
    now = to_timestamp(now_us())
    notice = pb.AdvanceNotice(
        created_time=now, party="AZE", activity=pb.ACTIVITY_KIND_DEMINING,
        window=pb.TimeWindow(start=Timestamp(seconds=start), end=Timestamp(seconds=end),
                             precision=pb.TIME_PRECISION_HOUR),
        location=pb.Location(point=pb.GeoPoint(latitude=40.99, longitude=45.63),
                             uncertainty_m=2000, precision=pb.LOCATION_PRECISION_NEAR),
        description="Demining", description_language="en",
    )  # fmt: skip
    envelope = dsse.sign(
        statements.NOTICE, notice.SerializeToString(), [running.parties.aze_authority]
    ).to_json()
    check(running, functools.partial(running.client.submit, envelope), INVALID, field)
    # The log goes on: the next statement is logged as ever.
    assert running.client.submit(signed(report("ARM"), running.parties.arm_monitor)).receipt.index


# -- what an error message may carry -------------------------------------------------------


def _envelope(payload_type: str, payload: bytes, **extra: Any) -> bytes:
    doc = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": "ab" * 32, "sig": base64.b64encode(b"s" * 64).decode()}],
    }
    doc.update(extra)
    # A lone surrogate goes as its JSON escape, which the parser turns back into one.
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "backslashreplace")


def test_long_values_in_a_submission_are_cut_in_the_error(running: RunningLedger) -> None:
    p = running.parties
    submit = running.client.submit
    # A 20,000-character party code, signed: refused on the party, not on the trailers.
    r = report("ARM")
    r.reporting_party = LONG
    error = refused(running, lambda: submit(signed(r, p.arm_monitor)))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.fields == ["reporting_party"]
    assert "(20,000 characters)" in error.details
    for envelope, field in [
        (_envelope("x" * 40_000, b"p"), "payloadType"),
        (_envelope("ü" * 20_000, b"p"), "payloadType"),
        (_envelope("t", b"p", **{"k" * 30_000: 1}), "k" * 40 + "..."),
        (_envelope("t", b"p", **{"\ud800": 1}), "\\ud800"),
        (b'{"' + b"d" * 25_000 + b'":1,"' + b"d" * 25_000 + b'":2}', "envelope"),
    ]:
        error = refused(running, functools.partial(submit, envelope))
        assert error.code == INVALID and error.fields == [field], error.details


def _registration_of(files: dict[str, bytes]) -> pb.BorderDatasetRegistration:
    digests = file_digests(files)
    listed = [pb.DatasetFile(name=n, sha256=d, size=len(files[n])) for n, d in digests.items()]
    bundled = BorderDataset.load(DEFAULT_DATASET_DIR)
    return registration(bundled, dataset_sha256=dataset_digest(digests), files=listed)


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (
            {"territories.txt": b"not a data set", "border.txt": b"nor this"},
            "the data set: expected one territories file",
        ),
        (
            {"territories.geojson": b"\x00garbage", "border.geojson": b"{}"},
            "territories.geojson: not a GeoJSON, GeoPackage, FlatGeobuf or zipped Shapefile",
        ),
    ],
)
def test_a_data_set_that_does_not_load_names_no_path_and_leaves_no_files(
    running: RunningLedger, tmp_path: Path, files: dict[str, bytes], says: str
) -> None:
    p = running.parties
    reg = _registration_of(files)
    envelope = dsse.sign(
        statements.BORDER_DATASET, reg.SerializeToString(), [p.arm_authority, p.aze_authority]
    ).to_json()
    error = refused(running, functools.partial(running.client.submit_with_blobs, envelope, files))
    assert error.code == INVALID and error.fields == ["files"], error.details
    assert says in error.details
    assert "/" not in error.details
    assert not (running.ledger.dataset_dir / reg.dataset_sha256).exists()


def test_a_registered_data_set_lives_beside_the_ledger_and_is_checked_as_read_back(
    running: RunningLedger, tmp_path: Path, borders: BorderDataset
) -> None:
    p = running.parties
    where = running.ledger.dataset_dir
    if running.db_url.startswith("sqlite"):
        assert where == (tmp_path / "ledger.db.datasets").resolve()
    else:
        assert where == default_dataset_dir(running.ledger.store, running.ledger.log_key.origin)
        assert where.parent == datasets.user_cache_dir()
    folder = shifted_dataset(tmp_path / "shifted")
    shifted = BorderDataset.load(folder)
    reg = registration(shifted)
    envelope = dsse.sign(
        statements.BORDER_DATASET, reg.SerializeToString(), [p.arm_authority, p.aze_authority]
    ).to_json()
    files = {f.name: (folder / f.name).read_bytes() for f in reg.files}
    running.client.submit_with_blobs(envelope, files)
    unpacked = where / shifted.sha256
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert sorted(x.name for x in unpacked.iterdir()) == sorted(files)
    # Someone changes a file on disk: a new server writes it afresh from the log's blobs.
    (unpacked / "border.geojson").write_bytes(b"{}")
    fresh = Ledger(running.ledger.store, running.ledger.log_key, borders)
    try:
        assert fresh.borders.sha256 == shifted.sha256
        assert (unpacked / "border.geojson").read_bytes() == files["border.geojson"]
    finally:
        fresh.close()


# -- the pieces ------------------------------------------------------------------------------


def test_load_files_checks_every_digest(tmp_path: Path) -> None:
    content = {
        n: (DEFAULT_DATASET_DIR / n).read_bytes() for n in ("territories.geojson", "border.geojson")
    }
    digests = file_digests(content)
    root = tmp_path / "cache"
    loaded = datasets.load_files(content, root, digests)
    assert loaded.files == digests
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    with pytest.raises(DatasetError, match=r"border\.geojson does not have the listed SHA-256"):
        datasets.load_files(content, root, {**digests, "border.geojson": "0" * 64})
    with pytest.raises(DatasetError, match="not those listed"):
        datasets.load_files(content, root, {**digests, "extra.txt": "0" * 64})
    # A changed file on disk is written again, never loaded as what it is not.
    (root / loaded.sha256 / "territories.geojson").write_bytes(b"{}")
    again = datasets.load_files(content, root, digests)
    assert again.sha256 == loaded.sha256
    assert (root / loaded.sha256 / "territories.geojson").read_bytes() == content[
        "territories.geojson"
    ]
    # A shared folder is made private before anything is written into it.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    datasets.private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    if os.getuid() == 0:  # as root, a folder of another user can be made to test with
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with pytest.raises(DatasetError, match="belongs to another user"):
            datasets.load_files(content, theirs, digests)
    # read_files checks what it reads, too.
    with pytest.raises(DatasetError, match="does not have the listed SHA-256"):
        datasets.read_files(DEFAULT_DATASET_DIR, {**digests, "border.geojson": "1" * 64})


def test_error_text_is_bounded_and_names_no_path() -> None:
    assert shown("ARM") == "'ARM'"
    assert shown("X" * 65) == f"'{'X' * 64}'… (65 characters)"
    assert bounded("/tmp/ceasefire-datasets/0e54: expected one territories file") == (
        "<path>: expected one territories file"
    )
    assert bounded("cannot open ~/.cache/ceasefire-ledger/ab/x") == "cannot open <path>"
    kept = "application/vnd.ceasefire.v1.IncidentReport+protobuf, see https://c2sp.org/tlog"
    assert bounded(kept) == kept
    assert bounded("\ud800") == "\\ud800"
    long = bounded("x" * 20_000)
    assert len(long) == MAX_TEXT_CHARS and long.endswith("…")
    wide = bounded("😀" * 20_000)
    assert len(wide.encode()) <= MAX_TEXT_BYTES and wide.endswith("…")
    status = to_status(InvalidArgument("y" * 5000, field="z" * 5000))
    assert len(status.details) < 600 and status.details.endswith("…")
    assert len(status.trailing_metadata[0][1]) < 2 * MAX_TEXT_BYTES


def test_a_timestamp_now_is_in_range(running: RunningLedger) -> None:
    now = to_timestamp(now_us())
    assert list(stub(running).Timeline(api.TimelineRequest(since=now, until=now))) == []
