"""Incident reports from JSON or YAML files, and signing them into DSSE envelopes.

Files use the proto field names (see docs/incident-report.md). Enum values may be given
in full (INCIDENT_CATEGORY_SNIPER) or short (sniper); times as RFC 3339 strings. A field
the report does not have, a field given twice or an enum value it does not know is
refused, naming the file, the field (as written, e.g. `location.uncertainty_m`) and what
it expected; nothing is ever silently dropped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from nacl.signing import SigningKey

from clients import user_files
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse


class ReportFileError(user_files.UserFileError):
    pass


class _Refused(Exception):
    """A problem with a field; the loader adds the file's name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


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


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _enum(value: Any, enum: EnumDescriptor, where: str) -> Any:
    """A short (`sniper`) or full (`INCIDENT_CATEGORY_SNIPER`) enum name, made full."""
    if not isinstance(value, str):
        return value  # a number: protobuf's JSON judges it
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")  # e.g. INCIDENT_CATEGORY_
    name = value.strip().upper().replace("-", "_").replace(" ", "_")
    name = name if name.startswith(prefix) else prefix + name
    if name not in enum.values_by_name:
        choices = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values[1:])
        raise _Refused(where, f"{value!r} is not one of {choices}")
    return name


_PROTOBUF_NOISE = (
    re.compile(r"^(Failed to parse \w+ field: )+"),
    re.compile(r"\s+at\s+\"?[\w.\[\]]*\"?\.*$"),
)


def _scalar(name: str, value: Any, holder: Descriptor, where: str) -> None:
    """Let protobuf's JSON parser judge one leaf field, and say what it said in one line."""
    try:
        json_format.ParseDict({name: value}, GetMessageClass(holder)())
    except json_format.ParseError as e:
        said = " ".join(str(e).split())
        for noise in _PROTOBUF_NOISE:
            said = noise.sub("", said)
        raise _Refused(where, said.rstrip(".") or "not a valid value") from None


def _is_message(fd: FieldDescriptor) -> bool:
    """A message of ours, walked field by field (not Timestamp and other well-known types)."""
    return fd.message_type is not None and not fd.message_type.full_name.startswith(
        "google.protobuf."
    )


def _check(doc: Any, descriptor: Descriptor, where: str) -> dict[str, Any]:
    """`doc` checked against the message's fields, enums expanded; _Refused naming the field."""
    names = [f.name for f in descriptor.fields]
    if not isinstance(doc, dict):
        fields = ", ".join(names)
        raise _Refused(where, f"expected a mapping of {descriptor.name} fields ({fields})")
    out: dict[str, Any] = {}
    chosen: dict[str, str] = {}  # oneof name -> the field given for it
    for key, value in doc.items():
        fd = None
        if isinstance(key, str):
            fd = descriptor.fields_by_name.get(key) or next(
                (f for f in descriptor.fields if f.json_name == key), None
            )
        if fd is None:
            raise _Refused(where, user_files.unknown_key(key, names))
        here = _at(where, fd.name)
        if fd.name in out:
            raise _Refused(here, "given twice (once as written in proto, once in camelCase)")
        oneof = fd.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            if oneof.name in chosen:
                choices = ", ".join(f.name for f in oneof.fields)
                raise _Refused(
                    where, f"give one of {choices}; not both {chosen[oneof.name]} and {fd.name}"
                )
            chosen[oneof.name] = fd.name
        if value is None:
            continue  # an empty YAML field: the default
        if fd.is_repeated:
            if not isinstance(value, list):
                raise _Refused(here, f"expected a list, got {value!r}")
            out[fd.name] = [
                _value(fd, item, descriptor, f"{here}[{i}]", [item]) for i, item in enumerate(value)
            ]
        else:
            out[fd.name] = _value(fd, value, descriptor, here, value)
    return out


def _value(fd: FieldDescriptor, value: Any, holder: Descriptor, where: str, as_json: Any) -> Any:
    """One value of a field (one item of a repeated one), checked; `as_json` is how the
    field would hold it alone, for protobuf's parser to judge."""
    if fd.message_type is not None and _is_message(fd):
        return _check(value, fd.message_type, where)
    if fd.enum_type is not None:
        return _enum(value, fd.enum_type, where)
    _scalar(fd.name, as_json, holder, where)
    return value


def report_from_dict(doc: Any, *, source: str = "report") -> pb.IncidentReport:
    report = pb.IncidentReport()
    try:
        checked = _check(_plain(doc), report.DESCRIPTOR, "")
        json_format.ParseDict(checked, report, ignore_unknown_fields=False)
    except _Refused as e:
        raise ReportFileError(f"{source}: {e}") from None
    except json_format.ParseError as e:  # what the walk above did not foresee
        raise ReportFileError(f"{source}: {' '.join(str(e).split())}") from None
    return report


def load_reports(path: Path) -> list[pb.IncidentReport]:
    """One report, or a list of reports, from a .json, .yaml or .yml file."""
    docs = user_files.load(path)
    items = docs if isinstance(docs, list) else [docs]
    return [report_from_dict(d, source=f"{path}[{i}]") for i, d in enumerate(items)]


def sign_report(
    report: pb.IncidentReport, keys: Sequence[SigningKey], *, created_us: int | None = None
) -> bytes:
    """The DSSE JSON envelope of a report; sets created_time if the file left it out."""
    if not report.HasField("created_time"):
        report.created_time.CopyFrom(to_timestamp(created_us or now_us()))
    return dsse.sign(statements.INCIDENT_REPORT, report.SerializeToString(), keys).to_json()
