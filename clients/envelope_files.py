"""Signed statements as files, for signing on several machines: one authority signs and
writes the DSSE envelope, the next adds a signature (`ceasefire cosign`), the last submits
it (`ceasefire submit FILE`). The payload never changes once the first signature is on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import json_format
from nacl.signing import SigningKey

from ledger import statements
from ledger.formats import dsse


class EnvelopeFileError(ValueError):
    pass


def is_envelope_file(path: Path) -> bool:
    """A JSON object with a payloadType: a signed statement, not a report to sign."""
    if path.suffix != ".json":
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and "payloadType" in doc


def read(path: Path) -> dsse.Envelope:
    try:
        return dsse.Envelope.from_json(path.read_bytes())
    except OSError as e:
        raise EnvelopeFileError(f"{path}: cannot read ({e})") from e
    except dsse.EnvelopeError as e:
        raise EnvelopeFileError(f"{path}: not a DSSE envelope ({e})") from e


def write(path: Path, envelope: dsse.Envelope) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(envelope.to_json() + b"\n")
    os.replace(tmp, path)  # a crash never leaves half an envelope


def cosign(envelope: dsse.Envelope, keys: Sequence[SigningKey]) -> dsse.Envelope:
    for key in keys:
        envelope = envelope.add_signature(key)
    return envelope


def describe(envelope: dsse.Envelope) -> str:
    """What is being signed, for a person to read before adding a signature."""
    statement = statements.decode(envelope.payload_type, envelope.payload)
    body = json_format.MessageToDict(statement, preserving_proto_field_name=True)
    kind = envelope.payload_type.removeprefix(statements.PAYLOAD_TYPE_FORMAT.split("{")[0])
    signers = ", ".join(s.keyid[:16] for s in envelope.signatures) or "nobody yet"
    return f"{kind.split('+')[0]} signed by {signers}:\n{json.dumps(body, indent=2)}"
