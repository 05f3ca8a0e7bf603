"""Property: over random sequences of key events, reports, amendments, investigation steps
(answers signed under a party's threshold among them) and earlier envelopes sent again
re-spelt or with other signatures, the server's accept/refuse decisions equal the offline
verifier's replay, entry by entry.

The server runs for real (SQLite, its sequencer, a fixed clock); the verifier sees only the
entries read back from the database, and judges each refused submission on the key state it
rebuilt itself.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from clients.reports import sign_report
from geo.borders import BorderDataset, load_default
from ledger import judgment, keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.errors import LedgerError
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.storage import LedgerStore
from ledger.verifier import Replay
from tests.conftest import ORIGIN
from tests.reports import report

NOW = now_us()
# Fixed key material, so that hypothesis can shrink over indexes into it.
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(10)]
LOG = SigningKey(b"\x99" * 32)
# Founding: ARM authorities 0,1,2 (threshold 2), ARM monitor 3; AZE authority 4, monitor 5.
# Keys 6..9 start outside the ledger and may be added.
FOUNDING = {0: ("ARM", pb.ROLE_AUTHORITY), 1: ("ARM", pb.ROLE_AUTHORITY),
            2: ("ARM", pb.ROLE_AUTHORITY), 3: ("ARM", pb.ROLE_MONITOR),
            4: ("AZE", pb.ROLE_AUTHORITY), 5: ("AZE", pb.ROLE_MONITOR)}  # fmt: skip
PLACES = {"ARM": (40.8811, 45.3875), "AZE": (41.0933, 45.3661)}
ROLES = [pb.ROLE_MONITOR, pb.ROLE_AUTHORITY, pb.ROLE_OBSERVER]


def _pub(i: int) -> bytes:
    return keys.public_bytes(KEYS[i])


def _founding(borders: BorderDataset) -> dsse.Envelope:
    parties = []
    for code, threshold in (("ARM", 2), ("AZE", 1)):
        party = pb.Party(code=code, name=code, authority_threshold=threshold)
        for i, (owner, role) in FOUNDING.items():
            if owner == code:
                party.keys.add(public_key=_pub(i), role=role)
        parties.append(party)
    root = pb.TrustRoot(
        origin=ORIGIN,
        log_public_key=keys.public_bytes(LOG),
        border_dataset_sha256=borders.sha256,
        border_dataset_files=dataset_files(borders),
        parties=parties,
    )
    return dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [KEYS[0], KEYS[1], KEYS[4]])


@dataclass(frozen=True)
class Op:
    kind: str  # report | amend | add | revoke | threshold | request | answer | terms | respell
    party: str
    target: int  # a key index, a threshold, or the log index a statement names
    role: int
    signers: tuple[int, ...]
    age_s: int

    def envelope(
        self, n: int, logged: dict[str, list[tuple[int, str]]], sent: list[bytes]
    ) -> bytes:
        """The op's envelope. Investigation steps and amendments name an earlier report or
        request (`logged`: index and party by op kind) picked by `target`, or a raw index
        when there is none; with role 0 an answer or terms come from the parties the request
        asks. A re-spelling sends an earlier envelope (`sent`) again in another form."""
        signing = [KEYS[i] for i in self.signers]
        created = to_timestamp(NOW - self.age_s * 1_000_000)
        if self.kind == "respell":
            return respell(sent[-1 - self.target % len(sent)], self.role, signing)
        if self.kind == "amend":
            earlier = logged.get("report")
            target, by = earlier[-1 - self.target % len(earlier)] if earlier else (self.target, "")
            lat, lon = PLACES[by or self.party]
            corrected = report(by or self.party, lat=lat + 0.01, lon=lon, narrative=f"amended {n}")
            corrected.created_time.CopyFrom(created)
            amendment = pb.IncidentAmendment(
                incident_index=target, created_time=created, party=by or self.party,
                corrected=corrected, reason="moved",
            )  # fmt: skip
            signing = [KEYS[i] for i in REPORTER[by or self.party]] if self.role == 0 else signing
            return dsse.sign(statements.AMENDMENT, amendment.SerializeToString(), signing).to_json()
        if self.kind == "report":
            lat, lon = PLACES[self.party]
            r = report(self.party, lat=lat, lon=lon, narrative=f"report {n}")
            r.created_time.CopyFrom(created)
            return sign_report(r, signing)
        if self.kind in INVESTIGATION_STEPS:
            earlier = logged.get("report" if self.kind == "request" else "request")
            target, by = earlier[-1 - self.target % len(earlier)] if earlier else (self.target, "")
            op = self
            if self.role == 0 and by and self.kind != "request":
                asked = "AZE" if by == "ARM" else "ARM"
                cosigners = (0, 1, 4) if self.kind == "terms" else AUTHORITY[asked]
                op = replace(self, party=asked, signers=cosigners)
            kind, statement = op.investigation_step(created, target)
            signing = [KEYS[i] for i in op.signers]
            return dsse.sign(kind, statement.SerializeToString(), signing).to_json()
        change = pb.KeyChange(party=self.party, created_time=created, reason=f"change {n}")
        if self.kind == "add":
            change.add.add(public_key=_pub(self.target), role=ROLES[self.role])
        elif self.kind == "revoke":
            change.revoke_key_ids.append(dsse.key_id(_pub(self.target)))
        else:
            change.authority_threshold = self.target
        return dsse.sign(statements.KEY_CHANGE, change.SerializeToString(), signing).to_json()

    def investigation_step(self, created: Timestamp, target: int) -> tuple[str, Message]:
        other = "AZE" if self.party == "ARM" else "ARM"
        if self.kind == "request":
            return statements.INVESTIGATION_REQUEST, pb.InvestigationRequest(
                created_time=created, party=self.party, incident_indexes=[target],
                respondents=[other], answer_by=to_timestamp(NOW + 24 * 3600 * 1_000_000),
            )  # fmt: skip
        if self.kind == "answer":
            decision = [pb.INVESTIGATION_DECISION_ACCEPT, pb.INVESTIGATION_DECISION_DECLINE]
            return statements.INVESTIGATION_RESPONSE, pb.InvestigationResponse(
                investigation_index=target, created_time=created, party=self.party,
                decision=decision[self.role % 2],
            )  # fmt: skip
        return statements.INVESTIGATION_TERMS, pb.InvestigationTerms(
            investigation_index=target, created_time=created,
            member_key_ids=[dsse.key_id(_pub(3)), dsse.key_id(_pub(5))],
            sites=[pb.InvestigationSite(name="post", center=pb.GeoPoint(latitude=40.88,
                                                                       longitude=45.39))],
            outcome_vocabulary=[pb.FINDING_OUTCOME_CONFIRMED],
            publication_rule=pb.PUBLICATION_RULE_OPEN,
        )  # fmt: skip


def respell(data: bytes, how: int, signing: list[SigningKey]) -> bytes:
    """The same envelope spelt otherwise: indented, keys reordered, with escaped slashes
    (each the same statement), or with another signature added (the same statement with
    other signers)."""
    doc = json.loads(data)
    if how == 0:
        return json.dumps(doc, indent=3).encode()
    if how == 1:
        return json.dumps(dict(reversed(list(doc.items())))).replace("/", "\\/").encode()
    envelope = dsse.Envelope.from_json(data)
    for key in signing:
        envelope = envelope.add_signature(key)
    return envelope.to_json()


INVESTIGATION_STEPS = ("request", "answer", "terms")
# Enough of each party's authority keys for its threshold (ARM: 2 of 3).
AUTHORITY = {"ARM": (0, 1), "AZE": (4,)}
REPORTER = {"ARM": (3,), "AZE": (5,)}
OPENING = (("ARM", (3,)), ("AZE", (5,)))
# Signer sets that often make sense for a party and kind, so that many statements pass.
PLAUSIBLE: dict[tuple[str, str], list[tuple[int, ...]]] = {
    ("ARM", "report"): [(3,), (6,), (7,)],
    ("AZE", "report"): [(5,), (8,), (9,)],
    ("ARM", "change"): [(0, 1), (1, 2), (0, 2), (0, 1, 2), (0, 6), (6, 7)],
    ("AZE", "change"): [(4,), (4, 8), (8,), (9,)],
    ("ARM", "request"): [(0,), (1,), (6,)],
    ("AZE", "request"): [(4,), (8,)],
    ("ARM", "answer"): [(0,), (0, 2), (1, 2)],
    ("AZE", "answer"): [(4,), (8,)],
    ("ARM", "terms"): [(0, 1, 4), (0, 4), (1, 2, 4, 8)],
    ("AZE", "terms"): [(0, 1, 4), (4,), (0, 2, 4)],
}


@st.composite
def ops(draw: st.DrawFn) -> Op:
    kind = draw(
        st.sampled_from(
            ["report", "amend", "add", "revoke", "threshold", "respell", "respell"]
            + 2 * list(INVESTIGATION_STEPS)
        )
    )
    party = draw(st.sampled_from(["ARM", "AZE"]))
    plausible = PLAUSIBLE[
        (
            party,
            "report"
            if kind in ("amend", "respell")
            else kind
            if kind in ("report", *INVESTIGATION_STEPS)
            else "change",
        )
    ]
    signers = draw(
        st.one_of(
            st.sampled_from(plausible),
            st.sampled_from(plausible),
            st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True).map(tuple),
        )
    )
    return Op(
        kind=kind,
        party=party,
        target=draw(
            st.integers(1, 3)
            if kind == "threshold"
            else st.integers(0, 3)
            if kind in INVESTIGATION_STEPS
            else st.integers(0, 9)
        ),
        # For investigation steps, 0 mostly: the answer or terms of the parties asked.
        role=draw(st.sampled_from([0, 0, 1]) if kind in INVESTIGATION_STEPS else st.integers(0, 2)),
        signers=signers,
        # Mostly fresh; now and then older than the 72 h window.
        age_s=draw(st.sampled_from([0, 0, 0, 3600, 80 * 3600])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops(), min_size=1, max_size=12))
@example(  # a whole investigation: request, acceptance, terms, then a second answer
    [
        Op("request", "ARM", 0, 0, (0,), 0),
        Op("answer", "ARM", 0, 0, (0,), 0),
        Op("terms", "ARM", 0, 0, (0,), 0),
        Op("answer", "ARM", 0, 0, (0,), 0),
    ]
)
@example(  # re-spellings of a report and an amendment, and one with another signature
    [
        Op("amend", "ARM", 0, 0, (3,), 0),
        Op("respell", "ARM", 0, 0, (3,), 0),
        Op("respell", "ARM", 1, 1, (3,), 0),
        Op("respell", "AZE", 1, 2, (5,), 0),
    ]
)
def test_server_decisions_equal_the_verifier_replay(sequence: list[Op]) -> None:
    # Every sequence opens with a report by each party, for investigation steps to name.
    sequence = [Op("report", party, 0, 0, signers, 0) for party, signers in OPENING] + sequence
    borders = load_default()
    with tempfile.TemporaryDirectory() as tmp:
        store = LedgerStore.open(f"sqlite:///{Path(tmp) / 'l.db'}")
        log_key = LogKey(ORIGIN, LOG)
        initialize(store, _founding(borders), log_key, borders)
        ledger = Ledger(store, log_key, borders, clock_us=lambda: NOW)
        outcomes: list[tuple[bytes, int | type[LedgerError] | None]] = []
        logged: dict[str, list[tuple[int, str]]] = {}
        try:
            for n, op in enumerate(sequence):
                envelope = op.envelope(n, logged, [e for e, _ in outcomes])
                outcome: int | type[LedgerError] | None
                try:
                    accepted = ledger.submit(envelope)
                    outcome = None if accepted.duplicate else accepted.receipt.index
                except LedgerError as e:
                    outcome = type(e)
                outcomes.append((envelope, outcome))
                if isinstance(outcome, int):
                    logged.setdefault(op.kind, []).append((outcome, op.party))
                label = (
                    "accepted" if isinstance(outcome, int) else getattr(outcome, "__name__", "dup")
                )
                event(f"{op.kind}: {label}")
            stored = {e.index: e.entry for e in store.iter_entries(0, store.tree_size())}
        finally:
            ledger.close()
            store.close()

    verifier = Replay()
    verifier.add(0, stored[0])
    assert verifier.trust is not None
    for envelope, outcome in outcomes:
        if isinstance(outcome, int):
            assert outcome == verifier.size, "indexes are contiguous"
            verifier.add(outcome, stored[outcome])  # raises if the verifier would refuse
            continue
        # A statement logged before: its first receipt (None) or ALREADY_EXISTS, by the
        # same rule the server applies; never a new entry.
        parsed = dsse.Envelope.from_json(envelope)
        first = verifier.statements.get(parsed.statement_sha256())
        if first is not None:
            logged_envelope = dsse.Envelope.from_json(parse_entry(stored[first]).envelope)
            try:
                judgment.resubmitted(logged_envelope, first, parsed)
            except LedgerError as e:
                assert type(e) is outcome, (type(e), outcome)
            else:
                assert outcome is None, f"a resubmission of entry {first} got {outcome}"
            continue
        assert outcome is not None, "the server called new a statement it had not logged"
        try:
            judgment.admit(verifier.trust, parsed, verifier.size, NOW, verifier.subjects.get)
        except LedgerError as e:
            assert type(e) is outcome, (type(e), outcome)
        else:
            raise AssertionError(f"the server refused ({outcome.__name__}); the verifier admits")
    assert verifier.size == len(stored)
