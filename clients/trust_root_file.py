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
    border_policy: AND(ARM.authority, AZE.authority)      # optional (this is the default)
    witness_policy: AND(ARM.witness, AZE.witness)         # optional: no witnesses required
    freshness: {max_age_seconds: 259200, max_future_seconds: 300}   # optional

Relative key file paths are taken from the trust root file's folder. The log's public key
and the border data set's digest are filled in when the trust root is drafted.

A party file (`ceasefire keys add-party --party-file`) holds one party as above: code,
name, authority_threshold, keys. A key these files do not know (a misspelling, say) is
refused with the file and the place named, never dropped.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from ceasefire.v1 import statements_pb2 as pb

from clients import user_files
from ledger import keys
from ledger.clock import now_us, to_timestamp
from ledger.formats.cosignature import parse_cosigner_vkey
from ledger.formats.note import NoteError

TOP_KEYS = (
    "origin",
    "parties",
    "admission_policy",
    "border_policy",
    "finding_policies",
    "freshness",
    "witness_policy",
)
PARTY_KEYS = ("code", "name", "authority_threshold", "keys")
KEY_KEYS = ("role", "public_key_file", "public_key", "label", "witness_name", "witness_vkey")
POLICY_KEYS = ("name", "expression")
FRESHNESS_KEYS = ("max_age_seconds", "max_future_seconds")


class TrustRootFileError(user_files.UserFileError):
    pass


class _Refused(Exception):
    """A problem at a place in the document; the loader adds the file's name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _mapping(doc: Any, known: tuple[str, ...], where: str) -> dict[Any, Any]:
    if not isinstance(doc, dict):
        raise _Refused(where, f"expected a mapping of {', '.join(known)}")
    problem = user_files.check_keys(doc, known)
    if problem:
        raise _Refused(where, problem)
    return doc


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Refused(where, "expected a list")
    return value


def _whole(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise _Refused(where, f"expected a whole number, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Refused(where, f"expected text, got {value!r}")
    return value


def role(value: Any) -> pb.Role.ValueType:
    """A role by its short name (monitor, authority, ...); ValueError naming the choices."""
    name = f"ROLE_{str(value).strip().upper()}"
    if name not in pb.Role.keys() or name == "ROLE_UNSPECIFIED":  # noqa: SIM118 (enum wrapper)
        roles = ", ".join(r.removeprefix("ROLE_").lower() for r in pb.Role.keys()[1:])
        raise ValueError(f"{value!r} is not one of {roles}")
    return pb.Role.Value(name)


def _role(value: Any, where: str) -> pb.Role.ValueType:
    try:
        return role(value)
    except ValueError as e:
        raise _Refused(_at(where, "role"), str(e)) from None


def _public_key(spec: dict[str, Any], base: Path, where: str) -> bytes:
    if "public_key_file" in spec and "public_key" in spec:
        raise _Refused(where, "give public_key_file or public_key, not both")
    if "public_key_file" in spec:
        try:
            return keys.read_public(base / str(spec["public_key_file"]))
        except keys.KeyFileError as e:
            raise _Refused(_at(where, "public_key_file"), str(e)) from e
    try:
        raw = base64.b64decode(str(spec["public_key"]), validate=True)
    except (KeyError, binascii.Error) as e:
        raise _Refused(where, "public_key_file or base64 public_key needed") from e
    return raw


def _party(doc: Any, base: Path, where: str) -> pb.Party:
    p = _mapping(doc, PARTY_KEYS, where)
    party = pb.Party(
        code=_text(p.get("code"), _at(where, "code")),
        name=_text(p.get("name"), _at(where, "name")),
        authority_threshold=_whole(
            p.get("authority_threshold"), _at(where, "authority_threshold"), 1
        ),
    )
    for j, k in enumerate(_list(p.get("keys"), _at(where, "keys"))):
        party.keys.append(_key(k, base, _at(where, f"keys[{j}]")))
    return party


def _key(doc: Any, base: Path, where: str) -> pb.PartyKey:
    k = _mapping(doc, KEY_KEYS, where)
    key = pb.PartyKey(
        role=_role(k.get("role"), where),
        label=_text(k.get("label"), _at(where, "label")),
        witness_name=_text(k.get("witness_name"), _at(where, "witness_name")),
    )
    if "witness_vkey" in k:
        # A C2SP cosigner key (what `ceasefire witness init` prints) names the key and
        # holds it: the form a witness of any C2SP ecosystem publishes.
        if "public_key" in k or "public_key_file" in k or "witness_name" in k:
            raise _Refused(where, "give witness_vkey alone, or public_key and witness_name")
        try:
            cosigner = parse_cosigner_vkey(_text(k["witness_vkey"], _at(where, "witness_vkey")))
        except NoteError as e:
            raise _Refused(_at(where, "witness_vkey"), str(e)) from None
        key.public_key, key.witness_name = cosigner.public_key, cosigner.name
    else:
        key.public_key = _public_key(k, base, where)
    return key


def load_party(path: Path) -> pb.Party:
    """One party from a YAML or JSON file (as in a trust root), key files relative to it."""
    doc = user_files.load(path)
    try:
        return _party(doc, path.parent, "")
    except _Refused as e:
        raise TrustRootFileError(f"{path}: {e}") from None


def load_trust_root(
    path: Path,
    *,
    log_public_key: bytes,
    border_dataset_sha256: str,
    border_dataset_files: list[pb.DatasetFile],
) -> pb.TrustRoot:
    doc = user_files.load(path)
    root = pb.TrustRoot(
        log_public_key=log_public_key,
        border_dataset_sha256=border_dataset_sha256,
        border_dataset_files=border_dataset_files,
        created_time=to_timestamp(now_us()),
    )
    try:
        top = _mapping(doc, TOP_KEYS, "")
        if not isinstance(top.get("parties"), list) or "origin" not in top:
            raise _Refused("", "needs 'origin' and a list of 'parties'")
        root.origin = _text(top["origin"], "origin")
        for i, p in enumerate(top["parties"]):
            root.parties.append(_party(p, path.parent, f"parties[{i}]"))
        root.admission_policy = _text(top.get("admission_policy"), "admission_policy")
        root.border_policy = _text(top.get("border_policy"), "border_policy")
        root.witness_policy = _text(top.get("witness_policy"), "witness_policy")
        for i, fp in enumerate(_list(top.get("finding_policies"), "finding_policies")):
            where = f"finding_policies[{i}]"
            policy = _mapping(fp, POLICY_KEYS, where)
            root.finding_policies.add(
                name=_text(policy.get("name"), _at(where, "name")),
                expression=_text(policy.get("expression"), _at(where, "expression")),
            )
        fresh = _mapping(top.get("freshness") or {}, FRESHNESS_KEYS, "freshness")
        root.freshness.max_age_seconds = _whole(
            fresh.get("max_age_seconds"), "freshness.max_age_seconds", 0
        )
        root.freshness.max_future_seconds = _whole(
            fresh.get("max_future_seconds"), "freshness.max_future_seconds", 0
        )
    except _Refused as e:
        raise TrustRootFileError(f"{path}: {e}") from None
    return root
