"""DSSE envelopes (github.com/secure-systems-lab/dsse) with Ed25519 signatures.

Signatures cover PAE(payloadType, payload); the payload bytes are carried verbatim. The JSON
reader is meant for untrusted input: it is strict, bounded, and its errors name the field.

A statement's identity is what was signed, SHA-256(PAE): JSON can be re-spelt (whitespace,
key order, escapes) without touching a signature, so the ledger accepts only the DSSE fields
and logs one canonical spelling (`to_json`) of every envelope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import nacl.exceptions
import nacl.signing

from ledger.errors import shown

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ENVELOPE_FIELDS",
    "MAX_SIGNATURES",
    "Envelope",
    "EnvelopeError",
    "Signature",
    "key_id",
    "pae",
    "sign",
    "verify_signature",
]

DEFAULT_MAX_SIZE = 65536
MAX_SIGNATURES = 16
SIGNATURE_SIZE = 64

# The DSSE JSON fields; anything else is refused, since no signature covers it.
ENVELOPE_FIELDS = ("payload", "payloadType", "signatures")
SIGNATURE_FIELDS = ("keyid", "sig")

_KEYID = re.compile(r"[0-9a-f]{64}")
_B64_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


class EnvelopeError(ValueError):
    """An envelope is malformed; `field` names the offending field ("" for the whole)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.problem = message


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def key_id(public_key: bytes) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    return hashlib.sha256(public_key).hexdigest()


def _fail(field: str, problem: str) -> NoReturn:
    raise EnvelopeError(problem, field)


def _b64decode(value: str, field: str) -> bytes:
    """Padded base64 in either alphabet (DSSE verifiers must accept both), not mixed, and
    canonical, so one envelope has one spelling."""
    if len(value) % 4:
        _fail(field, "not valid base64 (length)")
    if _B64_STD.fullmatch(value):
        decode, encode = base64.standard_b64decode, base64.standard_b64encode
    elif _B64_URL.fullmatch(value):
        decode, encode = base64.urlsafe_b64decode, base64.urlsafe_b64encode
    else:
        _fail(field, "not valid base64")
    try:
        raw = decode(value)
    except (binascii.Error, ValueError):
        _fail(field, "not valid base64")
    if encode(raw).decode("ascii") != value:
        _fail(field, "not canonical base64")
    return raw


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.keyid, str) or not _KEYID.fullmatch(self.keyid):
            _fail("keyid", "must be 64 lowercase hex characters")
        if not isinstance(self.sig, bytes) or len(self.sig) != SIGNATURE_SIZE:
            _fail("sig", f"must be {SIGNATURE_SIZE} bytes")


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]
    # (SHA-256 of the PAE, public key, signature) found valid by this same check run ahead:
    # in an auditor's worker process (`ledger/verifier.py`), or by the server's check of a
    # submission before its sequencer judges it (`ledger/service.py`). Never read from
    # JSON: what a client sends is always verified. The PAE's digest keeps it true of a
    # replace()d envelope.
    verified: frozenset[tuple[bytes, bytes, bytes]] = field(
        default=frozenset(), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.payload, bytes) or not self.payload:
            _fail("payload", "must be non-empty bytes")
        if not isinstance(self.payload_type, str) or not self.payload_type:
            _fail("payloadType", "must be a non-empty string")
        try:
            self.payload_type.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, e.g. from a "\ud800" JSON escape
            _fail("payloadType", "not valid Unicode")
        if not self.signatures:
            _fail("signatures", "at least one signature is required")
        if len(self.signatures) > MAX_SIGNATURES:
            _fail("signatures", f"more than {MAX_SIGNATURES}")
        for i, s in enumerate(self.signatures):
            if not isinstance(s, Signature):
                _fail(f"signatures[{i}]", "not a Signature")

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def statement_sha256(self) -> bytes:
        """The statement's identity: SHA-256 of what its signatures cover (the PAE), the
        same however the envelope is spelt or whoever relays it."""
        return hashlib.sha256(self.pae()).digest()

    def signer_key_ids(self) -> frozenset[str]:
        return frozenset(s.keyid for s in self.signatures)

    def add_signature(self, signing_key: nacl.signing.SigningKey) -> Envelope:
        """Co-sign: append this key's signature, replacing an earlier one by the same key."""
        new = _sign_one(signing_key, self.pae())
        kept = tuple(s for s in self.signatures if s.keyid != new.keyid)
        return replace(self, signatures=(*kept, new))

    def verified_keyids(self, public_keys_by_keyid: Mapping[str, bytes]) -> set[str]:
        """Key ids of the known keys with a valid signature here, each counted once.

        Signatures by unknown keys and invalid signatures are skipped, as DSSE prescribes;
        whether enough keys signed is the caller's policy.
        """
        message = self.pae()
        verified: set[str] = set()
        for s in self.signatures:
            pub = public_keys_by_keyid.get(s.keyid)
            if pub is None or s.keyid in verified:
                continue
            if key_id(pub) != s.keyid:
                raise ValueError(f"public key registered under {s.keyid} has another key id")
            if _verify(pub, message, s.sig):
                verified.add(s.keyid)
        return verified

    def to_json(self) -> bytes:
        """The canonical DSSE JSON envelope: the three DSSE fields in this order, compact
        UTF-8, standard base64, signatures in the order given."""
        doc = {
            "payload": base64.standard_b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.standard_b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
        """Parse an untrusted JSON envelope. Fields other than DSSE's are refused: text
        beside a signature that no signature covers must not travel with it."""
        if len(data) > max_size:
            _fail("envelope", f"{len(data)} bytes exceeds the {max_size}-byte limit")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            _fail("envelope", "not valid UTF-8")
        try:
            doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except EnvelopeError:
            raise
        except (ValueError, RecursionError) as e:
            _fail("envelope", f"not valid JSON ({e})")
        if not isinstance(doc, dict):
            _fail("envelope", "must be a JSON object")
        _only_fields(doc, ENVELOPE_FIELDS, "")

        payload_b64 = doc.get("payload")
        if not isinstance(payload_b64, str):
            _fail("payload", "must be a base64 string")
        if not payload_b64:
            _fail("payload", "empty")
        payload = _b64decode(payload_b64, "payload")

        payload_type = doc.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            _fail("payloadType", "must be a non-empty string")

        raw_sigs = doc.get("signatures")
        if not isinstance(raw_sigs, list) or not raw_sigs:
            _fail("signatures", "must be a non-empty array")
        if len(raw_sigs) > MAX_SIGNATURES:
            _fail("signatures", f"more than {MAX_SIGNATURES}")
        sigs = tuple(_parse_signature(item, f"signatures[{i}]") for i, item in enumerate(raw_sigs))
        return cls(payload, payload_type, sigs)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate keys let two parsers see two different envelopes in the same bytes.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            _fail("envelope", f"duplicate key {shown(k)}")
        out[k] = v
    return out


def _only_fields(doc: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for name in doc:
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:40] + "..."
            _fail(
                f"{prefix}{shown}",
                f"not a DSSE field (only {', '.join(allowed)}); no signature covers it",
            )


def _no_constant(name: str) -> NoReturn:
    _fail("envelope", f"not valid JSON ({name})")


def _parse_signature(item: object, field: str) -> Signature:
    if not isinstance(item, dict):
        _fail(field, "must be an object")
    _only_fields(item, SIGNATURE_FIELDS, f"{field}.")
    keyid = item.get("keyid")
    if not isinstance(keyid, str) or not _KEYID.fullmatch(keyid):
        _fail(f"{field}.keyid", "must be 64 lowercase hex characters")
    sig_b64 = item.get("sig")
    if not isinstance(sig_b64, str):
        _fail(f"{field}.sig", "must be a base64 string")
    sig = _b64decode(sig_b64, f"{field}.sig")
    if len(sig) != SIGNATURE_SIZE:
        _fail(f"{field}.sig", f"must be {SIGNATURE_SIZE} bytes, got {len(sig)}")
    return Signature(keyid, sig)


def _sign_one(signing_key: nacl.signing.SigningKey, message: bytes) -> Signature:
    return Signature(key_id(bytes(signing_key.verify_key)), signing_key.sign(message).signature)


def _verify(public_key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, sig)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def sign(
    payload_type: str, payload: bytes, signing_keys: Sequence[nacl.signing.SigningKey]
) -> Envelope:
    """Sign payload under payload_type with each key (at least one)."""
    if not signing_keys:
        _fail("signatures", "at least one signing key is required")
    message = pae(payload_type, payload)
    sigs: dict[str, Signature] = {}
    for k in signing_keys:
        s = _sign_one(k, message)
        sigs[s.keyid] = s
    return Envelope(payload, payload_type, tuple(sigs.values()))


def verify_signature(envelope: Envelope, sig: Signature, public_key: bytes) -> bool:
    """Whether sig is public_key's valid Ed25519 signature over the envelope's PAE."""
    message = envelope.pae()
    if envelope.verified and (hashlib.sha256(message).digest(), public_key, sig.sig) in (
        envelope.verified
    ):
        return True
    return _verify(public_key, message, sig.sig)
