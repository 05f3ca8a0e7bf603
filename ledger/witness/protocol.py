"""The tlog-witness wire formats: the add-checkpoint request body and the response bodies.

Pure format code, strict in what it accepts: a request has one spelling.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.formats.merkle import HASH_SIZE
from ledger.formats.note import Checkpoint, NoteError, NoteSignature, b64decode, split_note

__all__ = [
    "CONTENT_TYPE_SIZE",
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "AddCheckpointRequest",
    "ProtocolError",
    "conflict_body",
    "cosignature_body",
    "origin_hash",
    "parse_conflict_body",
    "parse_cosignature_body",
]

# A proof of 63 hashes and a checkpoint with a few signatures fit in a few KiB; a
# request is read whole before it is checked, so it is bounded.
MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
CONTENT_TYPE_SIZE = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # ASCII only (not \d); at most 20 digits
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,19})")
_MAX_U64 = 2**64 - 1


class ProtocolError(ValueError):
    """A malformed request or response body (a request's: 400 Bad Request)."""


@dataclass(frozen=True)
class AddCheckpointRequest:
    """`old <size>`, the consistency proof (one base64 hash a line), an empty line, and the
    signed checkpoint note."""

    old_size: int
    proof: list[bytes]
    checkpoint: str

    def to_body(self) -> bytes:
        if not 0 <= self.old_size <= _MAX_U64:
            raise ProtocolError(f"old size {self.old_size} out of range")
        if len(self.proof) > MAX_PROOF_LINES:
            raise ProtocolError(f"more than {MAX_PROOF_LINES} consistency proof hashes")
        if any(len(h) != HASH_SIZE for h in self.proof):
            raise ProtocolError(f"a consistency proof hash is not {HASH_SIZE} bytes")
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in self.proof)
        return f"old {self.old_size}\n{lines}\n{self.checkpoint}".encode()

    def parsed(self) -> tuple[str, Checkpoint, list[NoteSignature]]:
        """The checkpoint note's text, the checkpoint, and its signature lines (unverified)."""
        try:
            text, sigs = split_note(self.checkpoint)
            return text, Checkpoint.parse(text), sigs
        except NoteError as e:
            raise ProtocolError(f"checkpoint: {e}") from None

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpointRequest:
        if len(body) > MAX_BODY:
            raise ProtocolError(f"request body over {MAX_BODY} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("request body is not UTF-8") from None
        old_line, sep, rest = text.partition("\n")
        m = _OLD_LINE.fullmatch(old_line)
        if not sep or not m:
            raise ProtocolError(
                "first line must be 'old <size>' (decimal, no leading zeros), then a newline"
            )
        old_size = int(m.group(1))
        if old_size > _MAX_U64:
            raise ProtocolError(f"old size {old_size} out of range")
        proof: list[bytes] = []
        while True:
            line, sep, rest = rest.partition("\n")
            if not sep:
                raise ProtocolError("no empty line between the proof and the checkpoint")
            if not line:
                break
            if len(proof) == MAX_PROOF_LINES:
                raise ProtocolError(f"more than {MAX_PROOF_LINES} consistency proof lines")
            try:
                h = b64decode(line)
            except NoteError as e:
                raise ProtocolError(f"proof line {len(proof) + 1}: {e}") from None
            if len(h) != HASH_SIZE:
                raise ProtocolError(f"proof line {len(proof) + 1}: not a {HASH_SIZE}-byte hash")
            proof.append(h)
        request = cls(old_size, proof, rest)
        request.parsed()  # the checkpoint is a well-formed signed note
        return request


def origin_hash(origin: str) -> str:
    """The monitoring path's log identifier: lowercase hex SHA-256 of the origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


def conflict_body(size: int) -> bytes:
    """409 Conflict: the size of the latest checkpoint the witness cosigned for the log."""
    return f"{size}\n".encode()


def parse_conflict_body(body: bytes) -> int:
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not _DECIMAL.fullmatch(text[:-1]):
        raise ProtocolError(f"conflict body is not a tree size line: {text[:40]!r}")
    size = int(text[:-1])
    if size > _MAX_U64:
        raise ProtocolError(f"conflict size {size} out of range")
    return size


def cosignature_body(sigs: Sequence[NoteSignature]) -> bytes:
    """200: one note signature line per cosignature."""
    if not sigs:
        raise ProtocolError("a cosignature response holds at least one signature line")
    return "".join(s.line() for s in sigs).encode()


def parse_cosignature_body(body: bytes) -> list[NoteSignature]:
    """The signature lines of a 200 response, unverified (the spec's way: read them as the
    signature block of a note)."""
    if len(body) > MAX_BODY:
        raise ProtocolError(f"response body over {MAX_BODY} bytes")
    placeholder = "-\n"
    try:
        text, sigs = split_note(placeholder.encode() + b"\n" + body)
    except NoteError as e:
        raise ProtocolError(f"cosignature response: {e}") from None
    if text != placeholder:  # an empty line inside the body moved the split
        raise ProtocolError("cosignature response: an empty line among the signature lines")
    return sigs
