"""Private keys at rest (ledger/keys.py, docs/keys.md): encrypted with a passphrase (Argon2id
and SecretBox), created 0600, refused when others may read them, carrying key id, party and
role; the passphrase from the environment, a file, a file descriptor or the terminal."""

from __future__ import annotations

import argparse
import base64
import json
import os
import pty
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import pytest
from nacl.signing import SigningKey, VerifyKey

from clients import envelope_files
from ledger import keys
from ledger.formats import dsse
from tests import cli_runner

ROOT = Path(__file__).parent.parent
PASSPHRASE = "correct horse battery staple"
ENV = ("CEASEFIRE_PASSPHRASE", "CEASEFIRE_PASSPHRASE_FILE", "CEASEFIRE_PASSPHRASE_FD")


@pytest.fixture(autouse=True)
def no_passphrase_given(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test says where its passphrase comes from; none held from another test."""
    for name in (*ENV, "CEASEFIRE_NEW_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    keys.forget_passphrases()
    yield
    keys.forget_passphrases()


def _keygen(wd: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> Path:
    r = cli_runner.run("keygen", name, "--dir", "keys", *extra, cwd=wd, env=env)
    assert r.returncode == 0, r.stderr
    return wd / "keys" / f"{name}.key"


def _one_error(r: subprocess.CompletedProcess[str], code: int, *said: str) -> None:
    """Exit `code` and one line on stderr saying all of `said`; no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for text in said:
        assert text in r.stderr, (text, r.stderr)


def _sign_offline(
    wd: Path, key: Path, out: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A real signed statement (a key revocation written for co-signing, not sent)."""
    return cli_runner.run(
        "keys", "revoke", "--party", "ARM", "--key-id", "0" * 64, "--key", str(key),
        "--out", out, cwd=wd, env=env,
    )  # fmt: skip


def _signed_by(envelope_path: Path, key_file: Path) -> bool:
    """The envelope carries a valid signature by the key in `key_file` (checked with PyNaCl
    against the public key in its .pub file)."""
    envelope = envelope_files.read(envelope_path)
    public = keys.read_public(key_file.with_suffix(".pub"))
    message = dsse.pae(envelope.payload_type, envelope.payload)
    for sig in envelope.signatures:
        if sig.keyid == dsse.key_id(public):
            VerifyKey(public).verify(message, sig.sig)  # raises on a bad signature
            return True
    return False


# -- the format ------------------------------------------------------------------------


def test_encrypted_key_round_trips_and_signs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    path = tmp_path / "k.key"
    keys.write_private(path, key, passphrase=PASSPHRASE, party="ARM", role="monitor")
    doc = json.loads(path.read_text())
    assert "seed" not in doc and base64.b64encode(bytes(key)).decode() not in path.read_text()
    assert doc["encrypted"]["kdf"] == "argon2id"
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", PASSPHRASE)
    read = keys.read_key_file(path)
    assert bytes(read.signing_key) == bytes(key) and read.encrypted
    assert (read.party, read.role, read.path) == ("ARM", "monitor", path)
    assert read.key_id == dsse.key_id(bytes(key.verify_key)) == doc["key_id"]
    signature = keys.read_private(path).sign(b"seen at 04:10").signature
    VerifyKey(bytes(key.verify_key)).verify(b"seen at 04:10", signature)


def test_known_answer_decryption_from_the_documented_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/keys.md is enough to open a key file with PyNaCl alone, and a file built by
    hand from it (fixed salt, nonce and seed) is read by ledger.keys."""
    seed, salt, nonce = bytes(range(32)), b"\x07" * 16, b"\x09" * 24
    ops, mem = argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN * 8
    k = argon2id.kdf(32, PASSPHRASE.encode(), salt, opslimit=ops, memlimit=mem)
    box = nacl.secret.SecretBox(k).encrypt(seed, nonce).ciphertext
    public = bytes(SigningKey(seed).verify_key)
    by_hand = {
        "type": "ed25519-private",
        "key_id": dsse.key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "party": "AZE",
        "role": "investigator",
        "encrypted": {
            "kdf": "argon2id", "opslimit": ops, "memlimit": mem,
            "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
            "box": base64.b64encode(box).decode(),
        },
    }  # fmt: skip
    path = tmp_path / "by-hand.key"
    path.write_text(json.dumps(by_hand))
    path.chmod(0o600)
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", PASSPHRASE)
    assert bytes(keys.read_private(path)) == seed
    assert keys.read_key_file(path).role == "investigator"

    # And the other way: what keygen writes, opened from the doc's recipe.
    written = _keygen(tmp_path, "w", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    enc = json.loads(written.read_text())["encrypted"]
    assert (enc["opslimit"], enc["memlimit"]) == (
        argon2id.OPSLIMIT_INTERACTIVE,
        argon2id.MEMLIMIT_INTERACTIVE,
    )
    b = {n: base64.b64decode(enc[n]) for n in ("salt", "nonce", "box")}
    k = argon2id.kdf(
        32, PASSPHRASE.encode(), b["salt"], opslimit=enc["opslimit"], memlimit=enc["memlimit"]
    )
    opened = nacl.secret.SecretBox(k).decrypt(b["box"], b["nonce"])
    assert bytes(SigningKey(opened).verify_key) == keys.read_public(written.with_suffix(".pub"))


def test_old_format_key_file_still_reads(tmp_path: Path) -> None:
    key = SigningKey.generate()
    public = bytes(key.verify_key)
    path = tmp_path / "old.key"
    old = {
        "type": "ed25519-private",
        "seed": base64.b64encode(bytes(key)).decode(),
        "public_key": base64.b64encode(public).decode(),
        "key_id": dsse.key_id(public),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(old, f)
    read = keys.read_key_file(path)
    assert bytes(read.signing_key) == bytes(key)
    assert (read.party, read.role, read.encrypted) == (None, None, False)
    assert keys.read_public(path) == public
    r = cli_runner.run("keys", "show", str(path), "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["encrypted"] is False


@pytest.mark.parametrize(
    ("field", "value"),
    [("memlimit", 2**40), ("opslimit", 10**9), ("memlimit", -1), ("opslimit", True)],
)
def test_hostile_cost_parameters_refused_without_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: int
) -> None:
    path = tmp_path / "hostile.key"
    keys.write_private(path, SigningKey.generate(), passphrase=PASSPHRASE)
    doc = json.loads(path.read_text())
    doc["encrypted"][field] = value
    path.unlink()
    keys.replace_private(path, doc)
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", PASSPHRASE)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(keys.KeyFileError, match=f"encrypted.{field} must be an integer"):
        keys.read_key_file(path)
    assert time.monotonic() - started < 1
    # ru_maxrss is in KiB on Linux: nothing near the 1 TiB asked for was touched.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100 * 1024


def test_a_swapped_public_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.key"
    keys.write_private(path, SigningKey.generate(), passphrase=PASSPHRASE)
    doc = json.loads(path.read_text())
    other = bytes(SigningKey.generate().verify_key)
    doc["public_key"], doc["key_id"] = base64.b64encode(other).decode(), dsse.key_id(other)
    keys.replace_private(path, doc)
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", PASSPHRASE)
    with pytest.raises(keys.KeyFileError, match="public_key does not match the seed"):
        keys.read_key_file(path)


# -- wrong passphrases and readable files -----------------------------------------------


def test_wrong_passphrase_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _keygen(tmp_path, "arm-monitor", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    r = _sign_offline(tmp_path, key, "x.json", env={"CEASEFIRE_PASSPHRASE": "not it"})
    _one_error(r, 2, f"{Path('keys/arm-monitor.key')}", "wrong passphrase")
    assert not (tmp_path / "x.json").exists()
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", "not it")
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.read_key_file(key)


def test_encrypted_key_without_a_passphrase_source_is_refused(tmp_path: Path) -> None:
    key = _keygen(tmp_path, "k", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    r = _sign_offline(tmp_path, key, "x.json")  # stdin is not a terminal here
    _one_error(r, 2, "is encrypted", "CEASEFIRE_PASSPHRASE_FILE", "CEASEFIRE_PASSPHRASE_FD")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = _keygen(tmp_path, "k", "--no-passphrase")
    key.chmod(mode)
    hint = f"is readable by others (mode {mode:04o}): chmod 600 {key}"
    with pytest.raises(keys.KeyFileError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        keys.read_key_file(key)
    r = _sign_offline(tmp_path, Path("keys/k.key"), "x.json")
    _one_error(r, 2, f"mode {mode:04o}", "chmod 600 keys/k.key")
    key.chmod(0o600)
    assert _sign_offline(tmp_path, Path("keys/k.key"), "x.json").returncode == 0
    assert _signed_by(tmp_path / "x.json", key)


def test_mode_is_checked_before_the_content(tmp_path: Path) -> None:
    path = tmp_path / "junk.key"
    path.write_text("not json")
    path.chmod(0o644)
    with pytest.raises(keys.KeyFileError, match="readable by others"):
        keys.read_key_file(path)


# -- keygen --------------------------------------------------------------------------


def test_keygen_writes_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        for name, extra in (("plain", ("--no-passphrase",)), ("sealed", ())):
            key = _keygen(tmp_path, name, *extra, env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
            assert key.stat().st_mode & 0o777 == 0o600
            assert key.with_suffix(".pub").stat().st_mode & 0o777 == 0o666  # public
    finally:
        os.umask(old)


def test_keygen_carries_party_and_role(tmp_path: Path) -> None:
    r = cli_runner.run(
        "keygen", "arm-monitor", "--dir", "keys", "--party", "arm", "--role", "Monitor",
        "--json", cwd=tmp_path, env={"CEASEFIRE_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["party"], out["role"], out["encrypted"]) == ("ARM", "monitor", True)
    for suffix in (".key", ".pub"):
        info = keys.read_key_info(tmp_path / "keys" / f"arm-monitor{suffix}")
        assert (info.party, info.role, info.key_id) == ("ARM", "monitor", out["key_id"])
    shown = cli_runner.run("keys", "show", "keys/arm-monitor.key", cwd=tmp_path)
    assert "party ARM, role monitor" in shown.stdout and "encrypted" in shown.stdout
    assert out["key_id"] in shown.stdout


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--role", "general"), "monitor, authority, observer, investigator"),
        (("--party", "A"), "a party code"),
        ((), "--no-passphrase"),  # no passphrase source, not at a terminal
    ],
)
def test_keygen_refusals_write_nothing(tmp_path: Path, flags: tuple[str, ...], said: str) -> None:
    r = cli_runner.run("keygen", "k", "--dir", "keys", *flags, cwd=tmp_path)
    _one_error(r, 2, said)
    assert not (tmp_path / "keys" / "k.key").exists()
    assert not (tmp_path / "keys" / "k.pub").exists()


# -- passphrase sources ------------------------------------------------------------------


def test_passphrase_from_a_file(tmp_path: Path) -> None:
    key = _keygen(tmp_path, "k", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\nsecond line ignored\n")
    secret.chmod(0o600)
    env = {"CEASEFIRE_PASSPHRASE_FILE": str(secret)}
    assert _sign_offline(tmp_path, key, "x.json", env=env).returncode == 0
    assert _signed_by(tmp_path / "x.json", key)
    secret.chmod(0o644)
    _one_error(_sign_offline(tmp_path, key, "y.json", env=env), 2, "chmod 600")


def test_passphrase_from_a_file_descriptor_read_once(tmp_path: Path) -> None:
    """Two keys of one passphrase, in a real process: one line on the descriptor serves
    both (it cannot be read twice)."""
    a = _keygen(tmp_path, "a", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    b = _keygen(tmp_path, "b", env={"CEASEFIRE_PASSPHRASE": PASSPHRASE})
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE.encode() + b"\n")
    os.close(write_end)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "clients.cli", "keys", "revoke", "--party", "ARM",
             "--key-id", "0" * 64, "--key", str(a), "--key", str(b), "--out", "x.json"],
            cwd=tmp_path, env={**os.environ, "CEASEFIRE_PASSPHRASE_FD": str(read_end)},
            pass_fds=(read_end,), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(read_end)
    assert r.returncode == 0, r.stderr
    assert _signed_by(tmp_path / "x.json", a) and _signed_by(tmp_path / "x.json", b)


def test_passphrase_asked_at_a_terminal(tmp_path: Path) -> None:
    """At a terminal keygen asks twice; the key then opens with the typed passphrase."""
    code = (
        "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "from clients.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "keygen", "t", "--dir", "keys"],
        cwd=tmp_path, stdin=terminal, stdout=terminal, stderr=terminal,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    for _ in range(2):
        while not seen.rstrip().endswith(b":"):
            seen += os.read(controller, 1024)
        os.write(controller, PASSPHRASE.encode() + b"\n")
        seen = b""
    assert proc.wait(timeout=60) == 0
    output = b""
    try:
        while chunk := os.read(controller, 1024):
            output += chunk
    except OSError:  # EIO once the terminal's other end is closed
        pass
    os.close(controller)
    assert PASSPHRASE.encode() not in output  # not echoed
    assert b"encrypted with your passphrase" in output
    os.environ["CEASEFIRE_PASSPHRASE"] = PASSPHRASE
    try:
        assert keys.read_key_file(tmp_path / "keys" / "t.key").encrypted
    finally:
        del os.environ["CEASEFIRE_PASSPHRASE"]


# -- protect and passphrase ------------------------------------------------------------------


def test_protect_then_sign_with_the_passphrase(tmp_path: Path) -> None:
    key = _keygen(tmp_path, "k", "--no-passphrase", "--party", "ARM", "--role", "authority")
    plain = keys.read_private(key)
    r = cli_runner.run(
        "keys", "protect", "keys/k.key", "--json", cwd=tmp_path,
        env={"CEASEFIRE_NEW_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["encrypted"] is True
    assert "seed" not in json.loads(key.read_text())
    assert key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["k.key", "k.pub"]  # no temp left
    _one_error(_sign_offline(tmp_path, key, "x.json"), 2, "is encrypted")
    env = {"CEASEFIRE_PASSPHRASE": PASSPHRASE}
    assert _sign_offline(tmp_path, key, "x.json", env=env).returncode == 0
    assert _signed_by(tmp_path / "x.json", key)
    os.environ["CEASEFIRE_PASSPHRASE"] = PASSPHRASE
    try:
        read = keys.read_key_file(key)
    finally:
        del os.environ["CEASEFIRE_PASSPHRASE"]
    assert bytes(read.signing_key) == bytes(plain)
    assert (read.party, read.role) == ("ARM", "authority")
    again = cli_runner.run("keys", "protect", "keys/k.key", cwd=tmp_path, env=env)
    _one_error(again, 2, "already encrypted", "keys passphrase")


def test_change_passphrase_keeps_the_key_and_its_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    path = tmp_path / "w.key"
    keys.write_private(path, key, passphrase=PASSPHRASE, role="witness", name="w.example/1")
    r = cli_runner.run(
        "keys", "passphrase", str(path), cwd=tmp_path,
        env={"CEASEFIRE_PASSPHRASE": PASSPHRASE, "CEASEFIRE_NEW_PASSPHRASE": "new words"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(path.read_text())["name"] == "w.example/1"
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", PASSPHRASE)
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.read_key_file(path)
    monkeypatch.setenv("CEASEFIRE_PASSPHRASE", "new words")
    assert bytes(keys.read_private(path)) == bytes(key)
    assert keys.read_key_file(path).role == "witness"
    wrong_old = cli_runner.run(
        "keys", "passphrase", str(path), cwd=tmp_path,
        env={"CEASEFIRE_PASSPHRASE": "nope", "CEASEFIRE_NEW_PASSPHRASE": "x"},
    )  # fmt: skip
    _one_error(wrong_old, 2, "wrong passphrase")


def test_trial_ledger_keys_are_unencrypted_but_say_whose(tmp_path: Path) -> None:
    """`scripts/run --bootstrap`: a trial ledger's keys open without a passphrase, 0600, and
    carry their party and role (the log key belongs to no party)."""
    from clients.cli import _bootstrap
    from geo.borders import DEFAULT_DATASET_DIR

    home = tmp_path / "var"
    home.mkdir()
    _bootstrap(
        argparse.Namespace(
            data_dir=home,
            db=f"sqlite:///{home / 'ledger.db'}",
            log_key=home / "keys" / "log.key",
            border_data=DEFAULT_DATASET_DIR,
        )
    )
    monitor = keys.read_key_file(home / "keys" / "aze-monitor.key")
    assert (monitor.party, monitor.role, monitor.encrypted) == ("AZE", "monitor", False)
    authority = keys.read_key_info(home / "keys" / "arm-authority.pub")
    assert (authority.party, authority.role) == ("ARM", "authority")
    log = keys.read_key_file(home / "keys" / "log.key")
    assert (log.party, log.role) == (None, None)
    for key in (home / "keys").glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600


def test_the_docs_recipe_opens_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/keys.md's Python block, run as written on a key keygen wrote."""
    doc = (ROOT / "docs" / "keys.md").read_text()
    recipe = doc.split("```python\n", 1)[1].split("```", 1)[0]
    _keygen(tmp_path, "arm-monitor", env={"CEASEFIRE_PASSPHRASE": "four random words here"})
    monkeypatch.chdir(tmp_path / "keys")
    exec(compile(recipe, "docs/keys.md", "exec"), {})  # raises if the recipe is wrong
    (tmp_path / "keys" / "arm-monitor.key").unlink()
    _keygen(tmp_path, "arm-monitor", env={"CEASEFIRE_PASSPHRASE": "other words"})
    with pytest.raises(nacl.exceptions.CryptoError):
        exec(compile(recipe, "docs/keys.md", "exec"), {})
