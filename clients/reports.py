"""Incident reports from JSON or YAML files, and signing them into DSSE envelopes.

Files use the proto field names (see docs/incident-report.md). Enum values may be given
in full (INCIDENT_CATEGORY_SNIPER) or short (sniper); times as RFC 3339 strings.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import json_format
from nacl.signing import SigningKey

from ledger import dsse, statements
from ledger.clock import now_us, to_timestamp

# Where an enum sits in a report -> the prefix of its full value names.
ENUM_FIELDS: dict[tuple[str, ...], str] = {
    ("category",): "INCIDENT_CATEGORY_",
    ("observation_mode",): "OBSERVATION_MODE_",
    ("window", "precision"): "TIME_PRECISION_",
    ("location", "precision"): "LOCATION_PRECISION_",
}


class ReportFileError(ValueError):
    pass


def _plain(value: Any) -> Any:
    """YAML turns unquoted times into datetimes; protobuf's JSON wants RFC 3339 strings."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _expand_enums(doc: dict[str, Any]) -> None:
    for path, prefix in ENUM_FIELDS.items():
        holder: Any = doc
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(path[-1]), str):
            value = holder[path[-1]].strip().upper().replace("-", "_").replace(" ", "_")
            holder[path[-1]] = value if value.startswith(prefix) else prefix + value


def report_from_dict(doc: Any, *, source: str = "report") -> pb.IncidentReport:
    if not isinstance(doc, dict):
        raise ReportFileError(f"{source}: expected a mapping of report fields")
    doc = _plain(doc)
    _expand_enums(doc)
    report = pb.IncidentReport()
    try:
        json_format.ParseDict(doc, report)
    except json_format.ParseError as e:
        raise ReportFileError(f"{source}: {e}") from e
    return report


def load_reports(path: Path) -> list[pb.IncidentReport]:
    """One report, or a list of reports, from a .json, .yaml or .yml file."""
    try:
        text = path.read_text(encoding="utf-8")
        docs = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise ReportFileError(f"{path}: cannot read ({e})") from e
    items = docs if isinstance(docs, list) else [docs]
    return [report_from_dict(d, source=f"{path}[{i}]") for i, d in enumerate(items)]


def sign_report(
    report: pb.IncidentReport, keys: Sequence[SigningKey], *, created_us: int | None = None
) -> bytes:
    """The DSSE JSON envelope of a report; sets created_time if the file left it out."""
    if not report.HasField("created_time"):
        report.created_time.CopyFrom(to_timestamp(created_us or now_us()))
    return dsse.sign(statements.INCIDENT_REPORT, report.SerializeToString(), keys).to_json()
