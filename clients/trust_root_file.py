"""Trust roots written by people: a YAML (or JSON) file naming parties and key files.

    origin: ceasefire.example/arm-aze          # the log's name (checkpoint origin)
    parties:
      - code: ARM
        name: Armenia
        keys:
          - role: monitor                      # monitor, authority, observer, ...
            public_key_file: keys/arm-monitor.pub   # or public_key: <base64>
            label: ARM monitoring team 1

Relative key file paths are taken from the trust root file's folder. The log key and the
border data set's digest are filled in by `ceasefire init`.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import yaml
from ceasefire.v1 import statements_pb2 as pb

from ledger import keys
from ledger.clock import now_us, to_timestamp


class TrustRootFileError(ValueError):
    pass


def _role(value: Any, where: str) -> int:
    name = f"ROLE_{str(value).strip().upper()}"
    if name not in pb.Role.keys() or name == "ROLE_UNSPECIFIED":  # noqa: SIM118 (enum wrapper)
        roles = ", ".join(r.removeprefix("ROLE_").lower() for r in pb.Role.keys()[1:])
        raise TrustRootFileError(f"{where}.role: {value!r} is not one of {roles}")
    return pb.Role.Value(name)


def _public_key(spec: dict[str, Any], base: Path, where: str) -> bytes:
    if "public_key_file" in spec:
        try:
            return keys.read_public(base / str(spec["public_key_file"]))
        except keys.KeyFileError as e:
            raise TrustRootFileError(f"{where}.public_key_file: {e}") from e
    try:
        raw = base64.b64decode(str(spec["public_key"]), validate=True)
    except (KeyError, binascii.Error) as e:
        raise TrustRootFileError(f"{where}: public_key_file or base64 public_key needed") from e
    return raw


def load_trust_root(
    path: Path, *, log_public_key: bytes, border_dataset_sha256: str
) -> pb.TrustRoot:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TrustRootFileError(f"{path}: cannot read ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("parties"), list):
        raise TrustRootFileError(f"{path}: needs 'origin' and a list of 'parties'")
    root = pb.TrustRoot(
        origin=str(doc.get("origin", "")),
        log_public_key=log_public_key,
        border_dataset_sha256=border_dataset_sha256,
        created_time=to_timestamp(now_us()),
    )
    for i, p in enumerate(doc["parties"]):
        where = f"parties[{i}]"
        if not isinstance(p, dict):
            raise TrustRootFileError(f"{where}: expected a mapping")
        party = root.parties.add(code=str(p.get("code", "")), name=str(p.get("name", "")))
        for j, k in enumerate(p.get("keys") or []):
            kwhere = f"{where}.keys[{j}]"
            if not isinstance(k, dict):
                raise TrustRootFileError(f"{kwhere}: expected a mapping")
            party.keys.add(
                public_key=_public_key(k, path.parent, kwhere),
                role=_role(k.get("role"), kwhere),
                label=str(k.get("label", "")),
            )
    return root
