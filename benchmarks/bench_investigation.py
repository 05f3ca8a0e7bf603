"""Cost of a statement about a long-running investigation, as its history grows.

    python benchmarks/bench_investigation.py [--visits 600] [--window 50]

One ledger on SQLite (the real service, no gRPC): two reports, an investigation, its
acceptance and co-signed terms, then `--visits` visit records, each admitted against the
investigation as it stands. Prints the visits/s of the first `--window` visits (the
baseline, measured in the same run) and of the last `--window`, and their ratio: near 1.0
means the cost of judging a visit does not grow with the investigation's history.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey

from clients.reports import sign_report
from geo.borders import load_default
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.storage import LedgerStore
from tests.reports import HOUR_US, report

ORIGIN = "bench.ceasefire-ledger/arm-aze"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--visits", type=int, default=600)
    ap.add_argument("--window", type=int, default=50)
    args = ap.parse_args()
    k = {n: SigningKey.generate() for n in ("log", "arm-a", "arm-m", "arm-i", "aze-a", "aze-m")}

    def key(name: str, role: pb.Role.ValueType) -> pb.PartyKey:
        return pb.PartyKey(public_key=keys.public_bytes(k[name]), role=role)

    borders = load_default()
    root = pb.TrustRoot(
        origin=ORIGIN, log_public_key=keys.public_bytes(k["log"]),
        border_dataset_sha256=borders.sha256, border_dataset_files=dataset_files(borders),
        parties=[
            pb.Party(code="ARM", name="Armenia", authority_threshold=1, keys=[
                key("arm-a", pb.ROLE_AUTHORITY), key("arm-m", pb.ROLE_MONITOR),
                key("arm-i", pb.ROLE_INVESTIGATOR)]),
            pb.Party(code="AZE", name="Azerbaijan", authority_threshold=1, keys=[
                key("aze-a", pb.ROLE_AUTHORITY), key("aze-m", pb.ROLE_MONITOR)]),
        ],
    )  # fmt: skip
    founding = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [k["arm-a"], k["aze-a"]])
    with tempfile.TemporaryDirectory() as tmp:
        store = LedgerStore.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        log_key = LogKey(ORIGIN, k["log"])
        initialize(store, founding, log_key, borders)
        ledger = Ledger(store, log_key, borders)

        def send(kind: str, statement: Message, *signers: str) -> int:
            envelope = dsse.sign(kind, statement.SerializeToString(), [k[s] for s in signers])
            return ledger.submit(envelope.to_json()).receipt.index

        try:
            incident = ledger.submit(sign_report(report("ARM"), [k["arm-m"]])).receipt.index
            now = to_timestamp(now_us())
            inv = send(
                statements.INVESTIGATION_REQUEST,
                pb.InvestigationRequest(
                    created_time=now,
                    party="ARM",
                    incident_indexes=[incident],
                    respondents=["AZE"],
                    answer_by=to_timestamp(now_us() + 24 * HOUR_US),
                ),
                "arm-a",
            )
            send(
                statements.INVESTIGATION_RESPONSE,
                pb.InvestigationResponse(
                    investigation_index=inv,
                    created_time=now,
                    party="AZE",
                    decision=pb.INVESTIGATION_DECISION_ACCEPT,
                ),
                "aze-a",
            )
            send(statements.INVESTIGATION_TERMS, pb.InvestigationTerms(
                investigation_index=inv, created_time=now,
                member_key_ids=[dsse.key_id(keys.public_bytes(k["arm-i"]))],
                sites=[pb.InvestigationSite(
                    name="post", center=pb.GeoPoint(latitude=40.88, longitude=45.39))],
                outcome_vocabulary=[pb.FINDING_OUTCOME_CONFIRMED],
                publication_rule=pb.PUBLICATION_RULE_OPEN), "arm-a", "aze-a")  # fmt: skip
            stamps: list[float] = []
            for n in range(args.visits):
                visit = pb.VisitRecord(
                    investigation_index=inv, created_time=to_timestamp(now_us()), party="ARM",
                    site="post", started=now, ended=now, outcome=pb.VISIT_OUTCOME_COMPLETED,
                    notes=f"visit {n}", notes_language="en",
                )  # fmt: skip
                send(statements.VISIT, visit, "arm-i")
                stamps.append(time.perf_counter())
                if n % 100 == 0:
                    print(f"  {n}/{args.visits} visits", file=sys.stderr, flush=True)
        finally:
            ledger.close()
            store.close()
    w = args.window
    first = w / (stamps[w] - stamps[0])
    last = w / (stamps[-1] - stamps[-1 - w])
    print(f"visits {1}-{w}: {first:7.1f} visits/s (baseline)")
    print(f"visits {args.visits - w + 1}-{args.visits}: {last:7.1f} visits/s")
    print(f"ratio last/first: {last / first:.2f}x")


if __name__ == "__main__":
    main()
