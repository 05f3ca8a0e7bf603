"""`ceasefire border`: register border data sets, list and show them, check places, and
re-validate incidents against another data set."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import json_format

from clients import envelope_files, keys_cli, progress, reports, signing
from clients.client import connect
from clients.describe import describe_entry
from geo.defaults import DEFAULT_DATASET_DIR
from geo.manifest import dataset_digest
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.errors import InvalidArgument
from ledger.trust import DatasetInfo

if TYPE_CHECKING:
    from geo.borders import BorderDataset


def _registration(args: argparse.Namespace, borders: BorderDataset) -> pb.BorderDatasetRegistration:
    from geo import datasets

    files = [pb.DatasetFile(name=n, sha256=d, size=z) for n, d, z in datasets.file_list(borders)]
    reg = pb.BorderDatasetRegistration(
        created_time=to_timestamp(now_us()),
        dataset_sha256=dataset_digest({f.name: f.sha256 for f in files}),
        files=files,
        name=args.name,
        source=args.source,
        licence=args.licence,
        datum="EPSG:4326",
        line_kind=pb.LineKind.Value("LINE_KIND_" + args.line_kind.upper()),
        monitored_zone_m=args.monitored_zone_km * 1000,
        outside_zone=pb.OutsideZone.Value("OUTSIDE_ZONE_" + args.outside_zone.upper()),
        description=args.description or "",
    )
    statements.validate_border_dataset(reg)  # a clear error here, before anyone signs
    return reg


def _files(reg: pb.BorderDatasetRegistration, folder: Path) -> dict[str, bytes]:
    return {f.name: (folder / f.name).read_bytes() for f in reg.files}


def _in_force(reg: pb.BorderDatasetRegistration) -> str:
    return f"data set {reg.dataset_sha256} in force from here on"


def cmd_add(args: argparse.Namespace) -> int:
    from geo.borders import BorderDataset

    shown = progress.for_command(args)
    shown.note(f"reading the data set in {args.folder} ...")
    borders = BorderDataset.load(args.folder)
    reg = _registration(args, borders)
    envelope = signing.sign(statements.BORDER_DATASET, reg, args.key)
    if not args.out:
        shown.note(f"sending its {len(reg.files)} files; the log checks them ...")
    # Written with --out, the registration travels with the folder's files: `border send`.
    return signing.deliver(
        args,
        envelope,
        _in_force(reg),
        then=f"ceasefire border send {args.out} {args.folder}",
        files=None if args.out else _files(reg, args.folder),
    )


def cmd_send(args: argparse.Namespace) -> int:
    envelope = envelope_files.read(args.file)
    reg = statements.decode(envelope.payload_type, envelope.payload)
    if not isinstance(reg, pb.BorderDatasetRegistration):
        raise envelope_files.EnvelopeFileError(f"{args.file}: not a border data set registration")
    shown = progress.for_command(args)
    files = _files(reg, args.folder)
    size = sum(len(data) for data in files.values())
    # The server checks the data set's geometry before it logs it: this can take a while.
    shown.note(f"sending {len(files)} files ({size / 1e6:.1f} MB); the log checks them ...")
    started = time.monotonic()
    index = signing.submit(args, envelope, files)
    shown.note(f"logged in {time.monotonic() - started:.1f} s")
    if args.json:
        doc = {
            "index": index,
            "kind": "BorderDatasetRegistration",
            "dataset_sha256": reg.dataset_sha256,
            "what": _in_force(reg),
            "files": len(files),
            "bytes": size,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"entry {index}: {_in_force(reg)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        state, _ = keys_cli.key_state(client, args.trust_root)
    rows = [
        {
            "sha256": d.sha256,
            "name": d.name or "(trust root)",
            "registered_at": d.registered_at,
            "in_force": d.sha256 == state.border_dataset_sha256,
            "monitored_zone_m": d.monitored_zone_m,
            "files": dict(d.files),
        }
        for d in sorted(state.datasets.values(), key=lambda d: d.registered_at)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "in force" if r["in_force"] else "        "
        print(f"{mark}  {r['sha256']}  entry {r['registered_at']:<5} {r['name']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        state, _ = keys_cli.key_state(client, args.trust_root)
        info = state.datasets.get(args.sha256)
        if info is None:
            print(f"error: data set {args.sha256} is not registered", file=sys.stderr)
            return 1
        entry = client.entry(info.registered_at)
    doc = describe_entry(entry.entry)
    doc["in_force"] = info.sha256 == state.border_dataset_sha256
    # The entry as logged is JSON either way (--json is accepted, as on every command).
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 0


def _facts_row(
    report: pb.IncidentReport, borders: BorderDataset, info: DatasetInfo
) -> dict[str, Any]:
    from ledger import geofacts

    try:
        geo = geofacts.compute(report, borders, info)
    except InvalidArgument as e:
        return {"error": str(e)}
    return json_format.MessageToDict(geo, preserving_proto_field_name=True)


def cmd_check(args: argparse.Namespace) -> int:
    from geo.borders import BorderDataset

    borders = BorderDataset.load(args.border_data)
    info = DatasetInfo(borders.sha256, tuple(sorted(borders.files.items())), 0, borders.name)
    if args.file:
        places = reports.load_reports(args.file)
    elif args.latitude is not None and args.longitude is not None:
        place = pb.IncidentReport()
        place.location.point.latitude = args.latitude
        place.location.point.longitude = args.longitude
        place.location.uncertainty_m = args.uncertainty
        places = [place]
    else:
        print("error: give LATITUDE LONGITUDE or --file", file=sys.stderr)
        return 2
    rows = [_facts_row(r, borders, info) for r in places]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if "error" in r:
                print(f"refused: {r['error']}")
                continue
            side = (
                "ambiguous (the uncertainty reaches across the border)"
                if r.get("ambiguous")
                else (r.get("territory") or "neither party's territory")
            )
            print(
                f"{side}; {r.get('distance_to_border_m', 0) / 1000:.2f} km from the "
                f"{r.get('nearest_segment')} border (data set {borders.sha256[:12]})"
            )
    return 1 if any("error" in r for r in rows) else 0


def cmd_revalidate(args: argparse.Namespace) -> int:
    from ledger import geofacts

    rows: list[dict[str, Any]] = []
    with connect(args) as client:
        for r in client.revalidate(
            args.sha256, changed_only=args.changed_only, parties=args.party or [], limit=args.limit
        ):
            rows.append(
                {
                    "index": r.index,
                    "side_changed": r.side_changed,
                    "recorded": geofacts.side(r.recorded),
                    "revalidated": geofacts.side(r.revalidated) if not r.error else None,
                    "recorded_distance_m": r.recorded.distance_to_border_m,
                    "revalidated_distance_m": r.revalidated.distance_to_border_m,
                    "error": r.error or None,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no incidents match")
    for row in rows:
        mark = "CHANGES" if row["side_changed"] else "same   "
        after = row["error"] or (
            f"{row['revalidated']} ({row['revalidated_distance_m'] / 1000:.2f} km)"
        )
        print(
            f"#{row['index']:<5} {mark} recorded {row['recorded']} "
            f"({row['recorded_distance_m'] / 1000:.2f} km) -> {after}"
        )
    return 0


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    bp = sub.add_parser("border", help="border data sets: add, list, show, check, revalidate")
    bs = bp.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = bs.add_parser("add", help="register a data set folder (territories + border files)")
    sp.add_argument("folder", type=Path)
    sp.add_argument("--name", required=True)
    sp.add_argument("--source", required=True, help="where it comes from, and its version")
    sp.add_argument("--licence", required=True)
    sp.add_argument(
        "--line-kind", default="de_facto", choices=["de_facto", "delimited", "claimed", "mixed"]
    )
    sp.add_argument(
        "--monitored-zone-km",
        type=float,
        default=0.0,
        help="places farther from the border are outside the zone (0: anywhere)",
    )
    sp.add_argument("--outside-zone", default="refuse", choices=["refuse", "flag"])
    sp.add_argument("--description")
    signing.add_options(sp, server_opt)
    progress.add_option(sp)
    sp.set_defaults(func=cmd_add)

    sp = bs.add_parser("send", help="submit a cosigned registration with its files")
    sp.add_argument("file", type=Path)
    sp.add_argument("folder", type=Path)
    server_opt(sp)
    json_opt(sp)
    progress.add_option(sp)
    sp.set_defaults(func=cmd_send)

    sp = bs.add_parser("list", help="registered data sets (replayed and verified locally)")
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256")
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_list)

    sp = bs.add_parser("show", help="one registration, as logged")
    sp.add_argument("sha256")
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256")
    server_opt(sp)
    sp.add_argument("--json", action="store_true", help="accepted: the entry is always JSON")
    sp.set_defaults(func=cmd_show)

    sp = bs.add_parser("check", help="the geo facts of a place, or of a file of incidents")
    sp.add_argument("latitude", type=float, nargs="?")
    sp.add_argument("longitude", type=float, nargs="?")
    sp.add_argument("--uncertainty", type=float, default=0.0, help="metres")
    sp.add_argument("--file", type=Path, help="incident reports (JSON or YAML)")
    sp.add_argument("--border-data", type=Path, default=DEFAULT_DATASET_DIR)
    json_opt(sp)
    sp.set_defaults(func=cmd_check)

    sp = bs.add_parser("revalidate", help="what another registered data set would say")
    sp.add_argument("sha256")
    sp.add_argument("--changed-only", action="store_true")
    sp.add_argument("--party", action="append")
    sp.add_argument("--limit", type=int, default=0)
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_revalidate)
