"""Log entries as people and scripts read them."""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf import json_format

from ledger import dsse, merkle, statements
from ledger.clock import to_iso, to_us
from ledger.errors import LedgerError
from ledger.log_entry import parse_entry


def describe_entry(data: bytes) -> dict[str, Any]:
    entry = parse_entry(data)
    envelope = dsse.Envelope.from_json(entry.envelope)
    doc: dict[str, Any] = {
        "index": entry.index,
        "leaf_hash": merkle.leaf_hash(data).hex(),
        "integrated_time": to_iso(to_us(entry.integrated_time)),
        "previous_leaf_hash": entry.previous_leaf_hash.hex(),
        "envelope_sha256": hashlib.sha256(entry.envelope).hexdigest(),
        "payload_type": envelope.payload_type,
        "signatures": [{"keyid": s.keyid} for s in envelope.signatures],
        "validation": _as_dict(entry.validation),
    }
    try:
        doc["statement"] = _as_dict(statements.decode(envelope.payload_type, envelope.payload))
    except LedgerError as e:
        doc["statement_error"] = str(e)
    return doc


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
