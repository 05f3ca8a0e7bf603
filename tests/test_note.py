"""Signed-note and checkpoint tests against the published examples and an independent verifier."""

from __future__ import annotations

import base64
import hashlib

import nacl.bindings
import nacl.signing
import pytest

from ledger.formats.note import (
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    NoteError,
    NoteSigner,
    NoteVerifier,
    UnverifiedNoteError,
    add_signatures,
    key_hash,
    open_note,
    parse_skey,
    parse_vkey,
    sign_note,
)

# golang.org/x/mod/sumdb/note: note.go package doc and note_test.go (TestSign, TestOpen).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngot"
    "pRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)
PETER_NOTE = TEXT + "\n" + PETER_SIG

# The examples at the top of c2sp.org/signed-note and c2sp.org/tlog-checkpoint (their public
# keys are not published, so these are checked for syntax only).
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "\u2014 quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMo"
    "uFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)

# RFC 8032 section 7.1 TEST 1 seed, for a deterministic log key.
LOG_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def test_sumdb_key_strings() -> None:
    peter = parse_vkey(PETER_VKEY)
    assert peter.name == "PeterNeumann"
    assert peter.key_hash.hex() == "c74f20a3"
    assert peter.vkey == PETER_VKEY
    signer = parse_skey(PETER_SKEY)
    assert signer.key_hash == peter.key_hash
    assert signer.verifier.vkey == PETER_VKEY
    assert key_hash("PeterNeumann", 1, peter.public_key) == bytes.fromhex("c74f20a3")


def test_sumdb_sign_is_byte_exact() -> None:
    assert sign_note(TEXT, [parse_skey(PETER_SKEY)]) == PETER_NOTE


def test_sumdb_open() -> None:
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG

    n = open_note(PETER_NOTE, [peter])
    assert n.text == TEXT
    assert n.verified_names == ["PeterNeumann"]
    assert n.unverified == ()

    n = open_note(both, [peter])
    assert n.verified_names == ["PeterNeumann"]
    assert [s.line() for s in n.unverified] == [ENOCH_SIG]

    n = open_note(both.encode(), [peter, enoch])
    assert n.verified_names == ["PeterNeumann", "EnochRoot"]

    # Repeated lines count once; a corrupted unknown line is kept, not fatal.
    corrupt_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    n = open_note(TEXT + "\n" + PETER_SIG * 2 + ENOCH_SIG * 2 + corrupt_enoch, [peter])
    assert n.verified_names == ["PeterNeumann"]
    assert [s.line() for s in n.unverified] == [ENOCH_SIG, corrupt_enoch]

    with pytest.raises(UnverifiedNoteError) as info:
        open_note(both, [])
    assert len(info.value.note.unverified) == 2

    with pytest.raises(NoteError, match="more than"):
        open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), [peter])


def test_sumdb_vkey_manglings_rejected() -> None:
    # TestNewVerifier: every proper substring and every single-byte increment must fail.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    parse_vkey(b[i:j])
    for i in range(len(b)):
        with pytest.raises(NoteError):
            parse_vkey(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]:
        with pytest.raises(NoteError):
            parse_vkey(bad)


def test_c2sp_examples_parse() -> None:
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(C2SP_NOTE, [])
    note = info.value.note
    # The text keeps its inner blank line; only the last one separates the signatures.
    assert note.text.endswith(":\n\ned è subito sera.\n")
    assert [s.name for s in note.unverified] == ["quasimodo.example/salvatore"]
    assert len(note.unverified[0].signature) == 64

    with pytest.raises(UnverifiedNoteError) as info:
        open_note(C2SP_CHECKPOINT, [])
    cp = Checkpoint.parse(info.value.note.text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.to_text() == C2SP_CHECKPOINT.split("\n\n")[0] + "\n"


def independent_verify(note: str, name: str, pub: bytes) -> str:
    """Check a signed note straight from the C2SP text, without ledger.formats.note.
    Returns the text."""
    raw = note.encode("utf-8")
    split = raw.rindex(b"\n\n")
    text, block = raw[: split + 1], raw[split + 2 :]
    assert block.endswith(b"\n")
    want_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + pub).digest()[:4]
    found = False
    for line in block[:-1].split(b"\n"):
        assert line.startswith("\u2014 ".encode())
        line_name, b64 = line[len("\u2014 ".encode()) :].split(b" ")
        sig = base64.standard_b64decode(b64)
        if line_name.decode() == name and sig[:4] == want_id:
            assert nacl.bindings.crypto_sign_open(sig[4:] + text, pub) == text
            found = True
    assert found
    return text.decode()


def test_checkpoint_verifies_independently() -> None:
    log_key = nacl.signing.SigningKey(LOG_SEED)
    origin = "ceasefire.example/ledger"
    signer = NoteSigner(origin, log_key)
    root = hashlib.sha256(b"some root").digest()
    cp = Checkpoint(origin, 1234, root)
    expected_text = f"{origin}\n1234\n{base64.b64encode(root).decode()}\n"
    assert cp.to_text() == expected_text

    signed = sign_note(cp.to_text(), [signer])
    pub = bytes(log_key.verify_key)
    assert independent_verify(signed, origin, pub) == expected_text
    assert Checkpoint.parse(open_note(signed, [signer.verifier]).text) == cp

    # A witness cosigns; both the independent and our verifier accept both lines.
    witness = NoteSigner("witness.example/am", nacl.signing.SigningKey(b"\x07" * 32))
    cosigned = add_signatures(signed, [witness])
    assert cosigned.startswith(signed)
    independent_verify(cosigned, "witness.example/am", bytes(witness.verifier.public_key))
    opened = open_note(cosigned, [signer.verifier, witness.verifier])
    assert opened.verified_names == [origin, "witness.example/am"]
    # Re-signing by the same key replaces its line instead of adding another.
    assert add_signatures(cosigned, [witness]) == cosigned

    ext = Checkpoint(origin, 0, root, ("extension line",))
    assert Checkpoint.parse(ext.to_text()) == ext


def test_negative_cases() -> None:
    key = nacl.signing.SigningKey(LOG_SEED)
    signer = NoteSigner("log.example", key)
    other = NoteVerifier("log.example", bytes(nacl.signing.SigningKey(b"\x01" * 32).verify_key))
    signed = sign_note("hello\n", [signer])
    v = signer.verifier

    with pytest.raises(NoteError, match="invalid signature"):
        open_note(signed.replace("hello", "hellp"), [v])
    # Same name, different key: different key hash, so the line is just unknown.
    with pytest.raises(UnverifiedNoteError):
        open_note(signed, [other])
    # Same name and key hash but a different key: must verify, and fails.
    impostor = NoteVerifier("log.example", other.public_key)
    impostor.key_hash = v.key_hash
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(signed, [impostor])
    with pytest.raises(UnverifiedNoteError):
        open_note(signed, [NoteVerifier("other.example", v.public_key)])

    sig_line = signed.split("\n\n")[1]
    bad_notes = {
        "bad base64": "hello\n\n\u2014 log.example !!!!\n",
        "bad padding": signed[:-2] + "\n",
        "no blank line": "hello\n" + sig_line,
        "no signatures": "hello\n\n",
        "text only": "hello\n",
        "unterminated": signed[:-1],
        "control char": "\x01" + signed,
        "bad name": signed.replace("log.example", "log example"),
        "plus in name": signed.replace("log.example", "log+example"),
        "hyphen not em dash": signed.replace("\u2014", "-"),
        "trailing junk": signed + "Unexpected line.\n",
        "short sig": "hello\n\n\u2014 log.example AAAA\n",
    }
    for what, note in bad_notes.items():
        with pytest.raises(NoteError):
            open_note(note, [v])
            pytest.fail(what)
    with pytest.raises(NoteError):
        open_note(b"\xff" + signed.encode(), [v])

    with pytest.raises(NoteError):
        sign_note("no newline", [signer])
    with pytest.raises(NoteError):
        sign_note("tab\there\n", [signer])
    with pytest.raises(NoteError):
        sign_note("hello\n", [])
    with pytest.raises(NoteError):
        NoteSigner("bad name", key)


@pytest.mark.parametrize(
    "text",
    [
        "origin\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "origin\n+1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n\u0661\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # non-ASCII digit
        "origin\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",  # 31 bytes
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",  # no padding
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-canonical
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # empty extension
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # no final newline
        "origin\n1\n",
    ],
)
def test_checkpoint_parse_rejects(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def test_checkpoint_constructor_rejects() -> None:
    root = bytes(32)
    for args in [("", 1, root), ("a\nb", 1, root), ("o", -1, root), ("o", 1, b"x")]:
        with pytest.raises(CheckpointError):
            Checkpoint(*args)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, root, ("",))
    assert Checkpoint.parse("o\n0\n" + base64.b64encode(root).decode() + "\n").size == 0
