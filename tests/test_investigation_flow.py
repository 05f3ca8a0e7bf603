"""The guided investigation: a request and terms from YAML files, `--party` from the keys,
and `ceasefire investigation next` naming who acts and the command to run, step by step,
until the incidents are jointly confirmed. Commands run in-process (tests.cli_runner)
against a real `ceasefire serve`."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli_runner
from tests.test_cli import EXAMPLES, Server
from tests.test_cli_investigations import write_trust_root_with_investigators

# Name -> (party, role), as each key file says.
KEYS = {
    "log": (None, None),
    "arm-authority-1": ("ARM", "authority"),
    "arm-authority-2": ("ARM", "authority"),
    "arm-authority-3": ("ARM", "authority"),
    "arm-monitor": ("ARM", "monitor"),
    "arm-investigator": ("ARM", "investigator"),
    "aze-authority-1": ("AZE", "authority"),
    "aze-monitor": ("AZE", "monitor"),
    "aze-investigator": ("AZE", "investigator"),
}
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# The same investigation before the guided flow (tests/test_cli_investigations.py, README):
# 14 commands and 75 flags.
BEFORE = (14, 75)


class Ledger:
    """The example ledger (ARM signs with 2 of 3 authority keys, AZE 1 of 1), an investigator
    key per party, both example reports logged; every command counted."""

    def __init__(self, wd: Path, address: str) -> None:
        self.wd, self.env = wd, {"CEASEFIRE_SERVER": address}
        self.commands = self.flags = 0

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = cli_runner.run(*args, cwd=self.wd, env=self.env)
        if check:
            assert result.returncode == 0, f"{args}:\n{result.stdout}{result.stderr}"
            assert "Traceback" not in result.stderr
        return result

    def act(self, command: str) -> subprocess.CompletedProcess[str]:
        """A step of the investigation, as a user types it: counted."""
        args = shlex.split(command)
        assert args[0] == "ceasefire" and not any("<" in a for a in args), command
        self.commands += 1
        self.flags += sum(a.startswith("--") for a in args)
        return self.run(*args[1:])

    def next(self, index: int) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            self.run("investigation", "next", str(index), "--keys", "keys", "--json").stdout
        )
        return doc


@pytest.fixture
def ledger(tmp_path: Path, db_url: str) -> Iterator[Ledger]:
    for name, (party, role) in KEYS.items():
        labels = [a for o, v in (("--party", party), ("--role", role)) if v for a in (o, v)]
        made = cli_runner.run(
            "keygen", name, "--dir", "keys", "--no-passphrase", *labels, cwd=tmp_path
        )
        assert made.returncode == 0, made.stderr
    for name in ("incident-arm.yaml", "incident-aze.json"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    write_trust_root_with_investigators(tmp_path)
    founders = ("arm-authority-1", "arm-authority-2", "aze-authority-1")
    init = ["init", "--db", db_url, "--trust-root", "trust-root.yaml"]
    init += ["--log-key", "keys/log.key"]
    init += [a for f in founders for a in ("--sign-with", f"keys/{f}.key")]
    initialised = cli_runner.run(*init, cwd=tmp_path)
    assert initialised.returncode == 0, initialised.stderr
    server = Server(tmp_path, db_url)
    server.start()
    try:
        ledger = Ledger(tmp_path, server.address)
        ledger.run("submit", "--key", "keys/arm-monitor.key", "incident-arm.yaml")
        ledger.run("submit", "--key", "keys/aze-monitor.key", "incident-aze.json")
        yield ledger
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def terms_file(wd: Path) -> Path:
    """docs/examples/investigation-terms.yaml as written, its members this ledger's keys."""
    text = (EXAMPLES / "investigation-terms.yaml").read_text()
    assert text.count("var/ledger/keys/") == 2
    (wd / "terms.yaml").write_text(text.replace("var/ledger/keys/", "keys/"))
    return wd / "terms.yaml"


def only_step(ahead: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [s for s in ahead["steps"] if not s["optional"]]
    assert len(steps) == 1, steps
    return steps[0]


def test_an_investigation_guided_to_a_joint_finding(ledger: Ledger) -> None:
    shutil.copy(EXAMPLES / "investigation-request.yaml", ledger.wd / "request.yaml")
    requested = ledger.act(
        "ceasefire investigation request request.yaml --key keys/arm-authority-1.key"
    )
    assert requested.stdout.startswith("entry 3: investigation of incidents 1, 2 requested by ARM")

    # The respondent answers: AZE's authority, with the key file found in keys/.
    ahead = ledger.next(3)
    assert (ahead["status"], ahead["done"]) == ("requested", False)
    assert ahead["summary"].startswith("AZE to answer by ")
    step = only_step(ahead)
    assert (step["party"], step["role"]) == ("AZE", "authority")
    assert step["command"] == (
        "ceasefire investigation answer 3 --accept --key keys/aze-authority-1.key"
    )
    assert "entry 4: AZE accepts investigation 3" in ledger.act(step["command"]).stdout

    # The terms: ARM's threshold (2 keys) signs, AZE's authority co-signs, anyone sends.
    ahead = ledger.next(3)
    assert ahead["status"] == "accepted"
    assert [(s["party"], s["role"], s["command"]) for s in ahead["steps"]] == [
        (
            "ARM",
            "authority",
            "ceasefire investigation terms 3 terms.yaml --key keys/arm-authority-1.key "
            "--key keys/arm-authority-2.key --out terms.json",
        ),
        ("AZE", "authority", "ceasefire cosign terms.json --key keys/aze-authority-1.key"),
        (None, None, "ceasefire submit terms.json"),
    ]
    terms_file(ledger.wd)
    drafted = ledger.act(ahead["steps"][0]["command"])
    assert "wrote terms.json with 2 signature(s)" in drafted.stdout
    cosigned = ledger.act(ahead["steps"][1]["command"])
    assert "now 3 signature(s)" in cosigned.stdout and "Berd post" in cosigned.stderr
    assert "entry 5" in ledger.act(ahead["steps"][2]["command"]).stdout

    # Under way: a member may log a visit, and drafts the finding.
    ahead = ledger.next(3)
    assert ahead["status"] == "under_way"
    assert ahead["summary"] == "awaiting a finding on incidents 1, 2"
    visit, finding = ahead["steps"]
    assert (visit["optional"], visit["party"], visit["role"]) == (True, "ARM", "member")
    assert visit["command"] == (
        "ceasefire investigation visit 3 --site <Berd post|Gazakh> --started <TIME> "
        "--outcome <completed|partial|access-denied|postponed> --key keys/arm-investigator.key"
    )
    visited = ledger.act(
        "ceasefire investigation visit 3 --site 'Berd post' --started now "
        "--outcome completed --key keys/arm-investigator.key"
    )
    assert "entry 6: visit to Berd post (completed) in investigation 3" in visited.stdout
    assert finding["command"] == (
        "ceasefire investigation finding 3 --outcome <confirmed|not_confirmed|inconclusive> "
        "--key keys/arm-investigator.key"
    )
    outcomes = "<confirmed|not_confirmed|inconclusive>"
    drafted = ledger.act(finding["command"].replace(outcomes, "confirmed"))
    assert drafted.stdout.startswith(
        "entry 7: finding of investigation 3 on incidents 1, 2: confirmed (policy joint)"
    )

    # Both parties' authorities attest it, each with its own threshold of keys.
    ahead = ledger.next(3)
    assert ahead["summary"] == "awaiting ARM on finding 7; AZE on finding 7"
    assert [(s["party"], s["role"], s["command"]) for s in ahead["steps"]] == [
        (
            "ARM",
            "authority",
            "ceasefire attest 7 --key keys/arm-authority-1.key --key keys/arm-authority-2.key",
        ),
        ("AZE", "authority", "ceasefire attest 7 --key keys/aze-authority-1.key"),
    ]
    assert "entry 8" in ledger.act(ahead["steps"][0]["command"]).stdout
    ahead = ledger.next(3)
    assert [s["party"] for s in ahead["steps"]] == ["AZE"]
    assert "entry 9" in ledger.act(ahead["steps"][0]["command"]).stdout

    ahead = ledger.next(3)
    assert (ahead["status"], ahead["done"], ahead["steps"]) == ("concluded", True, [])
    shown = ledger.run("investigation", "show", "3").stdout
    assert shown.startswith("investigation 3: concluded")
    assert shown.rstrip().endswith(
        "next: nothing more: every incident has a jointly attested finding"
    )
    timeline = json.loads(ledger.run("timeline", "--json").stdout)
    assert [(r["index"], r["status"]) for r in timeline] == [
        (1, "jointly_confirmed"),
        (2, "jointly_confirmed"),
    ]
    # Far fewer than before: 9 commands, 16 flags (no --party, no --server: the keys and
    # CEASEFIRE_SERVER say them), against 14 and 75.
    assert (ledger.commands, ledger.flags) == (9, 16)
    assert ledger.commands < BEFORE[0] and ledger.flags * 4 < BEFORE[1]


@SQLITE_ONLY
def test_next_without_key_files_names_party_role_and_placeholders(ledger: Ledger) -> None:
    ledger.act(
        "ceasefire investigation request --incident 1 --respondent AZE --answer-within 24 "
        "--key keys/arm-authority-1.key"
    )
    text = ledger.run("investigation", "next", "3").stdout
    assert text.startswith("investigation 3: requested  (log clock ")
    assert re.search(r"^next: AZE to answer by \S+Z \(log's clock\)$", text, re.M), text
    assert (
        "  AZE authority:\n"
        "    ceasefire investigation answer 3 --accept --key <AZE authority key>\n"
    ) in text
    ledger.act("ceasefire investigation answer 3 --decline --key keys/aze-authority-1.key")
    ahead = ledger.next(3)
    assert (ahead["status"], ahead["done"]) == ("declined", True)
    assert ahead["summary"] == "nothing more: declined by AZE; a new request may follow"
    shown = json.loads(ledger.run("investigation", "show", "3", "--json").stdout)
    assert shown["next"] == ahead


@SQLITE_ONLY
def test_a_misspelt_terms_file_is_refused_naming_the_field_and_nothing_is_sent(
    ledger: Ledger,
) -> None:
    shutil.copy(EXAMPLES / "investigation-request.yaml", ledger.wd / "request.yaml")
    ledger.act("ceasefire investigation request request.yaml --key keys/arm-authority-1.key")
    ledger.act("ceasefire investigation answer 3 --accept --key keys/aze-authority-1.key")
    all_keys = " ".join(
        f"--key keys/{k}.key" for k in ("arm-authority-1", "arm-authority-2", "aze-authority-1")
    )
    terms = f"investigation terms 3 terms.yaml {all_keys}"

    def refused(text: str, message: str) -> None:
        assert text != good
        (ledger.wd / "terms.yaml").write_text(text)
        result = ledger.run(*shlex.split(terms), check=False)
        assert (result.returncode, result.stderr) == (1, f"error: terms.yaml: {message}\n")
        assert result.stdout == ""

    good = terms_file(ledger.wd).read_text()
    refused(
        good.replace("Gazakh: {lat: 41.0933, lon:", "Gazakh: {lat: 41.0933, lon_:"),
        "sites['Gazakh']: unknown key 'lon_' (did you mean 'lon'?)",
    )
    listed = (
        "members: [keys/arm-investigator.pub]\n"
        "sites:\n  - {name: Berd post, lat: 40.8811, lon_: 45.3875, radius_m: 800}\n"
        "outcomes: [confirmed]\npublication: open\n"
    )
    refused(listed, "sites[0]: unknown key 'lon_' (did you mean 'lon'?)")
    refused(
        good.replace("outcomes:", "outcome:"), "unknown key 'outcome' (did you mean 'outcomes'?)"
    )
    refused(
        good.replace("[confirmed, not_confirmed", "[confirmed, not-confirmed, maybe"),
        "outcomes[2]: must be one of confirmed, not_confirmed, inconclusive",
    )
    refused(
        good.replace("radius_m: 800", "radius_m: far"),
        "sites['Berd post'].radius_m: must be a number",
    )
    missing = ledger.run("investigation", "terms", "3", *shlex.split(all_keys), check=False)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith(
        "error: give --member, --site, --outcome, --publication, or write them in a terms file"
    )

    ahead = ledger.next(3)  # nothing was sent: still waiting for the terms
    assert ahead["status"] == "accepted"
    shown = json.loads(ledger.run("investigation", "show", "3", "--json").stdout)
    assert [e["relation"] for e in shown["entries"]] == ["request", "response"]
    # Fixed, the same command goes through.
    (ledger.wd / "terms.yaml").write_text(good)
    sent = ledger.run(*shlex.split(terms))
    assert "entry 5: terms of investigation 3" in sent.stdout
