"""Ed25519 key files. A private key file holds the 32-byte seed; it is written 0600.

Format (JSON, so that it is easy to inspect and to pass between machines):
  private: {"type": "ed25519-private", "seed": <base64>, "public_key": <base64>, "key_id": <hex>}
  public:  {"type": "ed25519-public", "public_key": <base64>, "key_id": <hex>}
The key id is the lowercase hex SHA-256 of the raw public key (the DSSE keyid).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from nacl.signing import SigningKey

from ledger.dsse import key_id


class KeyFileError(ValueError):
    pass


def generate() -> SigningKey:
    return SigningKey.generate()


def public_bytes(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def write_private(path: Path, key: SigningKey, **extra: str) -> None:
    """`extra` fields are kept beside the key (e.g. a witness's name, which its key hash
    commits to); readers of the key ignore them."""
    pub = public_bytes(key)
    doc = {
        **extra,
        "type": "ed25519-private",
        "seed": base64.b64encode(bytes(key)).decode(),
        "public_key": base64.b64encode(pub).decode(),
        "key_id": key_id(pub),
    }
    # Create with 0600 from the start: never a moment when the seed is world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def write_public(path: Path, public_key: bytes) -> None:
    doc = {
        "type": "ed25519-public",
        "public_key": base64.b64encode(public_key).decode(),
        "key_id": key_id(public_key),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _load(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyFileError(f"{path}: not a readable key file ({e})") from e
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path}: not a key file")
    return doc


def _b64(path: Path, doc: dict[str, str], name: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(doc[name], validate=True)
    except (KeyError, TypeError, ValueError) as e:
        raise KeyFileError(f"{path}: {name} missing or not base64") from e
    if len(raw) != size:
        raise KeyFileError(f"{path}: {name} must be {size} bytes, got {len(raw)}")
    return raw


def read_private(path: Path) -> SigningKey:
    doc = _load(path)
    if doc.get("type") != "ed25519-private":
        raise KeyFileError(f"{path}: not an ed25519 private key file")
    key = SigningKey(_b64(path, doc, "seed", 32))
    if "public_key" in doc and _b64(path, doc, "public_key", 32) != public_bytes(key):
        raise KeyFileError(f"{path}: public_key does not match the seed")
    return key


def read_public(path: Path) -> bytes:
    """The raw public key from a public or a private key file."""
    doc = _load(path)
    if doc.get("type") == "ed25519-private":
        return public_bytes(read_private(path))
    if doc.get("type") != "ed25519-public":
        raise KeyFileError(f"{path}: not an ed25519 key file")
    return _b64(path, doc, "public_key", 32)
