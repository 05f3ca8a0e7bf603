"""The log's own key: it signs checkpoints (C2SP signed notes) and receipts (DSSE)."""

from __future__ import annotations

from ceasefire.v1 import log_pb2
from nacl.signing import SigningKey

from ledger import statements
from ledger.formats import dsse
from ledger.formats.note import Checkpoint, NoteSigner, NoteVerifier, sign_note


class LogKey:
    def __init__(self, origin: str, signing_key: SigningKey) -> None:
        self.origin = origin
        self.signing_key = signing_key
        # The checkpoint origin is the log's name, and the note key is named after it.
        self.note_signer = NoteSigner(origin, signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def verifier(self) -> NoteVerifier:
        return self.note_signer.verifier

    def sign_checkpoint(self, size: int, root: bytes) -> str:
        return sign_note(Checkpoint(self.origin, size, root).to_text(), [self.note_signer])

    def sign_receipt(self, receipt: log_pb2.Receipt) -> bytes:
        payload = receipt.SerializeToString()
        return dsse.sign(statements.RECEIPT, payload, [self.signing_key]).to_json()
