"""DSSE tests: the spec's PAE example, published Ed25519 vectors, and the strict JSON reader."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import nacl.signing
import pytest

from ledger.formats.dsse import (
    MAX_SIGNATURES,
    Envelope,
    EnvelopeError,
    Signature,
    key_id,
    pae,
    sign,
    verify_signature,
)

# secure-systems-lab/dsse testvectors/vectors.json: RFC 8032 section 7.1 TEST 1 and TEST 2 keys.
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SEED_B = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
PUB_A = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
PUB_B = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
INTOTO = "application/vnd.in-toto+json"
STATEMENT = b'{"_type":"https://in-toto.io/Statement/v1"}'
STATEMENT_PAE = bytes.fromhex(
    "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f"
    "74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
)
SIG_A = "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
SIG_B = "c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw=="
URLSAFE_PAYLOAD = "-_-_Pj8="
URLSAFE_SIG = (
    "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw=="
)
UTF8_TYPE = "application/vnd.exämple+json"
UTF8_SIG = (
    "xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw=="
)

KEY_A = nacl.signing.SigningKey(SEED_A)
KEY_B = nacl.signing.SigningKey(SEED_B)
KEYS = {key_id(PUB_A): PUB_A, key_id(PUB_B): PUB_B}


def test_pae_spec_example() -> None:
    # protocol.md, "Test Vectors".
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_published_vectors() -> None:
    assert pae(INTOTO, STATEMENT) == STATEMENT_PAE
    assert pae(INTOTO, b"") == bytes.fromhex(
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020"
    )
    # LEN counts UTF-8 bytes (29), not characters (28).
    assert pae(UTF8_TYPE, STATEMENT).startswith(
        b"DSSEv1 29 application/vnd.ex\xc3\xa4mple+json 43 "
    )


def test_rfc8032_keys_and_key_ids() -> None:
    assert bytes(KEY_A.verify_key) == PUB_A
    assert bytes(KEY_B.verify_key) == PUB_B
    assert key_id(PUB_A) == hashlib.sha256(PUB_A).hexdigest()
    assert len(key_id(PUB_A)) == 64 and key_id(PUB_A) == key_id(PUB_A).lower()
    with pytest.raises(ValueError):
        key_id(PUB_A[:31])


def envelope_json(payload: str, payload_type: str, sigs: list[tuple[str, str]]) -> bytes:
    doc = {
        "payload": payload,
        "payloadType": payload_type,
        "signatures": [{"keyid": k, "sig": s} for k, s in sigs],
    }
    return json.dumps(doc).encode()


def test_published_signatures_are_reproduced_and_verify() -> None:
    # The vectors' keyid "A"/"B" are unauthenticated hints; ours are SHA-256 key ids.
    env = sign(INTOTO, STATEMENT, [KEY_A, KEY_B])
    assert [base64.b64encode(s.sig).decode() for s in env.signatures] == [SIG_A, SIG_B]
    assert env.verified_keyids(KEYS) == set(KEYS)

    parsed = Envelope.from_json(
        envelope_json(
            base64.b64encode(STATEMENT).decode(),
            INTOTO,
            [(key_id(PUB_A), SIG_A), (key_id(PUB_B), SIG_B)],
        )
    )
    assert parsed == env
    assert parsed.pae() == STATEMENT_PAE

    # "url-safe-base64": verifiers MUST accept either alphabet.
    urlsafe = Envelope.from_json(
        envelope_json(URLSAFE_PAYLOAD, INTOTO, [(key_id(PUB_A), URLSAFE_SIG)])
    )
    assert urlsafe.payload == bytes([0xFB, 0xFF, 0xBF, 0x3E, 0x3F])
    assert urlsafe.verified_keyids(KEYS) == {key_id(PUB_A)}

    # "non-ascii-payload-type".
    utf8 = Envelope.from_json(
        envelope_json(base64.b64encode(STATEMENT).decode(), UTF8_TYPE, [(key_id(PUB_A), UTF8_SIG)])
    )
    assert utf8.verified_keyids(KEYS) == {key_id(PUB_A)}


def test_payload_type_swapped_is_rejected() -> None:
    # "payload-type-swapped": the signature covers another payloadType.
    env = Envelope.from_json(
        envelope_json(
            base64.b64encode(STATEMENT).decode(),
            "application/vnd.example.other+json",
            [(key_id(PUB_A), SIG_A)],
        )
    )
    assert env.verified_keyids(KEYS) == set()
    assert not verify_signature(env, env.signatures[0], PUB_A)


def test_one_key_twice_counts_once() -> None:
    # "threshold-two-one-key-twice".
    env = Envelope.from_json(
        envelope_json(
            base64.b64encode(STATEMENT).decode(),
            INTOTO,
            [(key_id(PUB_A), SIG_A), (key_id(PUB_A), SIG_A)],
        )
    )
    assert env.verified_keyids(KEYS) == {key_id(PUB_A)}


def test_sign_verify_round_trip_and_cosign() -> None:
    author = nacl.signing.SigningKey.generate()
    observer = nacl.signing.SigningKey.generate()
    pub_author, pub_observer = bytes(author.verify_key), bytes(observer.verify_key)
    keys = {key_id(pub_author): pub_author, key_id(pub_observer): pub_observer}

    env = sign("ceasefire.v1.IncidentReport", b"\x0a\x03abc", [author])
    assert env.verified_keyids(keys) == {key_id(pub_author)}
    assert verify_signature(env, env.signatures[0], pub_author)
    assert not verify_signature(env, env.signatures[0], pub_observer)

    cosigned = env.add_signature(observer)
    assert cosigned.signatures[0] == env.signatures[0]
    assert cosigned.verified_keyids(keys) == set(keys)
    assert cosigned.add_signature(observer) == cosigned  # idempotent per key

    data = cosigned.to_json()
    assert Envelope.from_json(data) == cosigned
    assert Envelope.from_json(data).to_json() == data
    assert b" " not in data  # compact
    doc = json.loads(data)
    assert list(doc) == ["payload", "payloadType", "signatures"]
    assert doc["payload"] == base64.standard_b64encode(b"\x0a\x03abc").decode()

    # Only the known keys count, and a key registered under the wrong id is a caller bug.
    assert cosigned.verified_keyids({key_id(pub_observer): pub_observer}) == {key_id(pub_observer)}
    with pytest.raises(ValueError):
        cosigned.verified_keyids({key_id(pub_author): pub_observer})

    # Tampering with payload or type invalidates every signature.
    for other in [
        Envelope(b"\x0a\x03abd", env.payload_type, cosigned.signatures),
        Envelope(env.payload, "ceasefire.v1.Finding", cosigned.signatures),
    ]:
        assert other.verified_keyids(keys) == set()


VALID_SIG = {"keyid": key_id(PUB_A), "sig": SIG_A}
VALID: dict[str, Any] = {
    "payload": base64.b64encode(STATEMENT).decode(),
    "payloadType": INTOTO,
    "signatures": [VALID_SIG],
}


def with_(**changes: Any) -> bytes:
    doc = dict(VALID, **changes)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def sig_with(**changes: Any) -> bytes:
    s = {k: v for k, v in dict(VALID_SIG, **changes).items() if v is not ...}
    return with_(signatures=[s])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff" + with_(), "envelope: not valid UTF-8"),
        (b"{", "envelope: not valid JSON"),
        (b'{"payload": NaN}', "envelope: not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "envelope: not valid JSON"),
        (b"[]", "envelope: must be a JSON object"),
        (b'"x"', "envelope: must be a JSON object"),
        (with_()[:-1] + b',"payloadType":"x"}', "envelope: duplicate key 'payloadType'"),
        (sig_with()[:-3] + b',"sig":"AA=="}]}', "envelope: duplicate key 'sig'"),
        (with_(payload=...), "payload: must be a base64 string"),
        (with_(payload=5), "payload: must be a base64 string"),
        (with_(payload=""), "payload: empty"),
        (with_(payload="abc"), "payload: not valid base64"),
        (with_(payload="ab$="), "payload: not valid base64"),
        (with_(payload="a+-="), "payload: not valid base64"),
        (with_(payload="AB=A"), "payload: not valid base64"),
        (with_(payload="QR=="), "payload: not canonical base64"),
        (with_(payload="ABC="), "payload: not canonical base64"),
        (with_(payloadType=...), "payloadType: must be a non-empty string"),
        (with_(payloadType=""), "payloadType: must be a non-empty string"),
        (with_(payloadType=["x"]), "payloadType: must be a non-empty string"),
        (with_(signatures=...), "signatures: must be a non-empty array"),
        (with_(signatures=[]), "signatures: must be a non-empty array"),
        (with_(signatures={"keyid": "x"}), "signatures: must be a non-empty array"),
        (with_(signatures=[VALID_SIG] * (MAX_SIGNATURES + 1)), "signatures: more than 16"),
        (with_(signatures=["x"]), "signatures[0]: must be an object"),
        (with_(signatures=[VALID_SIG, 7]), "signatures[1]: must be an object"),
        (sig_with(keyid=...), "signatures[0].keyid: must be 64 lowercase hex"),
        (sig_with(keyid="A"), "signatures[0].keyid: must be 64 lowercase hex"),
        (sig_with(keyid=key_id(PUB_A).upper()), "signatures[0].keyid: must be 64 lowercase hex"),
        (sig_with(keyid=key_id(PUB_A) + "0"), "signatures[0].keyid: must be 64 lowercase hex"),
        (sig_with(sig=...), "signatures[0].sig: must be a base64 string"),
        (sig_with(sig=None), "signatures[0].sig: must be a base64 string"),
        (sig_with(sig="not base64!"), "signatures[0].sig: not valid base64"),
        (sig_with(sig=SIG_A[:-2]), "signatures[0].sig: not valid base64"),
        (sig_with(sig="AAAA"), "signatures[0].sig: must be 64 bytes, got 3"),
        (sig_with(sig=""), "signatures[0].sig: must be 64 bytes, got 0"),
    ],
)
def test_from_json_rejects(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_json(data)
    assert str(info.value).startswith(message), str(info.value)


def test_from_json_lone_surrogate_type() -> None:
    data = with_().replace(INTOTO.encode(), b"\\ud800")
    with pytest.raises(EnvelopeError, match=r"^payloadType: not valid Unicode"):
        Envelope.from_json(data)


def test_from_json_size_limit_and_extras() -> None:
    data = with_()
    assert Envelope.from_json(data, max_size=len(data)).payload == STATEMENT
    with pytest.raises(EnvelopeError, match=r"^envelope: .* exceeds the 10-byte limit"):
        Envelope.from_json(data, max_size=10)
    with pytest.raises(EnvelopeError, match=r"^envelope: .* exceeds"):
        Envelope.from_json(b" " * 65537)
    # Fields beside DSSE's are refused: no signature covers them.
    with pytest.raises(EnvelopeError, match=r"^note: not a DSSE field"):
        Envelope.from_json(json.dumps(dict(VALID, note="ARM withdraws this report")).encode())
    with pytest.raises(EnvelopeError, match=r"^signatures\[0\]\.note: not a DSSE field"):
        Envelope.from_json(json.dumps(dict(VALID, signatures=[dict(VALID_SIG, note="x")])).encode())


def test_identity_is_what_was_signed() -> None:
    """Re-spelt envelopes (indented, keys reordered, escaped slashes) parse to the same
    statement and the same canonical bytes; the identity is SHA-256 of the PAE."""
    first = Envelope.from_json(with_())
    spellings = [
        json.dumps(VALID, indent=4).encode(),
        json.dumps(dict(reversed(list(VALID.items())))).encode(),
        json.dumps(VALID).replace("/", "\\/").encode(),
    ]
    for data in spellings:
        again = Envelope.from_json(data)
        assert again.to_json() == first.to_json()
        assert again.statement_sha256() == hashlib.sha256(first.pae()).digest()


def test_constructor_validates() -> None:
    sig = Signature(key_id(PUB_A), bytes(64))
    with pytest.raises(EnvelopeError, match=r"^keyid:"):
        Signature("A", bytes(64))
    with pytest.raises(EnvelopeError, match=r"^sig:"):
        Signature(key_id(PUB_A), bytes(63))
    with pytest.raises(EnvelopeError, match=r"^payload:"):
        Envelope(b"", INTOTO, (sig,))
    with pytest.raises(EnvelopeError, match=r"^payloadType:"):
        Envelope(b"x", "", (sig,))
    with pytest.raises(EnvelopeError, match=r"^signatures:"):
        Envelope(b"x", INTOTO, ())
    with pytest.raises(EnvelopeError, match=r"^signatures:"):
        Envelope(b"x", INTOTO, (sig,) * (MAX_SIGNATURES + 1))
    with pytest.raises(EnvelopeError, match=r"^signatures:"):
        sign(INTOTO, b"x", [])
