"""Profiles in $XDG_CONFIG_HOME/ceasefire/config.toml: a setting comes from the flag, else
its environment variable, else the profile, else the built-in default; relative paths in a
profile are relative to the file; an unknown key or profile is one line naming the file.

Run in-process (tests/cli_runner.run) against a real server on loopback; the autouse
fixture of tests/conftest.py gives each test its own XDG_CONFIG_HOME."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from ledger import keys
from tests import cli_runner
from tests.conftest import RunningLedger

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
DEAD = "127.0.0.1:9"  # discard: nothing listens there

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _config(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "ceasefire" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _one_error_line(err: str, *said: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for text in said:
        assert text in err, (text, err)


@sqlite_only
def test_server_from_flag_over_environment_over_profile(
    running: RunningLedger, tmp_path: Path
) -> None:
    _config(
        f'default_profile = "live"\n\n[profiles.live]\nserver = "{running.address}"\n\n'
        f'[profiles.dead]\nserver = "{DEAD}"\n'
    )
    # The default profile: its server answers.
    r = cli_runner.run("checkpoint", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tree_size"] == 1
    # --profile (before the command, or on it) chooses another.
    for args in (("--profile", "dead", "checkpoint"), ("checkpoint", "--profile", "dead")):
        r = cli_runner.run(*args, cwd=tmp_path)
        assert r.returncode == 4, (args, r.stderr)  # the log could not be reached
    # CEASEFIRE_PROFILE chooses too; --profile wins over it.
    r = cli_runner.run("checkpoint", cwd=tmp_path, env={"CEASEFIRE_PROFILE": "dead"})
    assert r.returncode == 4, r.stderr
    r = cli_runner.run(
        "--profile", "live", "checkpoint", cwd=tmp_path, env={"CEASEFIRE_PROFILE": "dead"}
    )
    assert r.returncode == 0, r.stderr
    # The environment variable wins over the profile ...
    r = cli_runner.run("checkpoint", cwd=tmp_path, env={"CEASEFIRE_SERVER": DEAD})
    assert r.returncode == 4, r.stderr
    # ... and the flag over both.
    r = cli_runner.run(
        "checkpoint", "--server", running.address, cwd=tmp_path, env={"CEASEFIRE_SERVER": DEAD}
    )
    assert r.returncode == 0, r.stderr


@sqlite_only
def test_profile_key_relative_to_the_config_file_signs(
    running: RunningLedger, tmp_path: Path
) -> None:
    config = _config(
        f'[profiles.arm]\nserver = "{running.address}"\nkey = "keys/arm-monitor.key"\n'
        'party = "ARM"\n'
    )
    (config.parent / "keys").mkdir()
    keys.write_private(config.parent / "keys" / "arm-monitor.key", running.parties.arm_monitor)
    report = shutil.copy(EXAMPLES / "incident-arm.yaml", tmp_path / "report.yaml")
    work = tmp_path / "elsewhere"
    work.mkdir()
    # Without a profile, a report has no key to be signed with.
    r = cli_runner.run("submit", "--server", running.address, str(report), cwd=work)
    assert r.returncode == 2, r.stderr
    _one_error_line(r.stderr, "reports need --key")
    # The profile's key, found beside config.toml (not in the working directory).
    r = cli_runner.run("--profile", "arm", "submit", str(report), "--json", cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["index"] == 1
    # A signed command's required --key comes from the profile too (and --party from it).
    r = cli_runner.run("--profile", "arm", "retract", "1", "--reason", "wrong place", cwd=work)
    assert r.returncode == 0, r.stderr
    assert running.client.checkpoint().tree_size == 3


@sqlite_only
def test_tilde_and_environment_key(running: RunningLedger, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "k").mkdir(parents=True)
    keys.write_private(home / "k" / "arm.key", running.parties.arm_monitor, party="ARM")
    _config(f'[profiles.p]\nserver = "{running.address}"\nkey = ["~/k/arm.key"]\n')
    report = shutil.copy(EXAMPLES / "incident-arm.yaml", tmp_path / "report.yaml")
    r = cli_runner.run(
        "submit", str(report), cwd=tmp_path, env={"HOME": str(home), "CEASEFIRE_PROFILE": "p"}
    )
    assert r.returncode == 0, r.stderr
    # CEASEFIRE_KEY wins over the profile's key: a key that is not the ledger's is refused.
    stranger = tmp_path / "stranger.key"
    keys.write_private(stranger, keys.generate())
    r = cli_runner.run(
        "submit",
        str(report),
        cwd=tmp_path,
        env={"HOME": str(home), "CEASEFIRE_PROFILE": "p", "CEASEFIRE_KEY": str(stranger)},
    )
    assert r.returncode == 1, r.stderr
    assert "refused" in r.stderr
    assert running.client.checkpoint().tree_size == 2


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[profiles.a]\nsever = "x:1"\n', ["profiles.a: unknown key 'sever'", "known: server"]),
        ('defaults = "a"\n', ["unknown key 'defaults'"]),
        ("[profiles.a]\nserver = 5\n", ["profiles.a.server: must be a string"]),
        ("[profiles.a]\nkey = [1]\n", ["profiles.a.key: a key file, or a list"]),
        ("[profiles.a\n", ["not valid TOML"]),
        ('default_profile = "b"\n[profiles.a]\n', ["no profile 'b' (default_profile)", ": a"]),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, said: list[str]
) -> None:
    path = _config(text)
    r = cli_runner.run("timeline", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    _one_error_line(r.stderr, str(path), *said)


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    path = _config('[profiles.field]\nserver = "x:1"\n')
    r = cli_runner.run("--profile", "feild", "timeline", cwd=tmp_path)
    assert r.returncode == 2
    _one_error_line(r.stderr, str(path), "no profile 'feild' (--profile)", "profiles there: field")
    r = cli_runner.run("profile", "show", "feild", cwd=tmp_path)
    assert r.returncode == 2
    _one_error_line(r.stderr, "no profile 'feild'")


def test_profile_add_list_show(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "arm.key"
    key.parent.mkdir()
    keys.write_private(key, keys.generate(), party="ARM")
    r = cli_runner.run(
        "profile", "add", "field", "--server", "ledger.example:443", "--key", "keys/arm.key",
        "--tls-ca", "ca.pem", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["key"] == [str(key)]  # relative to where it was given: made absolute
    assert added["tls_ca"] == str(tmp_path / "ca.pem")
    path = Path(added["file"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The first profile becomes the default; another does not, unless --default.
    r = cli_runner.run("profile", "add", "home", "--server", "127.0.0.1:50051", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli_runner.run("profile", "list", "--json", cwd=tmp_path)
    listed = json.loads(r.stdout)
    assert listed["default_profile"] == "field"
    assert [p["name"] for p in listed["profiles"]] == ["field", "home"]
    r = cli_runner.run("profile", "add", "lab", "--server", "lab:1", "--default", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'default_profile = "lab"' in path.read_text()
    r = cli_runner.run("profile", "show", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["name"] == "lab"
    r = cli_runner.run("profile", "show", "field", cwd=tmp_path)
    assert r.returncode == 0 and "ledger.example:443" in r.stdout
    # Adding a profile that exists is refused; the file is unchanged.
    before = path.read_text()
    r = cli_runner.run("profile", "add", "home", "--server", "other:1", cwd=tmp_path)
    assert r.returncode == 2
    _one_error_line(r.stderr, "profile 'home' exists")
    assert path.read_text() == before


def test_profile_outbox_keeps_a_queued_statement(tmp_path: Path) -> None:
    """A field team's profile names its outbox: a statement signed with --queue (no link
    needed) is kept there, and `outbox list` reads the same file."""
    config = _config(
        '[profiles.field]\nserver = "127.0.0.1:9"\nkey = "arm.key"\noutbox = "field/outbox.db"\n'
    )
    keys.write_private(config.parent / "arm.key", keys.generate(), party="ARM")
    r = cli_runner.run("--profile", "field", "retract", "1", "--queue", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (config.parent / "field" / "outbox.db").exists()
    r = cli_runner.run("--profile", "field", "outbox", "list", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "IncidentRetraction" in r.stdout
    # Without the profile, the default outbox holds nothing.
    r = cli_runner.run("outbox", "list", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "IncidentRetraction" not in r.stdout
