"""Trust roots written by people: a YAML (or JSON) file naming parties and key files.

    origin: ceasefire.example/arm-aze          # the log's name (checkpoint origin)
    parties:
      - code: ARM
        name: Armenia
        authority_threshold: 2                 # authority keys needed for key changes
        keys:
          - role: monitor                      # monitor, authority, observer, ...
            public_key_file: keys/arm-monitor.pub   # or public_key: <base64>
            label: ARM monitoring team 1
          - {role: authority, public_key_file: keys/arm-authority-1.pub}
          ...
    admission_policy: AND(ARM.authority, AZE.authority)   # optional (this is the default)
    finding_policies:                          # optional, for joint findings
      - {name: joint, expression: "AND(ARM.authority, AZE.authority)"}
    freshness: {max_age_seconds: 259200, max_future_seconds: 300}   # optional

Relative key file paths are taken from the trust root file's folder. The log's public key
and the border data set's digest are filled in when the trust root is drafted.
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


def _role(value: Any, where: str) -> pb.Role.ValueType:
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


def party_from_dict(p: Any, base: Path, where: str) -> pb.Party:
    if not isinstance(p, dict):
        raise TrustRootFileError(f"{where}: expected a mapping")
    try:
        threshold = int(p.get("authority_threshold", 1))
    except (TypeError, ValueError) as e:
        raise TrustRootFileError(f"{where}.authority_threshold: a whole number") from e
    party = pb.Party(
        code=str(p.get("code", "")), name=str(p.get("name", "")), authority_threshold=threshold
    )
    for j, k in enumerate(p.get("keys") or []):
        party.keys.append(key_from_dict(k, base, f"{where}.keys[{j}]"))
    return party


def key_from_dict(k: Any, base: Path, where: str) -> pb.PartyKey:
    if not isinstance(k, dict):
        raise TrustRootFileError(f"{where}: expected a mapping")
    return pb.PartyKey(
        public_key=_public_key(k, base, where),
        role=_role(k.get("role"), where),
        label=str(k.get("label", "")),
    )


def load_trust_root(
    path: Path,
    *,
    log_public_key: bytes,
    border_dataset_sha256: str,
    border_dataset_files: list[pb.DatasetFile],
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
        border_dataset_files=border_dataset_files,
        created_time=to_timestamp(now_us()),
    )
    for i, p in enumerate(doc["parties"]):
        root.parties.append(party_from_dict(p, path.parent, f"parties[{i}]"))
    root.admission_policy = str(doc.get("admission_policy", ""))
    for i, fp in enumerate(doc.get("finding_policies") or []):
        if not isinstance(fp, dict):
            raise TrustRootFileError(f"finding_policies[{i}]: expected name and expression")
        root.finding_policies.add(
            name=str(fp.get("name", "")), expression=str(fp.get("expression", ""))
        )
    fresh = doc.get("freshness") or {}
    if not isinstance(fresh, dict):
        raise TrustRootFileError("freshness: expected max_age_seconds and max_future_seconds")
    root.freshness.max_age_seconds = int(fresh.get("max_age_seconds", 0))
    root.freshness.max_future_seconds = int(fresh.get("max_future_seconds", 0))
    return root
