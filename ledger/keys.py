"""Ed25519 key files, their passphrases, and the checks made before a key is used.

Format (JSON, so that it is easy to inspect and to pass between machines; docs/keys.md):
  private: {"type": "ed25519-private", "key_id": <hex>, "public_key": <base64>,
            "party": "ARM" | null, "role": "monitor" | null, ...extra fields,
            and either "seed": <base64> (unencrypted)
            or "encrypted": {"kdf": "argon2id", "opslimit": <int>, "memlimit": <int>,
                             "salt": <base64, 16 bytes>, "nonce": <base64, 24 bytes>,
                             "box": <base64, 48 bytes>}}
  public:  {"type": "ed25519-public", "key_id": <hex>, "public_key": <base64>,
            "party": ..., "role": ...}
The key id is the lowercase hex SHA-256 of the raw public key (the DSSE keyid). An encrypted
seed is `SecretBox(k).decrypt(box, nonce)` with `k = argon2id.kdf(32, passphrase, salt,
opslimit, memlimit)`, the passphrase being the UTF-8 bytes of its NFC form (libsodium's
crypto_pwhash Argon2id v1.3 and crypto_secretbox XSalsa20-Poly1305). Files written before
party, role and encryption existed (a "seed", no "party"/"role") read as before.

A private key file is created 0600 and refused when its mode gives its group or others any
access. Party and role are labels for the user (the trust root decides what a key may do);
they are not covered by the encryption.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from ledger.formats.dsse import key_id
from ledger.trust import PARTY_CODE

PRIVATE, PUBLIC = "ed25519-private", "ed25519-public"
SEED_SIZE = 32
# The roles a trust root knows (statements.proto Role), as a key file spells them.
ROLES = tuple(name.removeprefix("ROLE_").lower() for name in pb.Role.keys()[1:])
# Fields of a private key file that `extra` may not replace.
_RESERVED = frozenset({"type", "key_id", "public_key", "party", "role", "seed", "encrypted", "kdf"})

# Argon2id cost: libsodium's "interactive" level (2 passes over 64 MiB, ~0.1 s on a laptop,
# well under a second on a field handset) keeps a phone usable; the passphrase's length is
# what resists guessing. Read bounds keep a hostile file from asking for gigabytes or hours.
OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE  # 1 GiB
MIN_OPSLIMIT = argon2id.OPSLIMIT_MIN
MIN_MEMLIMIT = argon2id.MEMLIMIT_MIN

# Where a passphrase comes from, in this order (then a prompt at a terminal).
PASSPHRASE_ENV = "CEASEFIRE_PASSPHRASE"
PASSPHRASE_FILE_ENV = "CEASEFIRE_PASSPHRASE_FILE"
PASSPHRASE_FD_ENV = "CEASEFIRE_PASSPHRASE_FD"
NEW_PASSPHRASE_ENV = "CEASEFIRE_NEW_PASSPHRASE"
SOURCES = f"{PASSPHRASE_ENV}, {PASSPHRASE_FILE_ENV} or {PASSPHRASE_FD_ENV}"
MAX_PASSPHRASE_BYTES = 1024
PROMPT_ATTEMPTS = 3


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class KeyFile:
    """A private key, read and checked, with what its file says about it."""

    signing_key: SigningKey
    key_id: str
    party: str | None
    role: str | None
    path: Path
    encrypted: bool = False


@dataclass(frozen=True)
class KeyInfo:
    """What a key file says, read without its passphrase (a public or a private key file)."""

    path: Path
    private: bool
    key_id: str
    public_key: bytes
    party: str | None
    role: str | None
    encrypted: bool
    mode: int


def generate() -> SigningKey:
    return SigningKey.generate()


def public_bytes(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def _b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def check_party(party: str | None) -> str | None:
    """A party code as a trust root spells it (e.g. ARM), or None."""
    if party is not None and not PARTY_CODE.match(party):
        raise KeyFileError(f"party {party!r}: a party code is 2-16 capitals, digits or '_'")
    return party


def check_role(role: str | None) -> str | None:
    """One of the roles a trust root knows, lowercase, or None."""
    if role is None:
        return None
    if role.strip().lower() not in ROLES:
        raise KeyFileError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role.strip().lower()


# -- writing ---------------------------------------------------------------------------


def seal_seed(
    seed: bytes, passphrase: str, *, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT
) -> dict[str, Any]:
    """The "encrypted" object of a key file: the seed in a SecretBox under an Argon2id key."""
    salt = nacl.utils.random(argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    sealed = box.encrypt(seed)
    return {
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": _b64e(salt),
        "nonce": _b64e(sealed.nonce),
        "box": _b64e(sealed.ciphertext),
    }


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    secret = unicodedata.normalize("NFC", passphrase).encode()
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
    )


def private_document(
    key: SigningKey,
    *,
    passphrase: str | None = None,
    party: str | None = None,
    role: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A private key file's JSON: encrypted when a passphrase is given."""
    if passphrase is not None and not passphrase:
        raise KeyFileError("an empty passphrase protects nothing")
    clash = _RESERVED & set(extra or {})
    if clash:
        raise KeyFileError(f"extra key file fields clash with the format: {sorted(clash)}")
    pub = public_bytes(key)
    doc: dict[str, Any] = {
        **(extra or {}),
        "type": PRIVATE,
        "key_id": key_id(pub),
        "public_key": _b64e(pub),
        "party": check_party(party),
        "role": check_role(role),
    }
    if passphrase is None:
        doc["seed"] = _b64e(bytes(key))
    else:
        doc["encrypted"] = seal_seed(bytes(key), passphrase)
    return doc


def _dump(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def write_private(
    path: Path,
    key: SigningKey,
    *,
    passphrase: str | None = None,
    party: str | None = None,
    role: str | None = None,
    **extra: str,
) -> None:
    """A new private key file (never overwritten), encrypted when a passphrase is given.
    `extra` fields are kept beside the key (e.g. a witness's name, which its key hash
    commits to); readers of the key ignore them."""
    data = _dump(private_document(key, passphrase=passphrase, party=party, role=role, extra=extra))
    # Create with 0600 from the start: never a moment when the seed is readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def replace_private(path: Path, doc: Mapping[str, Any]) -> None:
    """Rewrite a private key file atomically: a 0600 file beside it, then os.replace, so
    that a crash leaves the old file or the new one, never half of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp makes 0600 already; say so for the reader
        with os.fdopen(fd, "wb") as f:
            f.write(_dump(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_public(
    path: Path, public_key: bytes, *, party: str | None = None, role: str | None = None
) -> None:
    doc = {
        "type": PUBLIC,
        "key_id": key_id(public_key),
        "public_key": _b64e(public_key),
        "party": check_party(party),
        "role": check_role(role),
    }
    path.write_bytes(_dump(doc))


# -- reading ---------------------------------------------------------------------------


def _mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read ({e.strerror})") from None


def check_mode(path: Path) -> None:
    """Refuse a secret file (a private key, a passphrase file) that others may read."""
    mode = _mode(path)
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode:04o}): chmod 600 {path}")


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyFileError(f"{path}: not a readable key file ({e})") from e
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path}: not a key file")
    return doc


def _b64(path: Path, doc: Mapping[str, Any], name: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(doc[name], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise KeyFileError(f"{path}: {name} missing or not base64") from e
    if len(raw) != size:
        raise KeyFileError(f"{path}: {name} must be {size} bytes, got {len(raw)}")
    return raw


def _label(path: Path, doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise KeyFileError(f"{path}: {name} must be a string or null")
    try:
        return check_party(value) if name == "party" else check_role(value)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


def _public_key(path: Path, doc: Mapping[str, Any]) -> bytes:
    if "public_key" in doc:
        return _b64(path, doc, "public_key", 32)
    if "seed" in doc:  # the oldest files may lack it
        return public_bytes(SigningKey(_b64(path, doc, "seed", SEED_SIZE)))
    raise KeyFileError(f"{path}: public_key missing")


def read_key_info(path: Path) -> KeyInfo:
    """What a key file says (key id, party, role, encrypted), without its passphrase."""
    doc = _load(path)
    if doc.get("type") not in (PRIVATE, PUBLIC):
        raise KeyFileError(f"{path}: not an ed25519 key file")
    pub = _public_key(path, doc)
    if "key_id" in doc and doc["key_id"] != key_id(pub):
        raise KeyFileError(f"{path}: key_id does not match public_key")
    return KeyInfo(
        path=path,
        private=doc["type"] == PRIVATE,
        key_id=key_id(pub),
        public_key=pub,
        party=_label(path, doc, "party"),
        role=_label(path, doc, "role"),
        encrypted="encrypted" in doc,
        mode=_mode(path),
    )


@dataclass(frozen=True)
class Sealed:
    """An "encrypted" object, its parameters checked (and bounded) before any work."""

    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    box: bytes

    def open(self, passphrase: str) -> bytes | None:
        """The seed, or None for a wrong passphrase (the box's MAC does not verify)."""
        key = _derive(passphrase, self.salt, self.opslimit, self.memlimit)
        try:
            return nacl.secret.SecretBox(key).decrypt(self.box, self.nonce)
        except nacl.exceptions.CryptoError:
            return None


def _sealed(path: Path, doc: Mapping[str, Any]) -> Sealed:
    enc = doc["encrypted"]
    if not isinstance(enc, dict) or enc.get("kdf") != "argon2id":
        raise KeyFileError(f"{path}: encrypted: only kdf argon2id is known")
    limits: dict[str, int] = {}
    for name, low, high in (
        ("opslimit", MIN_OPSLIMIT, MAX_OPSLIMIT),
        ("memlimit", MIN_MEMLIMIT, MAX_MEMLIMIT),
    ):
        value = enc.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise KeyFileError(
                f"{path}: encrypted.{name} must be an integer from {low} to {high}, got {value!r}"
            )
        limits[name] = value
    return Sealed(
        opslimit=limits["opslimit"],
        memlimit=limits["memlimit"],
        salt=_b64(path, enc, "salt", argon2id.SALTBYTES),
        nonce=_b64(path, enc, "nonce", nacl.secret.SecretBox.NONCE_SIZE),
        box=_b64(path, enc, "box", SEED_SIZE + nacl.secret.SecretBox.MACBYTES),
    )


def read_key_file(path: Path) -> KeyFile:
    """The private key in `path`, checked: the file's mode (no access for group or others,
    before its content is read), its passphrase when encrypted, and that the public key it
    names is the seed's."""
    path = Path(path)
    check_mode(path)
    doc = _load(path)
    if doc.get("type") != PRIVATE:
        raise KeyFileError(f"{path}: not an ed25519 private key file")
    party, role = _label(path, doc, "party"), _label(path, doc, "role")
    encrypted = "encrypted" in doc
    seed = unlock(path, _sealed(path, doc)) if encrypted else _b64(path, doc, "seed", SEED_SIZE)
    key = SigningKey(seed)
    pub = public_bytes(key)
    if "public_key" in doc and _b64(path, doc, "public_key", 32) != pub:
        raise KeyFileError(f"{path}: public_key does not match the seed")
    if "key_id" in doc and doc["key_id"] != key_id(pub):
        raise KeyFileError(f"{path}: key_id does not match the key")
    return KeyFile(key, key_id(pub), party, role, path, encrypted)


def read_private(path: Path) -> SigningKey:
    return read_key_file(path).signing_key


def read_public(path: Path) -> bytes:
    """The raw public key from a public or a private key file (never needs a passphrase)."""
    return read_key_info(path).public_key


def read_document(path: Path) -> dict[str, Any]:
    """A private key file's JSON, its mode checked (for rewriting it: keys protect)."""
    check_mode(path)
    doc = _load(path)
    if doc.get("type") != PRIVATE:
        raise KeyFileError(f"{path}: not an ed25519 private key file")
    return doc


# -- passphrases -----------------------------------------------------------------------

# Passphrases already given in this process: one read of a file descriptor (it cannot be
# read twice), and the last one typed at the prompt (a command signing with several keys
# of one passphrase asks once).
_fd_passphrases: dict[int, str] = {}
_typed: list[str] = []


def forget_passphrases() -> None:
    """Drop the passphrases this process holds (a long-running process, or a test)."""
    _fd_passphrases.clear()
    _typed.clear()


def _first_line(data: bytes, where: str) -> str:
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if len(line) > MAX_PASSPHRASE_BYTES:
        raise KeyFileError(f"{where}: a passphrase is at most {MAX_PASSPHRASE_BYTES} bytes")
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise KeyFileError(f"{where}: the passphrase is not UTF-8") from None
    if not text:
        raise KeyFileError(f"{where}: the passphrase is empty")
    return text


def _from_file(name: str) -> str:
    path = Path(name)
    check_mode(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PASSPHRASE_BYTES + 2)
    except OSError as e:
        raise KeyFileError(f"{PASSPHRASE_FILE_ENV}={name}: {e.strerror}") from None
    return _first_line(data, f"{PASSPHRASE_FILE_ENV}={name}")


def _from_fd(value: str) -> str:
    where = f"{PASSPHRASE_FD_ENV}={value}"
    try:
        fd = int(value)
    except ValueError:
        raise KeyFileError(f"{where}: not a file descriptor number") from None
    if fd in _fd_passphrases:
        return _fd_passphrases[fd]
    data = bytearray()
    try:
        # Byte by byte up to the newline: what follows on the descriptor is not ours.
        while len(data) <= MAX_PASSPHRASE_BYTES and not data.endswith(b"\n"):
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise KeyFileError(f"{where}: cannot read ({e.strerror})") from None
    _fd_passphrases[fd] = _first_line(bytes(data), where)
    return _fd_passphrases[fd]


def given_passphrase() -> tuple[str, str] | None:
    """A passphrase given for automation, and where it came from; None for none given."""
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV], PASSPHRASE_ENV
    if os.environ.get(PASSPHRASE_FILE_ENV):
        return _from_file(os.environ[PASSPHRASE_FILE_ENV]), PASSPHRASE_FILE_ENV
    if os.environ.get(PASSPHRASE_FD_ENV):
        return _from_fd(os.environ[PASSPHRASE_FD_ENV]), PASSPHRASE_FD_ENV
    return None


def at_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _prompt(text: str) -> str:
    try:
        return getpass.getpass(text)
    except EOFError:
        raise KeyFileError("no passphrase given (end of input)") from None


def unlock(path: Path, sealed: Sealed) -> bytes:
    """The seed in `sealed`, with the passphrase from the sources in order."""
    given = given_passphrase()
    if given is not None:
        passphrase, source = given
        seed = sealed.open(passphrase)
        if seed is None:
            raise KeyFileError(f"{path}: wrong passphrase (from {source})")
        return seed
    if not at_terminal():
        raise KeyFileError(
            f"{path} is encrypted: give its passphrase at a terminal, or in {SOURCES}"
        )
    if _typed:
        seed = sealed.open(_typed[0])
        if seed is not None:
            return seed
    for _ in range(PROMPT_ATTEMPTS):
        passphrase = _prompt(f"passphrase for {path}: ")
        seed = sealed.open(passphrase)
        if seed is not None:
            _typed[:] = [passphrase]
            return seed
        print(f"{path}: wrong passphrase", file=sys.stderr)
    raise KeyFileError(f"{path}: wrong passphrase ({PROMPT_ATTEMPTS} attempts)")


def new_passphrase(what: str, *, env_sources: bool = True) -> str:
    """A passphrase to encrypt `what` with: from CEASEFIRE_NEW_PASSPHRASE, then (unless
    `env_sources` is false: when those gave the old one) the usual sources, else typed twice
    at a terminal."""
    if os.environ.get(NEW_PASSPHRASE_ENV):
        return os.environ[NEW_PASSPHRASE_ENV]
    given = given_passphrase() if env_sources else None
    if given is not None:
        return given[0]
    if not at_terminal():
        sources = f"{NEW_PASSPHRASE_ENV}, {SOURCES}" if env_sources else NEW_PASSPHRASE_ENV
        raise KeyFileError(
            f"{what}: a passphrase is needed: type it at a terminal, or give it in {sources} "
            "(or write the key unencrypted with --no-passphrase)"
        )
    first = _prompt(f"new passphrase for {what}: ")
    if not first:
        raise KeyFileError(
            "an empty passphrase protects nothing; for an unencrypted key use --no-passphrase"
        )
    if _prompt("the same passphrase again: ") != first:
        raise KeyFileError("the two passphrases differ; nothing was written")
    return first


def reseal(key_file: KeyFile, passphrase: str) -> None:
    """Rewrite `key_file`'s file encrypted with `passphrase`, keeping what else it says."""
    doc = read_document(key_file.path)
    extra = {k: v for k, v in doc.items() if k not in _RESERVED}
    replace_private(
        key_file.path,
        private_document(
            key_file.signing_key,
            passphrase=passphrase,
            party=key_file.party,
            role=key_file.role,
            extra=extra,
        ),
    )
