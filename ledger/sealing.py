"""Sealing evidence to chosen keys (PyNaCl): only their holders can open it.

The content is encrypted once with a fresh 32-byte key (SecretBox); that key is sealed to
each recipient's X25519 key, derived from the Ed25519 key the trust root lists (SealedBox).
Pure: no gRPC, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping

import nacl.exceptions
import nacl.utils
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import DecodeError
from nacl.public import SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from ledger.formats.dsse import key_id


class SealingError(ValueError):
    pass


def seal(content: bytes, recipients: Mapping[str, bytes]) -> bytes:
    """A SealedBlob of `content` for recipients given as key id -> Ed25519 public key."""
    if not recipients:
        raise SealingError("sealed evidence needs at least one recipient")
    secret = nacl.utils.random(SecretBox.KEY_SIZE)
    blob = pb.SealedBlob(box=bytes(SecretBox(secret).encrypt(content)))
    for kid, public in sorted(recipients.items()):
        curve = VerifyKey(public).to_curve25519_public_key()
        blob.recipients.add(key_id=kid, sealed_key=SealedBox(curve).encrypt(secret))
    return blob.SerializeToString()


def parse(data: bytes) -> pb.SealedBlob:
    blob = pb.SealedBlob()
    try:
        blob.ParseFromString(data)
    except DecodeError as e:
        raise SealingError(f"not a sealed blob ({e})") from e
    if not blob.recipients or len(blob.box) < SecretBox.NONCE_SIZE + SecretBox.MACBYTES:
        raise SealingError("a sealed blob needs recipients and a box")
    return blob


def open_sealed(data: bytes, key: SigningKey) -> bytes:
    """The content, for the holder of one of the recipients' keys."""
    blob = parse(data)
    kid = key_id(bytes(key.verify_key))
    mine = next((r for r in blob.recipients if r.key_id == kid), None)
    if mine is None:
        raise SealingError("this evidence is not sealed to your key")
    try:
        secret = SealedBox(key.to_curve25519_private_key()).decrypt(mine.sealed_key)
        return bytes(SecretBox(secret).decrypt(blob.box))
    except nacl.exceptions.CryptoError as e:
        raise SealingError("the sealed evidence does not open with this key") from e
