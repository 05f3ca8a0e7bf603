"""`ceasefire investigation | notice | hotline` as a user runs them, against a real gRPC server
on loopback. The commands run in the test's process (tests.cli_runner), and so does the server
(what `serve` runs, without a process to start per test: `serve` as a process is tested in
tests/test_cli.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from clients.cli import main
from geo.borders import BorderDataset
from tests.test_cli import EXAMPLES, ceasefire, serving

KEYS = (
    "log",
    "arm-authority-1",
    "arm-authority-2",
    "arm-authority-3",
    "arm-monitor",
    "arm-investigator",
    "aze-authority-1",
    "aze-monitor",
    "aze-investigator",
)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def key_id(wd: Path, name: str) -> str:
    return str(json.loads((wd / "keys" / f"{name}.pub").read_text())["key_id"])


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def refused(result: subprocess.CompletedProcess[str], code: str, text: str) -> None:
    """A refusal as the user sees it: exit 1, one clear line, no stack trace."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {code}: " in result.stderr and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def write_trust_root_with_investigators(folder: Path) -> None:
    """FOLDER/trust-root.yaml: the example trust root with an investigator key per party
    (keys/<party>-investigator.pub)."""
    root = yaml.safe_load((EXAMPLES / "trust-root.yaml").read_text())
    for party in root["parties"]:
        code = party["code"].lower()
        party["keys"].append(
            {"role": "investigator", "public_key_file": f"keys/{code}-investigator.pub"}
        )
    (folder / "trust-root.yaml").write_text(yaml.safe_dump(root))


@pytest.fixture
def ledger(
    tmp_path: Path, db_url: str, borders: BorderDataset
) -> Iterator[tuple[Path, tuple[str, str]]]:
    """The example ledger (ARM needs 2 of 3 authority keys, AZE 1 of 1), with an
    investigator key for each party, founded by `ceasefire init` and served on loopback."""
    for name in KEYS:
        assert main(["keygen", name, "--dir", str(tmp_path / "keys"), "--no-passphrase"]) == 0
    for name in ("incident-arm.yaml", "incident-aze.json"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    write_trust_root_with_investigators(tmp_path)
    k = tmp_path / "keys"
    founders = ("arm-authority-1", "arm-authority-2", "aze-authority-1")
    init = ["init", "--db", db_url, "--trust-root", str(tmp_path / "trust-root.yaml")]
    init += ["--log-key", str(k / "log.key")]
    init += [a for f in founders for a in ("--sign-with", str(k / f"{f}.key"))]
    assert main(init) == 0
    with serving(tmp_path, db_url, borders) as address:
        yield tmp_path, ("--server", address)


def test_an_investigation_a_notice_and_the_hotline(
    ledger: tuple[Path, tuple[str, str]],
) -> None:
    wd, s = ledger
    arm_member, aze_member = key_id(wd, "arm-investigator"), key_id(wd, "aze-investigator")
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    ceasefire("submit", *s, "--key", "keys/aze-monitor.key", "incident-aze.json", cwd=wd)

    requested = ceasefire(
        "investigation", "request", *s, "--party", "ARM", "--incident", "1", "--incident", "2",
        "--respondent", "AZE", "--answer-within", "72", "--scope", "Both nights' fire.",
        "--key", "keys/arm-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert requested.stdout.startswith("entry 3: investigation of incidents 1, 2")
    shown = json.loads(ceasefire("investigation", "show", "3", *s, "--json", cwd=wd).stdout)
    assert (shown["status"], shown["awaiting"], shown["terms_index"]) == (
        "requested",
        ["AZE"],
        None,
    )
    answered = ceasefire(
        "investigation", "answer", "3", *s, "--party", "AZE", "--accept",
        "--reason", "We want it looked into.", "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert "entry 4: AZE accepts investigation 3" in answered.stdout

    # ARM's two authorities draft and sign the terms; AZE's authority co-signs; then sent.
    drafted = ceasefire(
        "investigation", "terms", "3", *s, "--member", "keys/arm-investigator.pub",
        "--member", aze_member, "--site", "Berd post=40.8811,45.3875,1500",
        "--site", "Gazakh=41.0933,45.3661,2000", "--procedure", "Two members of each side.",
        "--outcome", "confirmed", "--outcome", "not_confirmed", "--outcome", "inconclusive",
        "--publication", "sealed-until-finding", "--key", "keys/arm-authority-1.key",
        "--key", "keys/arm-authority-2.key", "--out", "terms.json", cwd=wd,
    )  # fmt: skip
    assert "wrote terms.json with 2 signature(s)" in drafted.stdout
    cosigned = ceasefire("cosign", "terms.json", "--key", "keys/aze-authority-1.key", cwd=wd)
    assert "now 3 signature(s)" in cosigned.stdout and "Gazakh" in cosigned.stderr
    assert "entry 5" in ceasefire("submit", *s, "terms.json", cwd=wd).stdout

    visited = ceasefire(
        "investigation", "visit", "3", *s, "--party", "ARM", "--site", "Gazakh",
        "--started", iso(timedelta(minutes=-4)), "--ended", iso(timedelta(minutes=-2)),
        "--outcome", "access-denied", "--denied-by", "AZE",
        "--present", "keys/arm-investigator.pub", "--notes", "Turned back at the checkpoint.",
        "--key", "keys/arm-investigator.key", cwd=wd,
    )  # fmt: skip
    assert "entry 6: visit to Gazakh (access-denied) in investigation 3" in visited.stdout
    (wd / "fragment.jpg").write_bytes(b"\xff\xd8 fragment \xff\xd9")
    plain = ceasefire(
        "evidence", "add", "fragment.jpg", *s, "--party", "ARM", "--incident", "1",
        "--investigation", "3", "--blob", "plain", "--key", "keys/arm-investigator.key",
        cwd=wd, check=False,
    )  # fmt: skip
    refused(plain, "FAILED_PRECONDITION", "sealed to its members until the finding")
    sealed = ceasefire(
        "evidence", "add", "fragment.jpg", *s, "--party", "ARM", "--incident", "1",
        "--investigation", "3", "--blob", "sealed", "--key", "keys/arm-investigator.key",
        cwd=wd,
    )  # fmt: skip
    assert "entry 7: evidence" in sealed.stdout
    found = ceasefire(
        "finding", "draft", *s, "--incident", "1", "--party", "ARM", "--policy", "joint",
        "--outcome", "inconclusive", "--investigation", "3", "--reasoning", "No access.",
        "--key", "keys/arm-investigator.key", cwd=wd,
    )  # fmt: skip
    assert "entry 8: FindingDraft" in found.stdout

    shown = json.loads(ceasefire("investigation", "show", "3", *s, "--json", cwd=wd).stdout)
    assert (shown["status"], shown["awaiting"], shown["terms_index"]) == ("under_way", [], 5)
    assert shown["members"] == sorted([arm_member, aze_member])
    assert [(e["index"], e["relation"]) for e in shown["entries"]] == [
        (3, "request"),
        (4, "response"),
        (5, "terms"),
        (6, "visit"),
        (7, "evidence"),
        (8, "finding"),
    ]
    visit = shown["entries"][3]["statement"]
    assert (visit["site"], visit["outcome"], visit["denied_by"]) == (
        "Gazakh",
        "VISIT_OUTCOME_ACCESS_DENIED",
        "AZE",
    )
    assert visit["members_present"] == [arm_member]
    evidence = shown["entries"][4]["statement"]
    assert evidence["investigation_index"] == "3"  # uint64 as JSON text
    assert evidence["sealed_to_key_ids"] == shown["members"]  # sealed to the members
    assert shown["entries"][5]["statement"]["investigation_index"] == "3"
    text = ceasefire("investigation", "show", "3", *s, cwd=wd).stdout
    assert text.startswith("investigation 3: under_way")
    assert "visit     ARM  Gazakh: access_denied by AZE" in text

    noticed = ceasefire(
        "notice", *s, "--party", "AZE", "--activity", "demining",
        "--start", iso(timedelta(hours=1)), "--end", iso(timedelta(hours=7)),
        "--point", "41.0933,45.3661", "--radius-m", "1500",
        "--description", "Controlled detonations west of Gazakh.",
        "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert "entry 9: demining notice by AZE" in noticed.stdout
    unacked = ceasefire("hotline", "list", *s, "--to", "ARM", "--unacknowledged", "--json", cwd=wd)
    rows = json.loads(unacked.stdout)
    assert [(r["index"], r["kind"], r["party"], r["activity"]) for r in rows] == [
        (9, "notice", "AZE", "demining")
    ]
    assert rows[0]["acknowledged_by"] == {}
    acked = ceasefire(
        "hotline", "ack", "9", *s, "--party", "ARM", "--key", "keys/arm-monitor.key", cwd=wd
    )
    assert "entry 10: ARM acknowledges entry 9" in acked.stdout
    unacked = ceasefire("hotline", "list", *s, "--to", "ARM", "--unacknowledged", "--json", cwd=wd)
    assert json.loads(unacked.stdout) == []

    sent = ceasefire(
        "hotline", "send", *s, "--party", "ARM", "--to", "AZE", "--urgent",
        "--text", "Explosions heard west of Gazakh: your demining?", "--reply-to", "9",
        "--key", "keys/arm-monitor.key", cwd=wd,
    )  # fmt: skip
    assert "entry 11: urgent message from ARM to AZE" in sent.stdout
    to_aze = json.loads(
        ceasefire("hotline", "list", *s, "--to", "AZE", "--unacknowledged", "--json", cwd=wd).stdout
    )
    assert [r["index"] for r in to_aze] == [11]
    ceasefire("hotline", "ack", "11", *s, "--party", "AZE", "--key", "keys/aze-monitor.key", cwd=wd)
    rows = json.loads(ceasefire("hotline", "list", *s, "--json", cwd=wd).stdout)
    assert [
        (r["index"], r["kind"], r["to_party"], r["acknowledged_by"], r["replies"]) for r in rows
    ] == [(9, "notice", None, {"ARM": 10}, [11]), (11, "hotline", "AZE", {"AZE": 12}, [])]
    assert (rows[1]["urgency"], rows[1]["in_reply_to"]) == ("urgent", 9)
    listing = ceasefire("hotline", "list", *s, "--start", "10", cwd=wd).stdout
    assert "#11" in listing and "#9 " not in listing and "acknowledged by AZE (#12)" in listing

    verified = json.loads(ceasefire("verify", *s, "--json", cwd=wd).stdout)
    assert verified["ok"] and verified["tree_size"] == 13
    assert verified["statuses"] == {
        "incidents": {"under_investigation": 2},
        "investigations": {"under_way": 1},
        "findings": {"drafted": 1},
    }
    timeline = json.loads(ceasefire("timeline", *s, "--json", cwd=wd).stdout)
    assert [(r["index"], r["status"]) for r in timeline] == [
        (1, "under_investigation"),
        (2, "under_investigation"),
    ]


@SQLITE_ONLY
def test_the_requester_neither_answers_nor_agrees_terms_alone(
    ledger: tuple[Path, tuple[str, str]],
) -> None:
    wd, s = ledger
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    ceasefire(
        "investigation", "request", *s, "--party", "ARM", "--incident", "1",
        "--respondent", "AZE", "--answer-by", iso(timedelta(days=2)),
        "--key", "keys/arm-authority-1.key", cwd=wd,
    )  # fmt: skip
    own = ceasefire(
        "investigation", "answer", "2", *s, "--party", "ARM", "--accept",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-2.key", cwd=wd,
        check=False,
    )  # fmt: skip
    refused(own, "PERMISSION_DENIED", "ARM is not asked to answer investigation 2")
    early = ceasefire(
        "investigation", "terms", "2", *s, "--member", "keys/arm-investigator.key",
        "--site", "Berd=40.8811,45.3875,500", "--outcome", "confirmed", "--publication", "open",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-2.key",
        "--key", "keys/aze-authority-1.key", cwd=wd, check=False,
    )  # fmt: skip
    refused(early, "FAILED_PRECONDITION", "not accepted by every respondent (awaiting AZE")
    shown = json.loads(ceasefire("investigation", "show", "2", *s, "--json", cwd=wd).stdout)
    assert (shown["status"], shown["awaiting"]) == ("requested", ["AZE"])
    assert [e["relation"] for e in shown["entries"]] == ["request"]


@SQLITE_ONLY
def test_a_visit_is_logged_by_members_only(ledger: tuple[Path, tuple[str, str]]) -> None:
    wd, s = ledger
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    ceasefire(
        "investigation", "request", *s, "--party", "ARM", "--incident", "1",
        "--respondent", "AZE", "--answer-within", "24", "--key", "keys/arm-authority-1.key",
        cwd=wd,
    )  # fmt: skip
    ceasefire(
        "investigation", "answer", "2", *s, "--party", "AZE", "--accept",
        "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    # Every party's threshold on one machine: the terms go straight to the ledger.
    terms = ceasefire(
        "investigation", "terms", "2", *s, "--member", key_id(wd, "arm-investigator"),
        "--site", "Berd post=40.8811,45.3875,1500", "--outcome", "confirmed",
        "--outcome", "not_confirmed", "--publication", "open",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-2.key",
        "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert "entry 4: terms of investigation 2" in terms.stdout

    def visit(site: str, key: str) -> subprocess.CompletedProcess[str]:
        return ceasefire(
            "investigation", "visit", "2", *s, "--party", "ARM", "--site", site,
            "--started", iso(timedelta(minutes=-4)), "--ended", iso(timedelta(minutes=-2)),
            "--outcome", "completed", "--key", f"keys/{key}.key", cwd=wd, check=False,
        )  # fmt: skip

    refused(
        visit("Berd post", "arm-monitor"),
        "PERMISSION_DENIED",
        "is not a member of the investigation (terms at index 4)",
    )
    refused(visit("Gazakh", "arm-investigator"), "INVALID_ARGUMENT", "not a site of the terms")
    shown = json.loads(ceasefire("investigation", "show", "2", *s, "--json", cwd=wd).stdout)
    assert (shown["status"], shown["terms_index"]) == ("under_way", 4)
    assert [e["relation"] for e in shown["entries"]] == ["request", "response", "terms"]
    logged = visit("Berd post", "arm-investigator")
    assert "entry 5: visit to Berd post (completed)" in logged.stdout


@SQLITE_ONLY
def test_acknowledgements_and_malformed_arguments(ledger: tuple[Path, tuple[str, str]]) -> None:
    wd, s = ledger
    (wd / "area.txt").write_text("# demining area\n41.09,45.36\n41.10,45.37\n41.09,45.38\n")
    ceasefire(
        "notice", *s, "--party", "AZE", "--activity", "engineering-works",
        "--start", iso(timedelta(hours=-1)), "--end", iso(timedelta(days=3)),
        "--polygon", "area.txt", "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    own = ceasefire(
        "hotline", "ack", "1", *s, "--party", "AZE", "--key", "keys/aze-monitor.key",
        cwd=wd, check=False,
    )  # fmt: skip
    refused(own, "PERMISSION_DENIED", "entry 1 is not addressed to AZE")
    ceasefire("hotline", "ack", "1", *s, "--party", "ARM", "--key", "keys/arm-monitor.key", cwd=wd)
    twice = ceasefire(
        "hotline", "ack", "1", *s, "--party", "ARM", "--key", "keys/arm-monitor.key",
        cwd=wd, check=False,
    )  # fmt: skip
    refused(twice, "INVALID_ARGUMENT", "ARM acknowledged it at index 2")
    listing = ceasefire("hotline", "list", *s, cwd=wd).stdout
    assert "AZE to all: engineering-works" in listing and "acknowledged by ARM (#2)" in listing

    # Mistakes caught before anything is signed: usage errors, exit 2.
    site = ceasefire(
        "investigation", "terms", "1", *s, "--member", "x", "--site", "Berd:40.8,45.3",
        "--outcome", "confirmed", "--publication", "open", "--key", "keys/arm-authority-1.key",
        cwd=wd, check=False,
    )  # fmt: skip
    assert site.returncode == 2 and "is not NAME=LAT,LON,RADIUS_M" in site.stderr
    radius = ceasefire(
        "notice", *s, "--party", "AZE", "--activity", "harvest", "--start", iso(timedelta()),
        "--end", iso(timedelta(days=1)), "--point", "41.09,45.36",
        "--key", "keys/aze-authority-1.key", cwd=wd, check=False,
    )  # fmt: skip
    assert radius.returncode == 2 and "error: --point needs --radius-m" in radius.stderr
    assert "Traceback" not in site.stderr + radius.stderr
