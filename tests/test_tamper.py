"""A lying operator who rewrites what the log recorded, and then rebuilds the hash chain
(and, holding the log key, could sign a new root): the auditor's replay judges every entry
again and compares the whole recorded entry with its judgment, so each forged fact is
named by its entry. One case per recorded field, for the kinds where it applies and where
it does not."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from geo.borders import BorderDataset
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.verifier import VerificationError, replay
from tests.conftest import RunningLedger
from tests.reports import report, signed

Entries = list[tuple[int, bytes]]
ARM, AZE = (40.8811, 45.3875), (41.0933, 45.3661)


def _sign(kind: str, statement: Message, *keys: object) -> bytes:
    return dsse.sign(kind, statement.SerializeToString(), list(keys)).to_json()  # type: ignore[arg-type]


@pytest.fixture
def logged(running: RunningLedger) -> Entries:
    """1: ARM report, 2: AZE report, 3: ARM report near 1 (a likely duplicate of it),
    4: AZE's counter-claim about 1, 5: ARM's amendment of 1."""
    p, c = running.parties, running.client
    c.submit(signed(report("ARM", lat=ARM[0], lon=ARM[1]), p.arm_monitor))
    c.submit(signed(report("AZE", lat=AZE[0], lon=AZE[1]), p.aze_monitor))
    c.submit(
        signed(report("ARM", lat=ARM[0] + 0.001, lon=ARM[1], narrative="again"), p.arm_monitor)
    )
    denial = pb.CounterClaim(
        incident_index=1, created_time=to_timestamp(now_us()), party="AZE",
        kind=pb.RESPONSE_KIND_DENIAL, narrative="No fire from our side.", narrative_language="en",
    )  # fmt: skip
    c.submit(_sign(statements.COUNTER_CLAIM, denial, p.aze_authority))
    corrected = report("ARM", lat=ARM[0] - 0.05, lon=ARM[1], narrative="moved")
    amendment = pb.IncidentAmendment(
        incident_index=1, created_time=to_timestamp(now_us()), party="ARM",
        corrected=corrected, reason="the post was further south",
    )  # fmt: skip
    c.submit(_sign(statements.AMENDMENT, amendment, p.arm_monitor))
    store = running.ledger.store
    return [(e.index, e.entry) for e in store.iter_entries(0, store.tree_size())]


def forged(entries: Entries, index: int, change: Callable[[log_pb2.LogEntry], None]) -> Entries:
    """The entries with one entry changed and the hash chain rebuilt after it, as an
    operator rewriting history would serve them."""
    out: Entries = []
    prev = b""
    for i, data in entries:
        entry = parse_entry(data)
        if i == index:
            change(entry)
        if i > index:
            entry.previous_leaf_hash = prev
        data = entry.SerializeToString() if i >= index else data
        out.append((i, data))
        prev = merkle.leaf_hash(data)
    return out


def _fails_at(entries: Entries, index: int, borders: BorderDataset, says: str) -> None:
    with pytest.raises(VerificationError) as info:
        replay(iter(entries), borders=[borders])
    assert info.value.index == index, str(info.value)
    assert says in str(info.value)


def test_the_untouched_ledger_verifies(logged: Entries, borders: BorderDataset) -> None:
    state = replay(iter(logged), borders=[borders])
    assert state.size == 6 and state.geo_rechecked == 4  # three reports and the amendment


def _set_party(e: log_pb2.LogEntry) -> None:
    e.validation.party = "AZE" if e.validation.party == "ARM" else "ARM"


def _drop_signer(e: log_pb2.LogEntry) -> None:
    del e.validation.signer_key_ids[:]


def _add_signer(e: log_pb2.LogEntry) -> None:
    e.validation.signer_key_ids.append("ab" * 32)


def _move(e: log_pb2.LogEntry) -> None:
    e.validation.geo.distance_to_border_m += 1500


def _flip_side(e: log_pb2.LogEntry) -> None:
    e.validation.geo.territory = "AZE" if e.validation.geo.territory == "ARM" else "ARM"


def _other_dataset(e: log_pb2.LogEntry) -> None:
    e.validation.geo.dataset_sha256 = "0" * 64


def _forge_geo(e: log_pb2.LogEntry) -> None:
    e.validation.geo.territory = "ARM"
    e.validation.geo.dataset_sha256 = "0" * 64


def _drop_geo(e: log_pb2.LogEntry) -> None:
    e.validation.ClearField("geo")


def _add_duplicate(e: log_pb2.LogEntry) -> None:
    e.validation.likely_duplicates.add(index=2, reasons=["time and place"])


def _drop_duplicates(e: log_pb2.LogEntry) -> None:
    del e.validation.likely_duplicates[:]


def _other_reason(e: log_pb2.LogEntry) -> None:
    e.validation.likely_duplicates[0].reasons[:] = ["evidence"]


def _unsigned_note(e: log_pb2.LogEntry) -> None:
    doc = json.loads(e.envelope)
    doc["note"] = "ARM withdraws this report"
    e.envelope = json.dumps(doc, separators=(",", ":")).encode()


def _respelt(e: log_pb2.LogEntry) -> None:
    e.envelope = json.dumps(json.loads(e.envelope), indent=2).encode()


@pytest.mark.parametrize(
    ("index", "change", "says"),
    [
        (1, _set_party, "validation.party"),
        (4, _set_party, "validation.party"),
        (1, _drop_signer, "validation.signer_key_ids"),
        (4, _add_signer, "validation.signer_key_ids"),
        (1, _move, "recorded geo facts"),
        (2, _flip_side, "recorded geo facts"),
        (5, _move, "recorded geo facts"),  # an amendment's facts
        (1, _other_dataset, "recorded geo facts"),
        (4, _forge_geo, "recorded geo facts (ARM"),  # a counter-claim has no place
        (3, _drop_geo, "recorded geo facts (none)"),
        (4, _add_duplicate, "validation.likely_duplicates"),  # nor likely duplicates
        (2, _add_duplicate, "validation.likely_duplicates"),
        (3, _drop_duplicates, "validation.likely_duplicates"),
        (3, _other_reason, "validation.likely_duplicates"),
        (1, _unsigned_note, "not a DSSE field"),
        (4, _respelt, "not in its canonical form"),
    ],
    ids=lambda v: v.__name__ if callable(v) else str(v),
)
def test_each_forged_fact_is_named_by_its_entry(
    logged: Entries,
    borders: BorderDataset,
    index: int,
    change: Callable[[log_pb2.LogEntry], None],
    says: str,
) -> None:
    _fails_at(forged(logged, index, change), index, borders, says)


def test_bytes_beside_the_fields_are_caught(logged: Entries, borders: BorderDataset) -> None:
    """Bytes no field accounts for (an unknown field appended to the leaf)."""
    entries = list(logged)
    i, data = entries[2]
    entries[2] = (i, data + b"\xfa\x01\x03abc")  # field 47, length 3
    _fails_at(forged(entries, 2, lambda e: None), 2, borders, "not the encoding")
    entries = list(logged)
    entries[0] = (0, entries[0][1] + b"\xfa\x01\x03abc")
    _fails_at(forged(entries, 0, lambda e: None), 0, borders, "records facts beside")


def test_a_statement_logged_twice_is_named(logged: Entries, borders: BorderDataset) -> None:
    """An operator who logs a party's statement a second time, re-spelt."""
    entry = parse_entry(logged[2][1])
    again = log_pb2.LogEntry()
    again.CopyFrom(entry)
    again.index = 6
    again.previous_leaf_hash = merkle.leaf_hash(logged[-1][1])
    again.integrated_time.CopyFrom(parse_entry(logged[-1][1]).integrated_time)
    again.envelope = dsse.Envelope.from_json(entry.envelope).to_json()
    again.ClearField("validation")
    again.validation.party = entry.validation.party
    entries = [*logged, (6, again.SerializeToString())]
    _fails_at(entries, 6, borders, "logged already as entry 2")
