"""The trust root as the server and the verifier both use it: who holds which key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ceasefire.v1 import statements_pb2 as pb

from ledger.dsse import key_id
from ledger.errors import InvalidArgument

PARTY_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
# The origin doubles as the log's signed-note key name: printable ASCII, no space, no "+".
ORIGIN = re.compile(r"^[\x21-\x2a\x2c-\x7e]{1,255}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_PARTIES = 32
MAX_KEYS_PER_PARTY = 256


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    party: str
    role: pb.Role.ValueType
    public_key: bytes

    @property
    def role_name(self) -> str:
        return pb.Role.Name(self.role).removeprefix("ROLE_").lower()


@dataclass(frozen=True)
class Trust:
    origin: str
    log_public_key: bytes
    parties: Mapping[str, str]
    keys: Mapping[str, KeyInfo]
    border_dataset_sha256: str

    @classmethod
    def from_trust_root(cls, root: pb.TrustRoot) -> Trust:
        """Validate a trust root and index its keys; raise InvalidArgument naming the field."""
        if not ORIGIN.match(root.origin):
            raise InvalidArgument(
                "must be 1-255 printable ASCII characters without space or '+'", field="origin"
            )
        if len(root.log_public_key) != 32:
            raise InvalidArgument("must be a 32-byte Ed25519 key", field="log_public_key")
        if not SHA256_HEX.match(root.border_dataset_sha256):
            raise InvalidArgument("must be lowercase hex SHA-256", field="border_dataset_sha256")
        if not 2 <= len(root.parties) <= MAX_PARTIES:
            raise InvalidArgument(f"needs 2 to {MAX_PARTIES} parties", field="parties")
        parties: dict[str, str] = {}
        keys: dict[str, KeyInfo] = {}
        for i, party in enumerate(root.parties):
            where = f"parties[{i}]"
            if not PARTY_CODE.match(party.code):
                raise InvalidArgument("must match [A-Z][A-Z0-9_]{1,15}", field=f"{where}.code")
            if party.code in parties:
                raise InvalidArgument(f"duplicate party {party.code}", field=f"{where}.code")
            if not party.name or len(party.name) > 200:
                raise InvalidArgument("must be 1-200 characters", field=f"{where}.name")
            if len(party.keys) > MAX_KEYS_PER_PARTY:
                raise InvalidArgument("too many keys", field=f"{where}.keys")
            parties[party.code] = party.name
            for j, key in enumerate(party.keys):
                kwhere = f"{where}.keys[{j}]"
                if len(key.public_key) != 32:
                    raise InvalidArgument(
                        "must be a 32-byte Ed25519 key", field=f"{kwhere}.public_key"
                    )
                if key.role not in pb.Role.values() or key.role == pb.ROLE_UNSPECIFIED:
                    raise InvalidArgument("unknown or unspecified role", field=f"{kwhere}.role")
                kid = key_id(key.public_key)
                if kid in keys or key.public_key == root.log_public_key:
                    raise InvalidArgument(
                        "a key may appear only once", field=f"{kwhere}.public_key"
                    )
                keys[kid] = KeyInfo(kid, party.code, key.role, key.public_key)
        return cls(
            origin=root.origin,
            log_public_key=bytes(root.log_public_key),
            parties=parties,
            keys=keys,
            border_dataset_sha256=root.border_dataset_sha256,
        )
