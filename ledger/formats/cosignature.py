"""C2SP tlog-cosignature v1 (c2sp.org/tlog-cosignature): Ed25519 witness cosignatures.

A cosignature is a signed-note signature line on a checkpoint. Its key hash is
SHA-256(name || 0x0A || 0x04 || public key)[:4]; its signature bytes are an 8-byte big-endian
timestamp followed by an Ed25519 signature over

    cosignature/v1
    time <timestamp>
    <the checkpoint text, with its final newline, without signature lines>

The message does not commit to the cosigner's name: one key must serve one cosigner only.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import nacl.exceptions
import nacl.signing

from ledger.formats.note import (
    Checkpoint,
    NoteError,
    NoteSignature,
    b64decode,
    key_hash,
    split_key,
    split_note,
    valid_name,
)

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosignatures",
    "parse_cosigner_vkey",
]

ALG_COSIGNATURE_V1 = 0x04
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_SIZE = 8
_ED25519_SIG_SIZE = 64


def _message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint_text.encode()


class CosignatureVerifier:
    """An Ed25519 cosigner: its name and public key, and the key hash they give."""

    __slots__ = ("_verify_key", "key_hash", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not valid_name(name):
            raise NoteError(f"invalid cosigner name {name!r}")
        if len(public_key) != 32:
            raise NoteError("Ed25519 public key must be 32 bytes")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_hash = key_hash(name, ALG_COSIGNATURE_V1, self.public_key)
        self._verify_key = nacl.signing.VerifyKey(self.public_key)

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.vkey!r})"

    @property
    def vkey(self) -> str:
        """Verifier key string: <name>+<hex key hash>+<base64(0x04 || public key)>."""
        body = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{body}"

    def verify(self, checkpoint_text: str, sig: NoteSignature) -> int | None:
        """The cosignature's timestamp if `sig` is this cosigner's valid cosignature on the
        checkpoint text (no signature lines), else None."""
        if sig.name != self.name or sig.key_hash != self.key_hash:
            return None
        if len(sig.signature) != _TIMESTAMP_SIZE + _ED25519_SIG_SIZE:
            return None
        timestamp = int.from_bytes(sig.signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            self._verify_key.verify(
                _message(checkpoint_text, timestamp), sig.signature[_TIMESTAMP_SIZE:]
            )
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return None
        return timestamp


class CosignatureSigner:
    """An Ed25519 cosigner's signing side (a witness key)."""

    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, signing_key: nacl.signing.SigningKey) -> None:
        self.verifier = CosignatureVerifier(name, bytes(signing_key.verify_key))
        self.name = name
        self._key = signing_key

    def __repr__(self) -> str:
        return f"CosignatureSigner({self.name!r}, {self.key_hash.hex()})"

    @property
    def key_hash(self) -> bytes:
        return self.verifier.key_hash

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        """A cosignature line on checkpoint text (origin, size, root, extensions; newline
        terminated; no signature lines), made at `timestamp` (POSIX seconds)."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"cosignature timestamp {timestamp} out of range")
        Checkpoint.parse(checkpoint_text)  # a cosigner vouches for checkpoints only
        sig = self._key.sign(_message(checkpoint_text, timestamp)).signature
        return NoteSignature(self.name, self.key_hash, timestamp.to_bytes(8, "big") + sig)


def parse_cosigner_vkey(vkey: str) -> CosignatureVerifier:
    """Parse <name>+<hex8>+<base64(0x04 || 32-byte key)>, checking the key hash."""
    name, hash_hex, body = split_key(vkey)
    raw = b64decode(body)
    if len(raw) != 33:
        raise NoteError("malformed cosigner key: want 1 algorithm byte and a 32-byte key")
    if raw[0] != ALG_COSIGNATURE_V1:
        raise NoteError(
            f"cosigner key {name}: algorithm {raw[0]:#04x}, want {ALG_COSIGNATURE_V1:#04x} "
            "(an Ed25519 cosignature/v1 key)"
        )
    v = CosignatureVerifier(name, raw[1:])
    if v.key_hash != bytes.fromhex(hash_hex):
        raise NoteError(f"cosigner key {name}: key hash does not match the key")
    return v


def cosignatures(
    note: str | bytes, verifiers: Sequence[CosignatureVerifier]
) -> list[tuple[CosignatureVerifier, int]]:
    """The valid cosignatures on a signed note by the given cosigners, with their timestamps,
    one per cosigner, in note order.

    Lines of unknown (name, key hash) are ignored. A line whose name and key hash are a known
    cosigner's but whose signature fails makes the note malformed (signed-note): NoteError.
    """
    text, sigs = split_note(note)
    known: dict[tuple[str, bytes], CosignatureVerifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_hash), v)
        if other.public_key != v.public_key:
            raise NoteError(f"ambiguous cosigner key {v.name}+{v.key_hash.hex()}")
    found: list[tuple[CosignatureVerifier, int]] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in sigs:
        key = (sig.name, sig.key_hash)
        verifier = known.get(key)
        if verifier is None:
            continue
        if key in seen:  # one per cosigner: sumdb/note skips a key's later lines
            continue
        seen.add(key)
        timestamp = verifier.verify(text, sig)
        if timestamp is None:
            raise NoteError(f"invalid cosignature for key {sig.name}+{sig.key_hash.hex()}")
        found.append((verifier, timestamp))
    return found
