"""The conventions every `ceasefire` command keeps (docs/cli.md): --json on every command;
--party taken from the keys; an error is one line on stderr, never a traceback (a closed
pipe, a missing file, a busy port, an unexpected error); verify's result on stdout; the
fields of a file named as the docs spell them."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clients.cli import build_parser
from ledger import keys
from tests import cli_runner
from tests.conftest import RunningLedger

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
ROOT = Path(__file__).parent.parent

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# Commands without --json, and why.
NO_JSON = {
    "serve": "a server: its output is a log",
    "witness serve": "a server: its output is a log",
    "demo": "a guided tour for people, printing other commands' output",
}


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command a user can run: the parsers without subcommands, and those whose
    subcommands are optional (`monitor`, `monitor check-split`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path and (not subs or not all(a.required for a in subs)):
        yield " ".join(path), parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_command_has_json() -> None:
    leaves = dict(_leaves(build_parser()))
    assert {"submit", "verify", "retract", "evidence add", "profile list"} <= set(leaves)
    missing = sorted(
        name
        for name, parser in leaves.items()
        if name not in NO_JSON and not any("--json" in a.option_strings for a in parser._actions)
    )
    assert missing == [], f"commands without --json: {missing}"
    assert set(NO_JSON) <= set(leaves), "an exception names a command that no longer exists"


# -- --party from the key ----------------------------------------------------------------


@pytest.fixture
def reported(running: RunningLedger, tmp_path: Path) -> RunningLedger:
    """Entry 1: the example ARM report, signed by ARM's monitor."""
    key = tmp_path / "submitter.key"
    keys.write_private(key, running.parties.arm_monitor)
    r = cli_runner.run(
        "submit", "--server", running.address, "--key", str(key),
        str(EXAMPLES / "incident-arm.yaml"), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return running


@sqlite_only
def test_party_from_the_keys(reported: RunningLedger, tmp_path: Path) -> None:
    arm = tmp_path / "arm.key"
    aze = tmp_path / "aze.key"
    nobody = tmp_path / "nobody.key"
    # An answer is an authority's word; a retraction may be anyone's of the reporting party.
    keys.write_private(arm, reported.parties.arm_authority, party="ARM", role="authority")
    keys.write_private(aze, reported.parties.aze_authority, party="AZE", role="authority")
    keys.write_private(nobody, reported.parties.aze_authority)
    server = ("--server", reported.address)

    # Keys of two parties: which one speaks is not for the program to guess.
    r = cli_runner.run("answer", "1", "--kind", "denial", "--key", str(arm), "--key", str(aze),
                       *server, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == "error: give --party: the keys are of ARM and AZE\n"
    # A key that names no party.
    r = cli_runner.run("answer", "1", "--kind", "denial", "--key", str(nobody), *server,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == "error: give --party: the keys name no party\n"
    assert reported.client.checkpoint().tree_size == 2  # nothing was signed

    # The key names AZE: AZE answers.
    r = cli_runner.run("answer", "1", "--kind", "denial", "--key", str(aze), *server,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # --party still wins: the same key cannot speak for ARM (refused by the ledger).
    r = cli_runner.run("answer", "1", "--kind", "denial", "--key", str(aze), "--party", "ARM",
                       *server, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1
    assert "cannot speak for ARM" in r.stderr
    # ARM's key retracts ARM's report without --party.
    r = cli_runner.run("retract", "1", "--key", str(arm), *server, cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    r = cli_runner.run("dossier", "1", "--json", *server, cwd=tmp_path)
    entries = json.loads(r.stdout)["entries"]
    said = [(e["relation"], e["statement"]["party"]) for e in entries[1:]]
    assert said == [("counter_claim", "AZE"), ("retraction", "ARM")], said


# -- no tracebacks -----------------------------------------------------------------------


@sqlite_only
def test_a_closed_pipe_ends_quietly(reported: RunningLedger, tmp_path: Path) -> None:
    """`ceasefire dossier 1 | head -0`: the reader is gone before the first line is written.
    A real process, for the broken pipe is the process's own stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "dossier", "1", "--server", reported.address],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `head` does when it has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell shows a closed pipe
    assert err == "", err


@sqlite_only
def test_a_pipe_closed_after_one_line(reported: RunningLedger, tmp_path: Path) -> None:
    """`ceasefire timeline --json | head -1`, over more output than a pipe holds."""
    doc = yaml.safe_load((EXAMPLES / "incident-arm.yaml").read_text())
    many = [{**doc, "narrative": f"report {i}: " + "x" * 2000} for i in range(40)]
    (tmp_path / "many.yaml").write_text(yaml.safe_dump(many))
    key = tmp_path / "arm.key"
    keys.write_private(key, reported.parties.arm_monitor, party="ARM")
    r = cli_runner.run("submit", "--server", reported.address, "--key", str(key), "many.yaml",
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "timeline", "--json", "--server", reported.address],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"["
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == "", err


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    key = tmp_path / "arm.key"
    keys.write_private(key, keys.generate(), party="ARM")
    for args, name in (
        (("evidence", "add", "crater.jpg", "--incident", "1", "--key", str(key)), "crater.jpg"),
        (("amend", "1", "corrected.yaml", "--key", str(key)), "corrected.yaml"),
        (("submit", "--key", str(key), "nothere.yaml"), "nothere.yaml"),
        (("retract", "1", "--key", "missing.key"), "missing.key"),
        (("verify", "--bundle", "nothere.zip"), "nothere.zip"),
    ):
        r = cli_runner.run(*args, "--server", "127.0.0.1:9", cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith(f"error: {name}") and r.stderr.count("\n") == 1, r.stderr
        assert "No such file" in r.stderr or "no such" in r.stderr, r.stderr
    r = cli_runner.run("init", "--trust-root", "root.yaml", "--log-key", str(key), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == "error: root.yaml: No such file or directory\n"
    (tmp_path / "adir.yaml").mkdir()
    r = cli_runner.run("submit", "--key", str(key), "adir.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == "error: adir.yaml: Is a directory\n", r.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        r = cli_runner.run("serve", "--listen", address, "--data-dir", "var", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: {address} is in use (another ceasefire serve?): choose --listen HOST:PORT\n"
    )
    assert not (tmp_path / "var").exists()  # refused before anything was created


def test_an_unexpected_error_is_one_line_unless_debugging(tmp_path: Path) -> None:
    """An error no command foresees (here: a database URL of an unknown kind, which SQLAlchemy
    refuses in its own way) is one line and exit 1; CEASEFIRE_DEBUG=1 adds the traceback."""
    keys.write_private(tmp_path / "log.key", keys.generate())
    args = ("serve", "--db", "bogus+x://", "--log-key", "log.key", "--listen", "127.0.0.1:0")
    r = cli_runner.run(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("error: internal error: NoSuchModuleError: "), r.stderr
    assert r.stderr.endswith("(run with CEASEFIRE_DEBUG=1 for the traceback)\n")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = cli_runner.run(*args, cwd=tmp_path, env={"CEASEFIRE_DEBUG": "1"})
    assert r.returncode == 1
    assert r.stderr.startswith("Traceback (most recent call last):"), r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: internal error: NoSuchModuleError")


def test_ctrl_c_is_130(tmp_path: Path) -> None:
    """Ctrl-C while a command waits for its input (a report read from a pipe that stays
    open): exit 130, nothing on stderr."""
    keys.write_private(tmp_path / "k.key", keys.generate())
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys, threading\n"
         "from clients.cli import main\n"
         "threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
         "sys.exit(main(['submit', '--key', 'k.key', '--server', '127.0.0.1:9', '/dev/stdin']))"],
        cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    try:
        code = proc.wait(timeout=60)  # stdin stays open: the read waits for Ctrl-C
    finally:
        proc.kill()
        proc.stdin.close()
    err = proc.stderr.read()
    assert code == 130, err
    assert err == "", err


# -- fields as the docs spell them ---------------------------------------------------------


def test_report_and_trust_root_errors_name_snake_case_fields(tmp_path: Path) -> None:
    key = tmp_path / "arm.key"
    keys.write_private(key, keys.generate(), party="ARM")
    doc = yaml.safe_load((EXAMPLES / "incident-arm.yaml").read_text())
    doc["location"]["uncertaintyM"] = doc["location"].pop("uncertainty_m") and "far"
    doc["window"]["start"] = "yesterday"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(doc))
    r = cli_runner.run("submit", "--key", str(key), "r.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert "location.uncertainty_m: " in r.stderr, r.stderr
    assert "uncertaintyM" not in r.stderr
    doc["location"]["uncertainty_m"] = doc["location"].pop("uncertaintyM") and 750
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(doc))
    r = cli_runner.run("submit", "--key", str(key), "r.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "window.start: " in r.stderr, r.stderr

    shutil.copy(EXAMPLES / "trust-root.yaml", tmp_path / "trust-root.yaml")
    root = yaml.safe_load((tmp_path / "trust-root.yaml").read_text())
    root["parties"][0]["authorityThreshold"] = root["parties"][0].pop("authority_threshold")
    (tmp_path / "trust-root.yaml").write_text(yaml.safe_dump(root))
    keys.write_public(tmp_path / "log.pub", keys.public_bytes(keys.generate()))
    r = cli_runner.run("trust-root", "trust-root.yaml", "--log-public-key", "log.pub",
                       "--key", str(key), "--out", "tr.json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "parties[0]: unknown key 'authorityThreshold'" in r.stderr, r.stderr
    assert "did you mean 'authority_threshold'" in r.stderr, r.stderr


# -- verify: its result on stdout --------------------------------------------------------


@sqlite_only
def test_verify_result_on_stdout(running: RunningLedger, tmp_path: Path) -> None:
    r = cli_runner.run("verify", "--server", running.address, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: 1 entries")
    assert "note: trust root" in r.stdout
    assert "OK" not in r.stderr
    r = cli_runner.run("verify", "--server", running.address, "--trust-root", "ab" * 32,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 3
    assert r.stdout.startswith("VERIFICATION FAILED: "), (r.stdout, r.stderr)
    assert r.stderr == ""
    r = cli_runner.run("verify", "--server", running.address, "--trust-root", "ab" * 32,
                       "--json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["exit"] == 3 and "trust root" in doc["error"]
    # Not reached: nothing verified, the error on stderr (and --json still one document).
    r = cli_runner.run("verify", "--server", "127.0.0.1:9", "--json", cwd=tmp_path)
    assert r.returncode == 4
    assert json.loads(r.stdout)["ok"] is False
    assert r.stderr.splitlines()[-1].startswith("error: UNAVAILABLE")  # after the retries


# -- progress: on stderr, on a terminal or with --progress ---------------------------------


@sqlite_only
def test_progress_only_when_asked_or_on_a_terminal(running: RunningLedger, tmp_path: Path) -> None:
    s = ("--server", running.address)
    r = cli_runner.run("export", "--out", "b.jsonl", *s, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # stderr is not a terminal here
    assert json.loads(r.stdout)["tree_size"] == 1
    r = cli_runner.run("export", "--out", "b.jsonl", *s, "--json", "--progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "exported 1 entries in" in r.stderr
    assert json.loads(r.stdout)["out"] == "b.jsonl"  # stdout stays one document
    r = cli_runner.run("verify", *s, "--progress", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the root rebuilt from all 1 leaves matches" in r.stderr
    assert json.loads(r.stdout)["ok"] is True
    r = cli_runner.run("verify", "--bundle", "b.jsonl", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # The folder of --out is checked before the log is read.
    r = cli_runner.run("export", "--out", "no/such/b.jsonl", *s, cwd=tmp_path)
    assert (
        r.returncode == 2 and r.stderr == "error: --out no/such/b.jsonl: no such folder no/such\n"
    )
