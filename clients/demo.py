"""`ceasefire demo`: a throwaway ledger, a real server on loopback, signed reports, an audit.

Everything here is what a user would do by hand with the other commands; the demo only
strings them together on a temporary SQLite file.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey

from clients.cli import log_category
from clients.cli import main as cli
from clients.client import LedgerClient, describe_error
from clients.reports import sign_report
from geo.borders import load_default
from ledger import investigations, keys, sealing, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore

HOUR_US = 3600 * 1_000_000
C = pb  # enum constants


@dataclass(frozen=True)
class Sample:
    party: str
    place: str
    lat: float
    lon: float
    hours_ago: float
    category: pb.IncidentCategory.ValueType
    mode: pb.ObservationMode.ValueType
    blames: str
    narrative: str


# Real places near the line; the reports themselves are invented for the demo.
SAMPLES = [
    Sample(
        "ARM",
        "Berd",
        40.8811,
        45.3875,
        70,
        C.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
        C.OBSERVATION_MODE_HEARD,
        "AZE",
        "Automatic fire from the east, about 20 minutes.",
    ),
    Sample(
        "AZE",
        "Gazakh",
        41.0933,
        45.3661,
        66,
        C.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
        C.OBSERVATION_MODE_HEARD,
        "ARM",
        "Bursts of fire heard west of the town.",
    ),
    Sample(
        "ARM",
        "Noyemberyan",
        41.1725,
        44.9994,
        60,
        C.INCIDENT_CATEGORY_SNIPER,
        C.OBSERVATION_MODE_SEEN,
        "AZE",
        "A farm vehicle hit by a single shot; no one hurt.",
    ),
    Sample(
        "AZE",
        "Tovuz",
        40.9922,
        45.6286,
        52,
        C.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY,
        C.OBSERVATION_MODE_HEARD,
        "ARM",
        "Two mortar rounds heard north-west of Tovuz.",
    ),
    Sample(
        "ARM",
        "Ijevan",
        40.8756,
        45.1492,
        47,
        C.INCIDENT_CATEGORY_DRONE_STRIKE,
        C.OBSERVATION_MODE_SENSOR,
        "AZE",
        "A small drone tracked crossing the line.",
    ),
    Sample(
        "AZE",
        "Kalbajar",
        40.1050,
        46.0383,
        40,
        C.INCIDENT_CATEGORY_ENGINEERING_WORKS,
        C.OBSERVATION_MODE_SEEN,
        "ARM",
        "New trench works seen on the ridge to the west.",
    ),
    Sample(
        "ARM",
        "Jermuk",
        39.8414,
        45.6686,
        33,
        C.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY,
        C.OBSERVATION_MODE_HEARD,
        "AZE",
        "Artillery heard to the east of the resort.",
    ),
    Sample(
        "AZE",
        "Lachin",
        39.6400,
        46.5467,
        28,
        C.INCIDENT_CATEGORY_TROOP_MOVEMENT,
        C.OBSERVATION_MODE_THIRD_PARTY_REPORT,
        "ARM",
        "Residents report vehicles on the road.",
    ),
    Sample(
        "ARM",
        "Goris",
        39.5111,
        46.3386,
        20,
        C.INCIDENT_CATEGORY_PROPERTY_DAMAGE,
        C.OBSERVATION_MODE_SEEN,
        "AZE",
        "A roof damaged overnight; shell fragments found.",
    ),
    Sample(
        "AZE",
        "Sadarak",
        39.7117,
        44.8867,
        14,
        C.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
        C.OBSERVATION_MODE_HEARD,
        "ARM",
        "Fire heard from the north across the river.",
    ),
    Sample(
        "ARM",
        "Kapan",
        39.2075,
        46.4058,
        8,
        C.INCIDENT_CATEGORY_AIRSPACE_VIOLATION,
        C.OBSERVATION_MODE_SEEN,
        "AZE",
        "An unidentified aircraft seen over the valley.",
    ),
    Sample(
        "AZE",
        "Zangilan",
        39.0858,
        46.6525,
        3,
        C.INCIDENT_CATEGORY_DETENTION,
        C.OBSERVATION_MODE_THIRD_PARTY_REPORT,
        "ARM",
        "A shepherd reported detained.",
    ),
]


def _report(s: Sample) -> pb.IncidentReport:
    start = now_us() - int(s.hours_ago * HOUR_US)
    return pb.IncidentReport(
        reporting_party=s.party,
        window=pb.TimeWindow(
            start=to_timestamp(start),
            end=to_timestamp(start + HOUR_US // 3),
            precision=pb.TIME_PRECISION_HOUR,
        ),
        location=pb.Location(
            point=pb.GeoPoint(latitude=s.lat, longitude=s.lon),
            uncertainty_m=1000,
            precision=pb.LOCATION_PRECISION_NEAR,
        ),
        category=s.category,
        observation_mode=s.mode,
        alleged_responsible_party=s.blames,
        narrative=s.narrative,
        narrative_language="en",
    )


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(*, keep: bool = False) -> int:
    home = Path(tempfile.mkdtemp(prefix="ceasefire-demo-"))
    try:
        return _run(home)
    finally:
        if keep:
            print(f"\nkept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _run(home: Path) -> int:
    _step("1. Keys: the log's, and per party an authority and a monitor team (Ed25519)")
    names = ("log", "arm-authority", "arm-monitor", "aze-authority", "aze-monitor")
    k: dict[str, SigningKey] = {}
    for name in names:
        k[name] = keys.generate()
        keys.write_private(home / f"{name}.key", k[name])
        print(f"  {name:<14} key id {dsse.key_id(keys.public_bytes(k[name]))}")

    _step("2. A ledger on SQLite; its trust root, signed by both parties' authorities")
    borders = load_default()
    origin = "demo.ceasefire-ledger/arm-aze"

    def party(code: str, name: str) -> pb.Party:
        lower = code.lower()
        return pb.Party(
            code=code,
            name=name,
            authority_threshold=1,
            keys=[
                pb.PartyKey(public_key=keys.public_bytes(k[f"{lower}-{role}"]), role=value)
                for role, value in (("authority", pb.ROLE_AUTHORITY), ("monitor", pb.ROLE_MONITOR))
            ],
        )

    root = pb.TrustRoot(
        origin=origin,
        log_public_key=keys.public_bytes(k["log"]),
        border_dataset_sha256=borders.sha256,
        border_dataset_files=dataset_files(borders),
        created_time=to_timestamp(now_us()),
        parties=[party("ARM", "Armenia"), party("AZE", "Azerbaijan")],
        finding_policies=[
            pb.NamedPolicy(name="joint", expression="AND(ARM.authority, AZE.authority)")
        ],
    )
    founding = dsse.sign(
        statements.TRUST_ROOT, root.SerializeToString(), [k["arm-authority"], k["aze-authority"]]
    )
    db = home / "ledger.db"
    store = LedgerStore.open(str(db))
    log_key = LogKey(origin, k["log"])
    first = initialize(store, founding, log_key, borders)
    digest = hashlib.sha256(parse_entry(first.entry).envelope).hexdigest()
    print(f"  {db}\n  trust root sha256 {digest}")
    print(f"  border data: {borders.name}, sha256 {borders.sha256}")

    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    print(f"  gRPC server on {address} (health and reflection enabled)")
    try:
        with LedgerClient(address) as client:
            _submit_all(client, k)
            _rotate(client, k)
            incident = _investigate(client, k)
            print("  its dossier (ceasefire dossier):")
            cli(["dossier", str(incident), "--server", address])
            _prevent(client, k)
        _step("8. The timeline, by incident time (ceasefire timeline)")
        cli(["timeline", "--server", address])
        _step("9. The latest checkpoint, a C2SP signed note (ceasefire checkpoint)")
        cli(["checkpoint", "--server", address])
        _step("10. A full audit, trusting only the pinned trust root (ceasefire verify)")
        state = str(home / "verified.checkpoint")
        code = cli(["verify", "--server", address, "--trust-root", digest, "--state", state])
        with LedgerClient(address) as client:
            client.submit(sign_report(_report(SAMPLES[0]), [k["arm-monitor-2"]]))
        print("  one more report, then verify again: the log must be consistent with before")
        code = code or cli(
            ["verify", "--server", address, "--trust-root", digest, "--state", state]
        )
    finally:
        server.stop(grace=None).wait()
        ledger.close()
        store.close()
    print("\nThe same commands work against a long-running `ceasefire serve`; see README.md.")
    return code


def _submit_all(client: LedgerClient, k: dict[str, SigningKey]) -> None:
    _step("3. Twelve signed incident reports from both sides, checked against the border")
    for s in SAMPLES:
        envelope = sign_report(_report(s), [k[f"{s.party.lower()}-monitor"]])
        r = client.submit(envelope)
        geo = parse_entry(client.entry(r.receipt.index).entry).validation.geo
        print(
            f"  #{r.receipt.index:<3} {s.party} {log_category(s.category):<20} at {s.place:<12}"
            f" -> in {geo.territory or 'neither'}, {geo.distance_to_border_m / 1000:5.1f} km "
            f"from the {geo.nearest_segment} border"
        )
    _step("4. What the ledger refuses, and why (nothing is written)")
    wrong_party = _report(SAMPLES[1])  # an AZE report...
    attempts = [
        ("an ARM monitor signing a report in AZE's name", wrong_party, "arm-monitor"),
        (
            "a report placed in Paris",
            _report(
                Sample(
                    "ARM",
                    "Paris",
                    48.8566,
                    2.3522,
                    2,
                    C.INCIDENT_CATEGORY_OTHER,
                    C.OBSERVATION_MODE_SEEN,
                    "",
                    "Test",
                )
            ),
            "arm-monitor",
        ),
    ]
    for what, report, key in attempts:
        try:
            client.submit(sign_report(report, [k[key]]))
            print(f"  UNEXPECTED: {what} was accepted")
        except grpc.RpcError as e:
            print(f"  {what}:\n    {describe_error(e)}")
    retry = sign_report(_report(SAMPLES[2]), [k["arm-monitor"]])
    a, b = client.submit(retry), client.submit(retry)
    print(
        f"  the same envelope sent twice (a retry over a bad link): entry {a.receipt.index}, "
        f"then the first receipt again (duplicate={b.duplicate}), nothing added"
    )


def _rotate(client: LedgerClient, k: dict[str, SigningKey]) -> None:
    _step("5. Key lifecycle: ARM's authority rotates its monitor team's key")
    k["arm-monitor-2"] = keys.generate()
    change = pb.KeyChange(
        party="ARM",
        created_time=to_timestamp(now_us()),
        add=[pb.PartyKey(public_key=keys.public_bytes(k["arm-monitor-2"]), role=pb.ROLE_MONITOR)],
        revoke_key_ids=[dsse.key_id(keys.public_bytes(k["arm-monitor"]))],
        reason="handset lost at the Berd post",
    )
    signed = dsse.sign(statements.KEY_CHANGE, change.SerializeToString(), [k["arm-authority"]])
    r = client.submit(signed.to_json())
    print(f"  #{r.receipt.index:<3} KeyChange by ARM's authority: new monitor key in, old key out")
    try:
        client.submit(sign_report(_report(SAMPLES[4]), [k["arm-monitor"]]))
        print("  UNEXPECTED: the revoked key was accepted")
    except grpc.RpcError as e:
        print(f"  a report signed with the old key afterwards:\n    {describe_error(e)}")
    r = client.submit(sign_report(_report(SAMPLES[4]), [k["arm-monitor-2"]]))
    print(f"  #{r.receipt.index:<3} the same report signed with the new key: accepted")


def _send(client: LedgerClient, kind: str, statement: Message, *signers: SigningKey) -> int:
    envelope = dsse.sign(kind, statement.SerializeToString(), list(signers))
    return client.submit(envelope.to_json()).receipt.index


def _investigate(client: LedgerClient, k: dict[str, SigningKey]) -> int:
    """ARM's first report, disputed by AZE, investigated jointly; returns its index."""
    _step("6. A joint investigation: request, acceptance, co-signed terms, sealed evidence")
    arm, aze = k["arm-authority"], k["aze-authority"]
    now = to_timestamp(now_us())
    incident = 1
    _send(client, statements.COUNTER_CLAIM, pb.CounterClaim(
        incident_index=incident, created_time=now, party="AZE", kind=pb.RESPONSE_KIND_DENIAL,
        narrative="No fire from our positions.", narrative_language="en"), aze)  # fmt: skip
    print(f"  AZE's authority denies report #{incident}: disputed")
    inv = _send(client, statements.INVESTIGATION_REQUEST, pb.InvestigationRequest(
        created_time=now, party="ARM", incident_indexes=[incident], respondents=["AZE"],
        answer_by=to_timestamp(now_us() + 48 * HOUR_US)), arm)  # fmt: skip
    _send(client, statements.INVESTIGATION_RESPONSE, pb.InvestigationResponse(
        investigation_index=inv, created_time=now, party="AZE",
        decision=pb.INVESTIGATION_DECISION_ACCEPT), aze)  # fmt: skip
    members = {dsse.key_id(keys.public_bytes(key)): keys.public_bytes(key) for key in (arm, aze)}
    terms = _send(client, statements.INVESTIGATION_TERMS, pb.InvestigationTerms(
        investigation_index=inv, created_time=now, member_key_ids=sorted(members),
        sites=[pb.InvestigationSite(name="Berd post",
                                    center=pb.GeoPoint(latitude=40.8811, longitude=45.3875),
                                    radius_m=1000)],
        outcome_vocabulary=[pb.FINDING_OUTCOME_CONFIRMED, pb.FINDING_OUTCOME_NOT_CONFIRMED,
                            pb.FINDING_OUTCOME_INCONCLUSIVE],
        publication_rule=pb.PUBLICATION_RULE_SEALED_UNTIL_FINDING), arm, aze)  # fmt: skip
    print(f"  #{inv} requested by ARM, accepted by AZE; #{terms} terms co-signed by both")
    photo = b"photo of the impact site " * 40
    box = sealing.seal(photo, members)
    record = pb.EvidenceRecord(
        created_time=now, party="ARM", incident_index=incident, investigation_index=inv,
        sha256=hashlib.sha256(photo).hexdigest(), media_type="image/jpeg", size=len(photo),
        blob=pb.BLOB_KIND_SEALED, blob_sha256=hashlib.sha256(box).hexdigest(),
        blob_size=len(box), sealed_to_key_ids=sorted(members))  # fmt: skip
    envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [arm])
    shared = client.submit_with_blobs(envelope.to_json(), {"blob": box}).receipt.index
    opened = sealing.open_sealed(client.blob(record.blob_sha256), aze) == photo
    print(f"  #{shared} evidence sealed to the members; AZE's member opens it: {opened}")
    draft = pb.FindingDraft(
        created_time=now, party="ARM", incident_indexes=[incident], policy="joint",
        outcome=pb.FINDING_OUTCOME_CONFIRMED, attribution="AZE", investigation_index=inv,
        reasoning="Fragments and both posts' logs agree.", reasoning_language="en")  # fmt: skip
    finding = _send(client, statements.FINDING, draft, arm)
    digest = hashlib.sha256(draft.SerializeToString()).hexdigest()
    for party, key in (("ARM", arm), ("AZE", aze)):
        _send(client, statements.ATTESTATION, pb.Attestation(
            finding_index=finding, draft_sha256=digest, party=party, created_time=now),
            key)  # fmt: skip
    status = investigations.status_name(client.investigation(inv).status)
    print(f"  #{finding} finding attested by both authorities; the investigation is {status}")
    return incident


def _prevent(client: LedgerClient, k: dict[str, SigningKey]) -> None:
    _step("7. Prevention: an advance notice and the hotline, each acknowledged")
    start = now_us()
    notice = _send(client, statements.NOTICE, pb.AdvanceNotice(
        created_time=to_timestamp(start), party="AZE", activity=pb.ACTIVITY_KIND_DEMINING,
        window=pb.TimeWindow(start=to_timestamp(start), end=to_timestamp(start + 24 * HOUR_US),
                             precision=pb.TIME_PRECISION_HOUR),
        location=pb.Location(point=pb.GeoPoint(latitude=40.9922, longitude=45.6286),
                             uncertainty_m=2000, precision=pb.LOCATION_PRECISION_NEAR),
        description="Controlled detonations north-west of Tovuz.",
        description_language="en"), k["aze-authority"])  # fmt: skip
    message = _send(client, statements.HOTLINE, pb.HotlineMessage(
        created_time=to_timestamp(now_us()), party="ARM", to_party="AZE",
        urgency=pb.HOTLINE_URGENCY_URGENT, text="Explosions heard near Tovuz: your demining?",
        text_language="en", in_reply_to=notice), k["arm-monitor-2"])  # fmt: skip
    for index, party, key in ((notice, "ARM", "arm-monitor-2"), (message, "AZE", "aze-monitor")):
        _send(client, statements.ACKNOWLEDGEMENT, pb.Acknowledgement(
            entry_index=index, created_time=to_timestamp(now_us()), party=party),
            k[key])  # fmt: skip
    for m in client.messages(start=notice):
        who = ", ".join(f"{p} at #{i}" for p, i in sorted(m.acknowledged_by.items()))
        print(f"  #{m.index} acknowledged by {who}")
