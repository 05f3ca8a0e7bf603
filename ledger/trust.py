"""Who holds which key, at every log index, computed from the ledger alone.

`TrustState` starts from the trust root (entry 0) and follows each key change and party
admission in log order. A key is valid for signatures at index i when it was added before i
and not revoked at or before i. The server and the verifier both advance this state entry
by entry, so a signature is always judged against the state at its own index.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ceasefire.v1 import statements_pb2 as pb

from geo.manifest import dataset_digest
from ledger import policy
from ledger.errors import InvalidArgument, PermissionDenied
from ledger.formats.dsse import key_id

PARTY_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
# The origin doubles as the log's signed-note key name: printable ASCII, no space, no "+".
ORIGIN = re.compile(r"^[\x21-\x2a\x2c-\x7e]{1,255}$")
# A witness's C2SP key name: as an origin, printable ASCII without space or "+".
WITNESS_NAME = ORIGIN
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
POLICY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_PARTIES = 32
MAX_KEYS_PER_PARTY = 256
MAX_FINDING_POLICIES = 32
DEFAULT_MAX_AGE_S = 72 * 3600
DEFAULT_MAX_FUTURE_S = 300
MAX_AGE_LIMIT_S = 366 * 24 * 3600


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    party: str
    role: pb.Role.ValueType
    public_key: bytes
    added_at: int
    revoked_at: int | None = None
    # Witness keys: the C2SP key name of their cosignatures.
    witness_name: str = ""

    @property
    def role_name(self) -> str:
        return pb.Role.Name(self.role).removeprefix("ROLE_").lower()

    def valid_at(self, index: int) -> bool:
        return self.added_at < index and (self.revoked_at is None or index < self.revoked_at)


@dataclass
class PartyInfo:
    code: str
    name: str
    authority_threshold: int
    admitted_at: int


@dataclass(frozen=True)
class DatasetInfo:
    """A registered border data set: its files (name -> SHA-256) and where it sits."""

    sha256: str
    files: tuple[tuple[str, str], ...]
    registered_at: int
    name: str = ""
    monitored_zone_m: float = 0.0
    outside_zone: int = pb.OUTSIDE_ZONE_REFUSE


@dataclass
class TrustState:
    origin: str
    log_public_key: bytes
    border_dataset_sha256: str
    max_age_s: int
    max_future_s: int
    admission_policy: policy.Policy
    border_policy: policy.Policy
    finding_policies: dict[str, policy.Policy]
    parties: dict[str, PartyInfo] = field(default_factory=dict)
    keys: dict[str, KeyInfo] = field(default_factory=dict)
    # Every data set registered so far, by digest; the one in force is border_dataset_sha256.
    datasets: dict[str, DatasetInfo] = field(default_factory=dict)
    # Whose cosignatures make a checkpoint trusted (PARTY.witness principals); None: nobody's.
    witness_policy: policy.Policy | None = None
    witness_policy_text: str = ""

    @property
    def dataset(self) -> DatasetInfo:
        return self.datasets[self.border_dataset_sha256]

    # -- building ----------------------------------------------------------------------

    @classmethod
    def from_trust_root(cls, root: pb.TrustRoot) -> TrustState:
        """Validate a trust root (entry 0); raise InvalidArgument naming the field."""
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
        max_age = root.freshness.max_age_seconds or DEFAULT_MAX_AGE_S
        max_future = root.freshness.max_future_seconds or DEFAULT_MAX_FUTURE_S
        if max_age > MAX_AGE_LIMIT_S or max_future > MAX_AGE_LIMIT_S:
            raise InvalidArgument("at most 366 days", field="freshness")
        state = cls(
            origin=root.origin,
            log_public_key=bytes(root.log_public_key),
            border_dataset_sha256=root.border_dataset_sha256,
            max_age_s=max_age,
            max_future_s=max_future,
            # Policies name parties, so they are parsed once the parties are known.
            admission_policy=policy.Gate(0, ()),
            border_policy=policy.Gate(0, ()),
            finding_policies={},
        )
        # The trust root's data set; its files are stored with entry 0.
        files = tuple((f.name, f.sha256) for f in root.border_dataset_files)
        if not files or dataset_digest(dict(files)) != root.border_dataset_sha256:
            raise InvalidArgument(
                "must list the files whose manifest digest is border_dataset_sha256",
                field="border_dataset_files",
            )
        state.datasets[root.border_dataset_sha256] = DatasetInfo(
            root.border_dataset_sha256, files, registered_at=0
        )
        for i, party in enumerate(root.parties):
            state._add_party(party, index=0, where=f"parties[{i}]")
        for k in state.keys.values():
            if k.public_key == state.log_public_key:
                raise InvalidArgument("the log key cannot be a party's key", field="parties")
        founders = tuple(policy.Principal(code, "authority") for code in state.parties)
        everyone = policy.Gate(len(founders), founders)
        state.admission_policy = state._policy(
            root.admission_policy, "admission_policy", default=everyone
        )
        state.border_policy = state._policy(root.border_policy, "border_policy", default=everyone)
        if len(root.finding_policies) > MAX_FINDING_POLICIES:
            raise InvalidArgument("too many", field="finding_policies")
        for i, named in enumerate(root.finding_policies):
            where = f"finding_policies[{i}]"
            if not POLICY_NAME.match(named.name) or named.name in state.finding_policies:
                raise InvalidArgument("a unique lowercase name is required", field=f"{where}.name")
            state.finding_policies[named.name] = state._policy(
                named.expression, f"{where}.expression"
            )
        if root.witness_policy:
            state.witness_policy = state._policy(root.witness_policy, "witness_policy")
            state.witness_policy_text = root.witness_policy
            roles = {p.role for p in policy.principals(state.witness_policy)}
            if roles != {"witness"}:
                raise InvalidArgument(
                    "may name PARTY.witness principals only", field="witness_policy"
                )
        return state

    def _policy(self, text: str, where: str, default: policy.Policy | None = None) -> policy.Policy:
        if not text and default is not None:
            return default
        try:
            parsed = policy.parse(text)
        except policy.PolicyError as e:
            raise InvalidArgument(str(e), field=where) from e
        unknown = sorted(p.party for p in policy.principals(parsed) if p.party not in self.parties)
        if unknown:
            raise InvalidArgument(f"names unknown parties {unknown}", field=where)
        return parsed

    def _add_party(self, party: pb.Party, *, index: int, where: str) -> None:
        if not PARTY_CODE.match(party.code):
            raise InvalidArgument("must match [A-Z][A-Z0-9_]{1,15}", field=f"{where}.code")
        if party.code in self.parties:
            raise InvalidArgument(f"party {party.code} exists already", field=f"{where}.code")
        if not party.name or len(party.name) > 200:
            raise InvalidArgument("must be 1-200 characters", field=f"{where}.name")
        if len(party.keys) > MAX_KEYS_PER_PARTY:
            raise InvalidArgument("too many keys", field=f"{where}.keys")
        self.parties[party.code] = PartyInfo(
            party.code, party.name, party.authority_threshold, admitted_at=index
        )
        self._add_keys(party.code, party.keys, index=index, where=f"{where}.keys")
        self._check_threshold(party.code, party.authority_threshold, f"{where}.authority_threshold")

    def _add_keys(self, party: str, keys: Iterable[pb.PartyKey], *, index: int, where: str) -> None:
        for j, key in enumerate(keys):
            kwhere = f"{where}[{j}]"
            if len(key.public_key) != 32:
                raise InvalidArgument("must be a 32-byte Ed25519 key", field=f"{kwhere}.public_key")
            if key.role not in pb.Role.values() or key.role == pb.ROLE_UNSPECIFIED:
                raise InvalidArgument("unknown or unspecified role", field=f"{kwhere}.role")
            kid = key_id(key.public_key)
            if kid in self.keys or key.public_key == self.log_public_key:
                raise InvalidArgument(
                    "this key is or was in use already; keys are never reused",
                    field=f"{kwhere}.public_key",
                )
            self._check_witness_name(key, f"{kwhere}.witness_name")
            self.keys[kid] = KeyInfo(
                kid, party, key.role, bytes(key.public_key), added_at=index,
                witness_name=key.witness_name,
            )  # fmt: skip

    def _check_witness_name(self, key: pb.PartyKey, where: str) -> None:
        """A witness key has a C2SP key name of its own; no other key has one."""
        if key.role != pb.ROLE_WITNESS:
            if key.witness_name:
                raise InvalidArgument("only a witness key has a witness name", field=where)
            return
        if not WITNESS_NAME.match(key.witness_name):
            raise InvalidArgument(
                "a witness key needs its C2SP key name: 1-255 printable ASCII characters "
                "without space or '+'",
                field=where,
            )
        if key.witness_name == self.origin or any(
            k.witness_name == key.witness_name for k in self.keys.values()
        ):
            raise InvalidArgument(f"the name {key.witness_name!r} is in use already", field=where)

    def _check_threshold(self, party: str, threshold: int, where: str) -> None:
        active = len(self.active_keys(party, pb.ROLE_AUTHORITY))
        if not 1 <= threshold <= active:
            raise InvalidArgument(
                f"{party} needs an authority threshold from 1 to its {active} active "
                f"authority keys, got {threshold}",
                field=where,
            )

    # -- reading -----------------------------------------------------------------------

    def copy(self) -> TrustState:
        return copy.deepcopy(self)

    def active_keys(self, party: str, role: int | None = None) -> list[KeyInfo]:
        return [
            k
            for k in self.keys.values()
            if k.party == party and k.revoked_at is None and (role is None or k.role == role)
        ]

    def signing_key(self, kid: str, index: int, *, field: str) -> KeyInfo:
        """The key for a signature at `index`: listed, and neither revoked nor too new."""
        key = self.keys.get(kid)
        if key is None:
            raise PermissionDenied(
                f"key {kid[:16]}... is not a key of any party on this ledger", field=field
            )
        if not key.valid_at(index):
            when = (
                f"revoked at index {key.revoked_at}"
                if key.revoked_at is not None
                else (f"added at index {key.added_at}")
            )
            raise PermissionDenied(
                f"key {kid[:16]}... ({key.party} {key.role_name}) is not valid at index "
                f"{index}: {when}",
                field=field,
            )
        return key

    def authority_met(self, party: str, signers: list[KeyInfo]) -> bool:
        info = self.parties.get(party)
        if info is None:
            return False
        count = len({k.key_id for k in signers if k.party == party and k.role == pb.ROLE_AUTHORITY})
        return count >= info.authority_threshold

    def principal_met(self, principal: policy.Principal, signers: list[KeyInfo]) -> bool:
        if principal.role == "authority":
            return self.authority_met(principal.party, signers)
        return any(k.party == principal.party and k.role_name == principal.role for k in signers)

    # -- advancing ---------------------------------------------------------------------

    def apply_key_change(self, change: pb.KeyChange, index: int) -> None:
        """Apply a validated, authorized key change at `index`."""
        for i, kid in enumerate(change.revoke_key_ids):
            key = self.keys.get(kid)
            if key is None or key.party != change.party:
                raise InvalidArgument(
                    f"{kid[:16]}... is not a key of {change.party}", field=f"revoke_key_ids[{i}]"
                )
            if key.revoked_at is not None:
                raise InvalidArgument(
                    f"already revoked at index {key.revoked_at}", field=f"revoke_key_ids[{i}]"
                )
            self.keys[kid] = replace(key, revoked_at=index)
        self._add_keys(change.party, change.add, index=index, where="add")
        party = self.parties[change.party]
        if change.authority_threshold:
            party.authority_threshold = change.authority_threshold
        self._check_threshold(change.party, party.authority_threshold, "authority_threshold")

    def apply_admission(self, admission: pb.PartyAdmission, index: int) -> None:
        self._add_party(admission.party, index=index, where="party")

    def apply_border_dataset(self, reg: pb.BorderDatasetRegistration, index: int) -> None:
        """From `index` on, validations use this data set; earlier ones keep theirs."""
        self.datasets[reg.dataset_sha256] = DatasetInfo(
            sha256=reg.dataset_sha256,
            files=tuple((f.name, f.sha256) for f in reg.files),
            registered_at=index,
            name=reg.name,
            monitored_zone_m=reg.monitored_zone_m,
            outside_zone=reg.outside_zone,
        )
        self.border_dataset_sha256 = reg.dataset_sha256
