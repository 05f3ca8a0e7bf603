"""Regenerates the pictures and sample exports of docs/investigators.md from a demo ledger:
a throwaway SQLite ledger behind a server on loopback, invented reports from both parties
at real places near the line over five weeks, one disputed, one retracted.

    .venv/bin/python docs/images/make_images.py
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from ceasefire.v1 import statements_pb2 as pb

from clients.cli import main as cli
from clients.client import LedgerClient
from clients.reports import sign_report
from geo.borders import load_default
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore

HERE = Path(__file__).parent
HOUR_US = 3600 * 1_000_000
C = pb
PLACES = {  # (latitude, longitude) of real places near the line; the reports are invented
    "ARM": [(40.8811, 45.3875), (41.1725, 44.9994), (39.2075, 46.4058), (40.9500, 45.2400)],
    "AZE": [(41.0933, 45.3661), (39.7117, 44.8867), (39.0858, 46.6525), (40.9400, 45.6300)],
}
CATEGORIES = [
    C.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
    C.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
    C.INCIDENT_CATEGORY_SNIPER,
    C.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY,
    C.INCIDENT_CATEGORY_DRONE_STRIKE,
    C.INCIDENT_CATEGORY_ENGINEERING_WORKS,
]


def report(rng: random.Random, party: str, hours_ago: float) -> pb.IncidentReport:
    lat, lon = rng.choice(PLACES[party])
    start = now_us() - int(hours_ago * HOUR_US)
    r = pb.IncidentReport(
        reporting_party=party,
        window=pb.TimeWindow(
            start=to_timestamp(start),
            end=to_timestamp(start + HOUR_US // 2),
            precision=pb.TIME_PRECISION_HOUR,
        ),
        location=pb.Location(
            point=pb.GeoPoint(
                latitude=lat + rng.uniform(-0.03, 0.03), longitude=lon + rng.uniform(-0.03, 0.03)
            ),
            uncertainty_m=rng.choice([200, 500, 1000]),
            precision=rng.choice([C.LOCATION_PRECISION_EXACT, C.LOCATION_PRECISION_NEAR]),
        ),
        category=rng.choice(CATEGORIES),
        observation_mode=C.OBSERVATION_MODE_HEARD,
        alleged_responsible_party="AZE" if party == "ARM" else "ARM",
        narrative="Invented for the documentation.",
        narrative_language="en",
    )
    if rng.random() < 0.25:
        r.casualties.military_injured.CopyFrom(pb.CountRange(low=0, best=1, high=2))
    return r


def main() -> int:
    rng = random.Random(14)
    home = Path(tempfile.mkdtemp(prefix="ceasefire-images-"))
    k = {n: keys.generate() for n in ("log", "arm-a", "arm-m", "aze-a", "aze-m")}
    borders = load_default()

    def party(code: str, name: str) -> pb.Party:
        lower = code.lower()
        return pb.Party(
            code=code,
            name=name,
            authority_threshold=1,
            keys=[
                pb.PartyKey(public_key=keys.public_bytes(k[f"{lower}-a"]), role=C.ROLE_AUTHORITY),
                pb.PartyKey(public_key=keys.public_bytes(k[f"{lower}-m"]), role=C.ROLE_MONITOR),
            ],
        )

    root = pb.TrustRoot(
        origin="demo.ceasefire-ledger/arm-aze",
        log_public_key=keys.public_bytes(k["log"]),
        border_dataset_sha256=borders.sha256,
        border_dataset_files=dataset_files(borders),
        created_time=to_timestamp(now_us()),
        parties=[party("ARM", "Armenia"), party("AZE", "Azerbaijan")],
    )
    founding = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [k["arm-a"], k["aze-a"]])
    store = LedgerStore.open(str(home / "ledger.db"))
    log_key = LogKey(root.origin, k["log"])
    initialize(store, founding, log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        with LedgerClient(address) as client:
            submitted = []
            for n in range(28):
                p = "ARM" if n % 2 == 0 else "AZE"
                r = report(rng, p, rng.uniform(2, 34 * 24))
                submitted.append(client.submit(sign_report(r, [k[f"{p.lower()}-m"]])))
            polygon = report(rng, "ARM", 60)
            polygon.category = C.INCIDENT_CATEGORY_PROPERTY_DAMAGE
            polygon.location.polygon.CopyFrom(
                pb.GeoPolygon(
                    points=[
                        pb.GeoPoint(latitude=la, longitude=lo)
                        for la, lo in ((40.86, 45.36), (40.90, 45.36), (40.90, 45.42))
                    ]
                )
            )
            line = report(rng, "AZE", 100)
            line.category = C.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY
            line.location.line.CopyFrom(
                pb.GeoLine(
                    origin=pb.GeoPoint(latitude=40.98, longitude=45.30),
                    impact=pb.GeoPoint(latitude=41.06, longitude=45.45),
                )
            )
            sector = report(rng, "ARM", 30)
            sector.location.observation.CopyFrom(
                pb.Observation(
                    observer=pb.GeoPoint(latitude=39.2075, longitude=46.4058),
                    bearing_from_deg=70,
                    bearing_to_deg=130,
                    distance_min_m=2000,
                    distance_max_m=9000,
                )
            )
            for r, key in ((polygon, "arm-m"), (line, "aze-m"), (sector, "arm-m")):
                submitted.append(client.submit(sign_report(r, [k[key]])))
            now = to_timestamp(now_us())
            for n in (0, 4, 6):
                denial = pb.CounterClaim(
                    incident_index=submitted[n].receipt.index, created_time=now, party="AZE",
                    kind=C.RESPONSE_KIND_DENIAL, narrative="Denied.", narrative_language="en",
                )  # fmt: skip
                env = dsse.sign(statements.COUNTER_CLAIM, denial.SerializeToString(), [k["aze-a"]])
                client.submit(env.to_json())
            retraction = pb.IncidentRetraction(
                incident_index=submitted[2].receipt.index, created_time=now, party="ARM",
                reason="double-counted",
            )  # fmt: skip
            env = dsse.sign(statements.RETRACTION, retraction.SerializeToString(), [k["arm-a"]])
            client.submit(env.to_json())
        server_args = ["--server", address, "--quiet"]
        code = 0
        for argv in (
            ["map", "--out", str(HERE / "incidents-map.png")],
            ["map", "--out", str(HERE / "incidents-map.html")],
            ["chart", "--out", str(HERE / "incidents-per-week.png")],
            ["export-incidents", "--out", str(home / "incidents.geojson")],
            ["export-incidents", "--out", str(home / "incidents.csv")],
            ["export-incidents", "--out", str(home / "incidents.gpkg")],
        ):
            code = code or cli([*argv, *server_args])
        print(f"exports in {home}")
    finally:
        server.stop(grace=None).wait()
        ledger.close()
        store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
