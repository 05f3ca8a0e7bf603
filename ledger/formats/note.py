"""C2SP signed-note (c2sp.org/signed-note) and tlog-checkpoint (c2sp.org/tlog-checkpoint).

Ed25519 (signature type 0x01) only. Output is byte-exact with golang.org/x/mod/sumdb/note, so
checkpoints verify with off-the-shelf signed-note tooling; parsing follows that package's
rules and is strict about everything the spec leaves room for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "OpenedNote",
    "UnverifiedNoteError",
    "add_signatures",
    "b64decode",
    "key_hash",
    "open_note",
    "parse_skey",
    "parse_vkey",
    "sign_note",
    "split_key",
    "split_note",
    "valid_name",
]

ALG_ED25519 = 0x01
# The spec requires accepting at least 16; 100 is golang.org/x/mod/sumdb/note's cap.
MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "  # em dash, space
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_TREE_SIZE = 2**64 - 1


class NoteError(ValueError):
    """A note is malformed, or its signatures do not check out."""


class UnverifiedNoteError(NoteError):
    """The note parsed, but no known key signed it; `note` holds what was found."""

    def __init__(self, note: OpenedNote) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


class CheckpointError(NoteError):
    """A checkpoint body is not valid tlog-checkpoint text."""


def key_hash(name: str, alg: int, pub: bytes) -> bytes:
    """Key ID: SHA-256(name || 0x0A || alg || public key)[:4] (signed-note, RECOMMENDED form)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + pub).digest()[:4]


def valid_name(name: str) -> bool:
    # Non-empty, no Unicode spaces, no "+", and nothing that would break the line format.
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in name)
        and _is_utf8(name)
    )


def _is_utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def b64decode(s: str) -> bytes:
    """Strict standard base64: padded, and canonical so a signature line has one spelling."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise NoteError(f"invalid base64 {s!r}") from e
    if base64.b64encode(raw).decode() != s:
        raise NoteError(f"non-canonical base64 {s!r}")
    return raw


def _b64encode(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _check_chars(s: str, what: str) -> None:
    if not _is_utf8(s):
        raise NoteError(f"{what}: not valid UTF-8")
    for c in s:
        if ord(c) < 0x20 and c != "\n":
            raise NoteError(f"{what}: control character U+{ord(c):04X}")


class NoteVerifier:
    """An Ed25519 note verifier key: name, key hash and public key."""

    __slots__ = ("_verify_key", "key_hash", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(public_key) != 32:
            raise NoteError("Ed25519 public key must be 32 bytes")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_hash = key_hash(name, ALG_ED25519, self.public_key)
        self._verify_key = nacl.signing.VerifyKey(self.public_key)

    def __repr__(self) -> str:
        return f"NoteVerifier({self.vkey!r})"

    @property
    def vkey(self) -> str:
        """Verifier key string: <name>+<hex key hash>+<base64(0x01 || public key)>."""
        body = _b64encode(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_hash.hex()}+{body}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True


class NoteSigner:
    """An Ed25519 note signer: a key name and a PyNaCl signing key."""

    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, signing_key: nacl.signing.SigningKey) -> None:
        self.verifier = NoteVerifier(name, bytes(signing_key.verify_key))
        self.name = name
        self._key = signing_key

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, {self.key_hash.hex()})"

    @property
    def key_hash(self) -> bytes:
        return self.verifier.key_hash

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse <name>+<hex8>+<base64(0x01 || 32-byte key)>, checking the key hash."""
    name, hash_hex, body = split_key(vkey)
    raw = _decode_key_body(body)
    v = NoteVerifier(name, raw)
    if v.key_hash != bytes.fromhex(hash_hex):
        raise NoteError(f"verifier key {name}: key hash does not match the key")
    return v


def parse_skey(skey: str) -> NoteSigner:
    """Parse a Go-style PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || 32-byte seed)> signer key."""
    if not skey.startswith("PRIVATE+KEY+"):
        raise NoteError("signer key must start with PRIVATE+KEY+")
    name, hash_hex, body = split_key(skey.removeprefix("PRIVATE+KEY+"))
    s = NoteSigner(name, nacl.signing.SigningKey(_decode_key_body(body)))
    if s.key_hash != bytes.fromhex(hash_hex):
        raise NoteError(f"signer key {name}: key hash does not match the key")
    return s


def split_key(s: str) -> tuple[str, str, str]:
    # Names cannot hold "+", but the base64 body can: split only twice.
    parts = s.split("+", 2)
    if len(parts) != 3 or not valid_name(parts[0]) or not _HEX8.fullmatch(parts[1]):
        raise NoteError("malformed key: want <name>+<8 hex digits>+<base64 key>")
    return parts[0], parts[1], parts[2]


def _decode_key_body(body: str) -> bytes:
    raw = b64decode(body)
    if len(raw) != 33:
        raise NoteError("malformed key: want 1 algorithm byte and a 32-byte key")
    if raw[0] != ALG_ED25519:
        raise NoteError(f"unsupported key algorithm {raw[0]:#04x}")
    return raw[1:]


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash, and the signature bytes after it."""

    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_hash + self.signature)}\n"


@dataclass(frozen=True)
class OpenedNote:
    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]

    @property
    def verified_names(self) -> list[str]:
        return [s.name for s in self.verified]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_chars(text, "note text")


def split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Syntax only: the text and its signature lines, in order, nothing verified."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("note is not valid UTF-8") from e
    _check_chars(note, "note")
    # The text ends at the last blank line; signature lines cannot contain one.
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("note must end with a newline-terminated signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for n, line in enumerate(lines):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"signature line {n + 1}: must start with an em dash and a space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not valid_name(name):
            raise NoteError(f"signature line {n + 1}: invalid key name {name!r}")
        try:
            raw = b64decode(b64)
        except NoteError as e:
            raise NoteError(f"signature line {n + 1}: {e}") from None
        if len(raw) < 5:
            raise NoteError(f"signature line {n + 1}: signature too short")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, sigs


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign text (non-empty, newline-terminated, no control characters but newline)."""
    _check_text(text)
    if not signers:
        raise NoteError("at least one signer is required")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signers")
    message = text.encode()
    lines = [NoteSignature(s.name, s.key_hash, s.sign(message)).line() for s in signers]
    return text + "\n" + "".join(lines)


def add_signatures(note: str, signers: Sequence[NoteSigner]) -> str:
    """Append signers' lines to a signed note (cosigning), replacing any earlier line by the
    same key as sumdb/note does. Existing lines are kept verbatim and are NOT verified here:
    open the note with the cosigner's trusted keys first.
    """
    text, existing = split_note(note)
    new_keys = {(s.name, s.key_hash) for s in signers}
    kept = [s for s in existing if (s.name, s.key_hash) not in new_keys]
    if len(kept) + len(signers) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    message = text.encode()
    new = [NoteSignature(s.name, s.key_hash, s.sign(message)) for s in signers]
    return text + "\n" + "".join(s.line() for s in [*kept, *new])


def open_note(note: str | bytes, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Parse a signed note and verify its signatures against the known verifiers.

    Signatures from unknown (name, key hash) pairs are kept as unverified. A known key whose
    signature fails rejects the whole note, and so does a note no known key has signed.
    """
    text, sigs = split_note(note)
    known: dict[tuple[str, bytes], list[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_hash), []).append(v)
    message = text.encode()
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in sigs:
        key = (sig.name, sig.key_hash)
        candidates = known.get(key)
        if candidates is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        label = f"{sig.name}+{sig.key_hash.hex()}"
        if len({c.public_key for c in candidates}) > 1:
            raise NoteError(f"ambiguous key {label}")
        if key in seen:  # one vote per key, as sumdb/note does
            continue
        seen.add(key)
        if not candidates[0].verify(message, sig.signature):
            raise NoteError(f"invalid signature for key {label}")
        verified.append(sig)
    opened = OpenedNote(text, tuple(verified), tuple(unverified))
    if not verified:
        raise UnverifiedNoteError(opened)
    return opened


@dataclass(frozen=True)
class Checkpoint:
    """tlog-checkpoint note text: origin, tree size, base64 root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, line in [("origin", self.origin)] + [
            (f"extension {i}", e) for i, e in enumerate(self.extensions)
        ]:
            if not line:
                raise CheckpointError(f"{what}: must be non-empty")
            if "\n" in line:
                raise CheckpointError(f"{what}: must be a single line")
            try:
                _check_chars(line, what)
            except NoteError as e:
                raise CheckpointError(str(e)) from None
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise CheckpointError(f"size: {self.size} out of range")
        if len(self.root_hash) != 32:
            raise CheckpointError(f"root hash: want 32 bytes, got {len(self.root_hash)}")

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, size and root hash lines")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise CheckpointError(f"size: {size_line!r} is not a decimal without leading zeros")
        try:
            root = b64decode(root_line)
        except NoteError as e:
            raise CheckpointError(f"root hash: {e}") from None
        return cls(origin, int(size_line), root, tuple(extensions))
