"""The `ceasefire` command as a user runs it: a real `serve` process, the example files.

The commands run in the test's process (tests.cli_runner: the same `main`, without a start-up
per call). Real processes: the `serve` servers (Server: it serves until a signal, and the
crash tests SIGKILL it) where the test is about serving (the journey, a crash, the first
run), and test_the_installed_command_as_a_process: the `ceasefire` script the package
installs, its exit codes and one-line errors as a shell sees them. The tests of other
commands use `served`: what `serve` runs, in the test's process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clients.cli import main
from geo.borders import BorderDataset
from ledger import keys
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, read_trust_root
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from tests import cli_runner
from tests.conftest import RunningLedger
from tests.test_borders import shifted_dataset

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def ceasefire(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ceasefire ARGS` in `cwd`, in this process (tests.cli_runner); `check`: it must exit 0."""
    result = cli_runner.run(*args, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"ceasefire {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


class Server:
    def __init__(self, workdir: Path, db_url: str, *extra: str) -> None:
        self.workdir, self.db_url, self.extra = workdir, db_url, extra
        self.log_key = "keys/log.key"
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clients.cli",
                "serve",
                "--db",
                self.db_url,
                "--log-key",
                self.log_key,
                "--listen",
                "127.0.0.1:0",
                *self.extra,
            ],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            # Kept beside the ledger: what a server said before it died.
            stderr=(self.workdir / "serve.log").open("a"),
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        seen = []
        for line in self.proc.stdout:  # first-run messages may come before the address
            seen.append(line)
            if m := re.search(r"^serving .* on (127\.0\.0\.1:\d+);", line):
                self.address = m.group(1)
                return
        raise AssertionError(f"server did not start: {''.join(seen)!r}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


KEYS = (
    "log",
    "arm-authority-1",
    "arm-authority-2",
    "arm-authority-3",
    "arm-monitor",
    "aze-authority-1",
    "aze-monitor",
    "obs-authority",
    "obs-observer",
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in (
        "trust-root.yaml",
        "observer-party.yaml",
        "incident-arm.yaml",
        "incident-aze.json",
    ):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    for name in KEYS:  # in-process: the same code as the command, without the start-up cost
        assert main(["keygen", name, "--dir", str(tmp_path / "keys"), "--no-passphrase"]) == 0
    return tmp_path


def found(workdir: Path, db_url: str) -> str:
    """The example ledger founded across machines: ARM's authorities sign, then AZE's, then
    the operator initialises the database. Returns the trust root's SHA-256."""
    ceasefire(
        "trust-root", "trust-root.yaml", "--log-public-key", "keys/log.pub",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-2.key",
        "--out", "root.json", cwd=workdir,
    )  # fmt: skip
    ceasefire("cosign", "root.json", "--key", "keys/aze-authority-1.key", cwd=workdir)
    out = ceasefire(
        "init", "--db", db_url, "--trust-root", "root.json", "--log-key", "keys/log.key",
        "--json", cwd=workdir,
    )  # fmt: skip
    return str(json.loads(out.stdout)["trust_root_sha256"])


@pytest.fixture
def initialised(workdir: Path, db_url: str) -> Iterator[tuple[Path, Server, str]]:
    """The example ledger served by a real `ceasefire serve` process."""
    digest = found(workdir, db_url)
    server = Server(workdir, db_url)
    server.start()
    try:
        yield workdir, server, digest
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


@contextmanager
def serving(workdir: Path, db_url: str, borders: BorderDataset) -> Iterator[str]:
    """What `serve` runs, in this process, on the ledger `init` made: its address. For the
    tests of commands, which need a server but not a `serve` process to start each time."""
    store = LedgerStore.open(db_url)
    try:
        trust, _ = read_trust_root(store)
        log_key = LogKey(trust.origin, keys.read_private(workdir / "keys/log.key"))
        ledger = Ledger(store, log_key, borders)
        server, port = build_server(ledger, "127.0.0.1:0", spool_dir=workdir / "uploads")
        server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.stop(grace=None).wait()
            ledger.close()
    finally:
        store.close()


@pytest.fixture
def served(workdir: Path, db_url: str, borders: BorderDataset) -> Iterator[tuple[Path, str, str]]:
    """The example ledger served in this process: (folder, address, trust root SHA-256)."""
    digest = found(workdir, db_url)
    with serving(workdir, db_url, borders) as address:
        yield workdir, address, digest


def test_user_journey(initialised: tuple[Path, Server, str]) -> None:
    wd, server, digest = initialised
    s = ("--server", server.address)
    out = ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    assert "entry 1" in out.stdout
    ceasefire("submit", *s, "--key", "keys/aze-monitor.key", "incident-aze.json", cwd=wd)
    refused = ceasefire(
        "submit", *s, "--key", "keys/arm-monitor.key", "incident-aze.json", cwd=wd, check=False
    )
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr and "Traceback" not in refused.stderr

    rows = json.loads(ceasefire("timeline", *s, "--json", cwd=wd).stdout)
    assert [(r["index"], r["party"], r["territory"]) for r in rows] == [
        (1, "ARM", "ARM"),
        (2, "AZE", "AZE"),
    ]
    assert rows[1]["category"] == "mortar_or_artillery"
    only_aze = json.loads(ceasefire("timeline", *s, "--party", "AZE", "--json", cwd=wd).stdout)
    assert [r["index"] for r in only_aze] == [2]
    window = ceasefire(
        "timeline",
        *s,
        "--since",
        "2026-11-21T00:00:00Z",
        "--until",
        "2026-11-22",
        "--json",
        cwd=wd,
    )
    assert [r["index"] for r in json.loads(window.stdout)] == [2]

    entry = json.loads(ceasefire("entry", *s, "1", "--json", cwd=wd).stdout)
    assert entry["statement"]["reporting_party"] == "ARM"
    assert entry["validation"]["geo"]["territory"] == "ARM"
    exported = ceasefire("entry", *s, "1", "--envelope", cwd=wd).stdout
    envelope = dsse.Envelope.from_json(exported.strip().encode())
    assert (
        envelope.signatures[0].keyid
        == json.loads((wd / "keys/arm-monitor.pub").read_text())["key_id"]
    )

    note = ceasefire("checkpoint", *s, cwd=wd).stdout
    assert note.startswith("example.ceasefire-ledger/arm-aze\n3\n")
    assert "\n— example.ceasefire-ledger/arm-aze " in note

    inclusion = json.loads(ceasefire("proof", *s, "inclusion", "--index", "1", cwd=wd).stdout)
    assert inclusion["tree_size"] == 3 and inclusion["verified"]
    consistency = json.loads(ceasefire("proof", *s, "consistency", "--old", "2", cwd=wd).stdout)
    assert (consistency["old_size"], consistency["new_size"]) == (2, 3)
    assert not consistency["verified"]  # no old root to check against
    (wd / "old.note").write_text(note)

    state = str(wd / "checkpoint.state")
    first = json.loads(
        ceasefire("verify", *s, "--trust-root", digest, "--state", state, "--json", cwd=wd).stdout
    )
    assert first["ok"] and first["tree_size"] == 3 and first["geo_facts_recomputed"] == 2
    ceasefire(
        "submit", *s, "--key", "keys/aze-monitor.key", "incident-arm.yaml", cwd=wd, check=False
    )
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    second = json.loads(
        ceasefire("verify", *s, "--trust-root", digest, "--state", state, "--json", cwd=wd).stdout
    )
    assert second["tree_size"] == 4 and second["consistent_with_size"] == 3
    checked = json.loads(
        ceasefire("proof", *s, "consistency", "--old-checkpoint", "old.note", cwd=wd).stdout
    )
    assert (checked["old_size"], checked["new_size"], checked["verified"]) == (3, 4, True)
    assert server.stop() == 0


def test_acknowledged_entries_survive_a_crash(initialised: tuple[Path, Server, str]) -> None:
    wd, server, digest = initialised
    s = ("--server", server.address)
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    ceasefire("submit", *s, "--key", "keys/aze-monitor.key", "incident-aze.json", cwd=wd)
    server.stop(signal.SIGKILL)
    server.start()
    s = ("--server", server.address)
    out = json.loads(ceasefire("verify", *s, "--trust-root", digest, "--json", cwd=wd).stdout)
    assert out["tree_size"] == 3
    again = ceasefire(
        "submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", "--json", cwd=wd
    )
    assert json.loads(again.stdout)[0]["index"] == 3  # a new report (new created_time)


def test_key_lifecycle_with_threshold_signing_across_machines(
    served: tuple[Path, str, str],
) -> None:
    wd, address, digest = served
    s = ("--server", address)
    arm_monitor = json.loads((wd / "keys/arm-monitor.pub").read_text())["key_id"]
    ceasefire("keygen", "arm-monitor-2", "--dir", "keys", "--no-passphrase", cwd=wd)

    # ARM's first authority drafts the rotation; one signature is not enough for ARM (2 of 3).
    ceasefire(
        "keys", "rotate", *s, "--party", "ARM", "--old-key-id", arm_monitor, "--role", "monitor",
        "--public-key", "keys/arm-monitor-2.pub", "--reason", "handset lost",
        "--key", "keys/arm-authority-1.key", "--out", "rotate.json", cwd=wd,
    )  # fmt: skip
    early = ceasefire("submit", *s, "rotate.json", cwd=wd, check=False)
    assert early.returncode == 1 and "needs 2 of ARM's authority keys" in early.stderr
    # The second authority, on another machine, reads what it signs and adds its signature.
    cosigned = ceasefire("cosign", "rotate.json", "--key", "keys/arm-authority-3.key", cwd=wd)
    assert "now 2 signature(s)" in cosigned.stdout
    assert "handset lost" in cosigned.stderr  # shown before signing
    assert "entry 1" in ceasefire("submit", *s, "rotate.json", cwd=wd).stdout

    old = ceasefire(
        "submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd, check=False
    )
    assert old.returncode == 1 and "revoked at index 1" in old.stderr
    ceasefire("submit", *s, "--key", "keys/arm-monitor-2.key", "incident-arm.yaml", cwd=wd)

    # Admitting the observer mission: both founders' consent and its own authority.
    ceasefire(
        "keys", "add-party", *s, "--party-file", "observer-party.yaml",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-2.key",
        "--out", "obs.json", cwd=wd,
    )  # fmt: skip
    ceasefire("cosign", "obs.json", "--key", "keys/aze-authority-1.key", cwd=wd)
    ceasefire("cosign", "obs.json", "--key", "keys/obs-authority.key", "--quiet", cwd=wd)
    ceasefire("submit", *s, "obs.json", cwd=wd)

    state = json.loads(
        ceasefire("keys", "list", *s, "--trust-root", digest, "--json", cwd=wd).stdout
    )
    assert set(state["parties"]) == {"ARM", "AZE", "OBS"}
    assert state["parties"]["ARM"]["authority_threshold"] == 2
    revoked = [k for k in state["keys"] if k["key_id"] == arm_monitor]
    assert revoked == [
        {"party": "ARM", "role": "monitor", "key_id": arm_monitor, "added_at": 0, "revoked_at": 1}
    ]
    listing = ceasefire("keys", "list", *s, cwd=wd).stdout
    assert "OBS   observer" in listing and "revoked at 1" in listing
    verified = json.loads(ceasefire("verify", *s, "--trust-root", digest, "--json", cwd=wd).stdout)
    assert verified["ok"] and verified["tree_size"] == 4


def test_first_run_bootstraps_a_local_ledger(tmp_path: Path) -> None:
    """What `scripts/run` does on a fresh machine: serve --bootstrap, then submit."""
    shutil.copy(EXAMPLES / "incident-arm.yaml", tmp_path)
    home = tmp_path / "var"
    server = Server(tmp_path, str(home / "ledger.db"), "--bootstrap", "--data-dir", str(home))
    server.log_key = str(home / "keys/log.key")
    server.start()
    try:
        s = ("--server", server.address)
        key = str(home / "keys/arm-monitor.key")
        assert (
            "entry 1"
            in ceasefire("submit", *s, "--key", key, "incident-arm.yaml", cwd=tmp_path).stdout
        )
        out = json.loads(ceasefire("verify", *s, "--json", cwd=tmp_path).stdout)
        assert out["ok"] and out["tree_size"] == 2
        assert server.stop() == 0
        server.start()  # a second run reuses the ledger
        assert (
            json.loads(
                ceasefire("checkpoint", "--server", server.address, "--json", cwd=tmp_path).stdout
            )["tree_size"]
            == 2
        )
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def test_border_commands(served: tuple[Path, str, str]) -> None:
    wd, address, _ = served
    s = ("--server", address)
    facts = json.loads(ceasefire("border", "check", "40.8811", "45.3875", "--json", cwd=wd).stdout)
    assert facts[0]["territory"] == "ARM" and facts[0]["distance_to_border_m"] > 8000
    paris = ceasefire("border", "check", "48.8566", "2.3522", cwd=wd, check=False)
    assert paris.returncode == 1 and "outside the region" in paris.stdout
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    sector = json.loads(
        ceasefire(
            "border", "check", "--file", str(EXAMPLES / "observation-aze.yaml"), "--json", cwd=wd
        ).stdout
    )[0]
    sides = {x.get("territory") for x in sector["shares"] if x.get("share")}
    assert sector["territory"] == "AZE" and sides == {"ARM", "AZE"}

    shifted_dataset(wd / "shifted")
    ceasefire(
        "border", "add", "shifted", *s, "--name", "Shifted test line", "--source", "test",
        "--licence", "public domain", "--monitored-zone-km", "50",
        "--key", "keys/arm-authority-1.key", "--key", "keys/arm-authority-3.key",
        "--out", "border.json", cwd=wd,
    )  # fmt: skip
    ceasefire("cosign", "border.json", "--key", "keys/aze-authority-1.key", "--quiet", cwd=wd)
    assert "entry 2" in ceasefire("border", "send", "border.json", "shifted", *s, cwd=wd).stdout

    listed = json.loads(ceasefire("border", "list", *s, "--json", cwd=wd).stdout)
    assert [(d["registered_at"], d["in_force"]) for d in listed] == [(0, False), (2, True)]
    new, old = listed[1]["sha256"], listed[0]["sha256"]
    shown = json.loads(ceasefire("border", "show", new, *s, cwd=wd).stdout)
    assert shown["statement"]["name"] == "Shifted test line" and shown["in_force"]
    rows = json.loads(ceasefire("border", "revalidate", new, *s, "--json", cwd=wd).stdout)
    assert [r["index"] for r in rows] == [1] and rows[0]["recorded"] == "ARM"
    observed = ceasefire(
        "submit",
        *s,
        "--key",
        "keys/aze-monitor.key",
        str(EXAMPLES / "observation-aze.yaml"),
        cwd=wd,
    )
    assert "entry 3" in observed.stdout
    assert "#1" in ceasefire("border", "revalidate", old, *s, cwd=wd).stdout


def test_an_incident_answered_amended_and_retracted(served: tuple[Path, str, str]) -> None:
    wd, address, digest = served
    s = ("--server", address)
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    answer = ceasefire(
        "answer", "1", *s, "--party", "AZE", "--kind", "denial",
        "--narrative", "No fire from our side.", "--key", "keys/aze-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert "entry 2: CounterClaim about entry 1" in answer.stdout
    ceasefire(
        "amend", "1", "incident-arm.yaml", *s, "--reason", "time corrected",
        "--key", "keys/arm-monitor.key", cwd=wd,
    )  # fmt: skip
    wrong = ceasefire(
        "retract", "1", *s, "--party", "AZE", "--key", "keys/aze-authority-1.key", cwd=wd,
        check=False,
    )  # fmt: skip
    assert wrong.returncode == 1 and "only ARM, the reporting party" in wrong.stderr
    shown = json.loads(ceasefire("dossier", "1", *s, "--json", cwd=wd).stdout)
    assert shown["status"] == "disputed"
    assert [e["relation"] for e in shown["entries"]] == ["report", "counter_claim", "amendment"]
    aze_authority = json.loads((wd / "keys/aze-authority-1.pub").read_text())["key_id"]
    (wd / "crater.jpg").write_bytes(b"\xff\xd8 crater \xff\xd9")
    added = ceasefire(
        "evidence", "add", "crater.jpg", *s, "--party", "ARM", "--incident", "1",
        "--blob", "sealed", "--seal-to", aze_authority, "--key", "keys/arm-monitor.key", cwd=wd,
    )  # fmt: skip
    assert "entry 4: evidence" in added.stdout
    opened = ceasefire(
        "evidence", "open", "4", *s, "--key", "keys/aze-authority-1.key", "--out", "got.jpg",
        cwd=wd,
    )  # fmt: skip
    assert "as recorded" in opened.stdout
    assert (wd / "got.jpg").read_bytes() == (wd / "crater.jpg").read_bytes()
    denied = ceasefire(
        "evidence", "open", "4", *s, "--key", "keys/arm-monitor.key", "--out", "x.jpg",
        cwd=wd, check=False,
    )  # fmt: skip
    assert denied.returncode == 1 and "not sealed to your key" in denied.stderr
    ceasefire("retract", "1", *s, "--party", "ARM", "--key", "keys/arm-monitor.key", cwd=wd)
    assert "incident 1: retracted" in ceasefire("dossier", "1", *s, cwd=wd).stdout
    out = json.loads(ceasefire("verify", *s, "--trust-root", digest, "--json", cwd=wd).stdout)
    assert out["ok"] and out["tree_size"] == 6


def test_a_finding_drafted_and_jointly_attested(served: tuple[Path, str, str]) -> None:
    wd, address, digest = served
    s = ("--server", address)
    ceasefire("submit", *s, "--key", "keys/arm-monitor.key", "incident-arm.yaml", cwd=wd)
    drafted = ceasefire(
        "finding", "draft", *s, "--incident", "1", "--party", "ARM", "--policy", "joint",
        "--outcome", "confirmed", "--attribution", "AZE", "--reasoning", "Both logs agree.",
        "--key", "keys/arm-authority-1.key", cwd=wd,
    )  # fmt: skip
    assert "entry 2: FindingDraft" in drafted.stdout
    arm = ceasefire(
        "attest", "2", *s, "--party", "ARM", "--key", "keys/arm-authority-1.key",
        "--key", "keys/arm-authority-2.key", cwd=wd,
    )  # fmt: skip
    assert "Both logs agree." in arm.stderr  # shown before signing
    assert "under_investigation" in ceasefire("dossier", "1", *s, "--json", cwd=wd).stdout
    ceasefire("attest", "2", *s, "--party", "AZE", "--key", "keys/aze-authority-1.key", cwd=wd)
    shown = json.loads(ceasefire("dossier", "1", *s, "--json", cwd=wd).stdout)
    assert shown["status"] == "jointly_confirmed"
    assert [e["relation"] for e in shown["entries"]] == [
        "report", "finding", "attestation", "joint_finding",
    ]  # fmt: skip
    out = json.loads(ceasefire("verify", *s, "--trust-root", digest, "--json", cwd=wd).stdout)
    assert out["ok"] and out["tree_size"] == 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # about the process, not the db
def test_the_installed_command_as_a_process(running: RunningLedger, tmp_path: Path) -> None:
    """The console script from pyproject.toml, as its own process: exit 0 and the receipt on
    stdout; exit 1 and one line when the ledger refuses; exit 2 on a usage error."""
    script = Path(sys.executable).parent / "ceasefire"
    assert script.is_file(), f"{script}: the package's `ceasefire` script is not installed"
    shutil.copy(EXAMPLES / "incident-arm.yaml", tmp_path)
    keys.write_private(tmp_path / "arm.key", running.parties.arm_monitor)
    keys.write_private(tmp_path / "aze.key", running.parties.aze_monitor)

    def ceasefire_process(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    s = ("--server", running.address)
    logged = ceasefire_process("submit", *s, "--key", "arm.key", "incident-arm.yaml", "--json")
    assert logged.returncode == 0, logged.stderr
    (receipt,) = json.loads(logged.stdout)
    assert receipt["index"] == 1
    assert running.client.entry(1).entry  # it is in the log
    refused = ceasefire_process("submit", *s, "--key", "aze.key", "incident-arm.yaml")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "PERMISSION_DENIED: reporting_party: a key of AZE cannot speak for ARM" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    usage = ceasefire_process("submit", *s, "--key", "arm.key", "incident-arm.yaml", "--bogus")
    assert usage.returncode == 2 and "unrecognized arguments: --bogus" in usage.stderr
