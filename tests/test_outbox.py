"""The field workflow: statements signed offline and kept in the outbox, `ceasefire sync`
(resumed after a cut, never a duplicate), kept receipts checked against later checkpoints,
statements too old re-signed, and how late a report was logged. A real `ceasefire serve`
process (stopped and restarted on the same database), the command run in-process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ceasefire.v1 import statements_pb2 as pb

from clients import incident_view, outbox, reports
from clients.client import LedgerClient
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from tests import cli_runner
from tests.test_cli import Server, initialised, workdir  # noqa: F401 (fixtures)

Initialised = tuple[Path, Server, str]


def ceasefire(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli_runner.run(*args, cwd=cwd)


def message(text: str, *, signed_us: int | None = None, key: Path) -> bytes:
    """A hotline message from ARM's monitor, signed (at `signed_us`, default now)."""
    statement = pb.HotlineMessage(
        created_time=to_timestamp(signed_us or now_us()),
        party="ARM",
        to_party="AZE",
        urgency=pb.HOTLINE_URGENCY_ROUTINE,
        text=text,
        text_language="en",
    )
    return dsse.sign(
        statements.HOTLINE, statement.SerializeToString(), [keys.read_private(key)]
    ).to_json()


def tree_size(server: Server) -> int:
    with LedgerClient(server.address) as client:
        return int(client.checkpoint().tree_size)


def hotline(wd: Path, address: str, text: str, *extra: str) -> dict[str, object]:
    out = ceasefire(
        "hotline", "send", "--party", "ARM", "--to", "AZE", "--text", text,
        "--key", "keys/arm-monitor.key", "--server", address, "--json", *extra, cwd=wd,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_observe_offline_then_sync(initialised: Initialised) -> None:  # noqa: F811
    wd, server, _ = initialised
    up = server.address
    first = hotline(wd, up, "logged at once")
    assert first["state"] == "logged" and first["index"] == 1
    assert first["receipt"]["index"] == 1  # type: ignore[index]
    assert server.stop() == 0

    # The link is down: each statement is kept (exit 0), none is lost.
    offline = [hotline(wd, up, f"observed offline {i}") for i in range(3)]
    assert [d["state"] for d in offline] == ["pending"] * 3
    assert all(d["index"] is None and "UNAVAILABLE" in str(d["error"]) for d in offline)
    human = ceasefire(
        "hotline", "send", "--party", "ARM", "--to", "AZE", "--text", "observed offline 3",
        "--key", "keys/arm-monitor.key", "--server", up, cwd=wd,
    )  # fmt: skip
    assert human.returncode == 0 and "kept in the outbox (#5, pending)" in human.stdout
    assert "ceasefire sync" in human.stdout
    queued = hotline(wd, up, "queued on purpose", "--queue")
    assert queued["state"] == "pending"

    # Evidence with its file, kept while the link is down, goes with its blob later.
    (wd / "crater.txt").write_text("a crater, 2 m wide")
    kept = ceasefire(
        "evidence", "add", "crater.txt", "--party", "ARM", "--blob", "plain",
        "--key", "keys/arm-monitor.key", "--server", up, "--queue", "--json", cwd=wd,
    )  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["state"] == "pending"

    pending = json.loads(ceasefire("outbox", "list", "--state", "pending", "--json", cwd=wd).stdout)
    assert len(pending) == 6 and pending[-1]["files"] == ["blob"]
    down = ceasefire("sync", "--server", up, cwd=wd)
    assert down.returncode == 4 and "kept pending" in down.stderr
    assert "Traceback" not in down.stderr

    server.start()
    synced = ceasefire("sync", "--server", server.address, "--json", cwd=wd)
    assert synced.returncode == 0, synced.stderr
    doc = json.loads(synced.stdout)
    assert (doc["logged"], doc["refused"], doc["still_pending"]) == (6, 0, 0)
    assert [r["index"] for r in doc["sent"]] == [2, 3, 4, 5, 6, 7]  # in the order observed
    assert all(r["receipt"]["signed_receipt"]["payloadType"].endswith("Receipt+protobuf")
               for r in doc["sent"])  # fmt: skip
    assert tree_size(server) == 8
    again = ceasefire("sync", "--server", server.address, cwd=wd)
    assert again.returncode == 0 and "nothing to send" in again.stdout

    logged = json.loads(ceasefire("outbox", "list", "--state", "logged", "--json", cwd=wd).stdout)
    assert [r["index"] for r in logged] == [1, 2, 3, 4, 5, 6, 7]
    evidence = ceasefire("outbox", "show", str(logged[-1]["id"]), "--json", cwd=wd)
    assert json.loads(evidence.stdout)["kind"] == "EvidenceRecord"
    # The outbox is private: its folder 0700, its file 0600.
    path = outbox.default_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_sync_cut_midway_resumes_without_duplicates(initialised: Initialised) -> None:  # noqa: F811
    wd, server, _ = initialised
    box_path = wd / "field.db"
    count = 40
    with outbox.Outbox.open(box_path) as box:
        for i in range(count):
            box.add(message(f"report {i}", key=wd / "keys/arm-monitor.key"), f"report {i}")

    # A sync process killed while it sends (one statement per call, so it is mid-way).
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "sync", "--outbox", str(box_path),
         "--server", server.address, "--batch-size", "1"],
        cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    logged = 0
    while proc.poll() is None and time.monotonic() < deadline:
        with sqlite3.connect(box_path) as db:
            logged = db.execute("SELECT count(*) FROM statements WHERE state='logged'").fetchone()[
                0
            ]
        if logged >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    with outbox.Outbox.open(box_path) as box:
        cut_at = box.counts()
    assert cut_at["logged"] >= 3 and cut_at["refused"] == 0

    # The log committed some answers the killed process never kept: as if so, mark a few
    # logged rows pending again. Sent again, each gets its first receipt.
    with sqlite3.connect(box_path) as db:
        db.execute("UPDATE statements SET state='pending' WHERE id IN (1, 2)")

    resumed = ceasefire(
        "sync", "--outbox", str(box_path), "--server", server.address, "--batch-size", "7",
        "--json", cwd=wd,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["still_pending"] == 0
    assert {r["id"] for r in doc["sent"] if r["receipt"]["duplicate"]} >= {1, 2}

    # Exactly one entry per statement: the log holds entry 0 and the 40, each once.
    assert tree_size(server) == 1 + count
    rows = json.loads(
        ceasefire("outbox", "list", "--outbox", str(box_path), "--json", cwd=wd).stdout
    )
    assert sorted(r["index"] for r in rows) == list(range(1, count + 1))
    assert all(r["state"] == "logged" for r in rows)


def test_kept_receipts_checked_against_later_checkpoints(initialised: Initialised) -> None:  # noqa: F811
    wd, server, digest = initialised
    s = ("--server", server.address)
    for i in range(3):
        hotline(wd, server.address, f"message {i}")
    first = ceasefire("outbox", "check", *s, "--trust-root", digest, "--json", cwd=wd)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["ok"] and doc["tree_size"] == 4 and len(doc["checked"]) == 3

    # More entries: each receipt included in the newer checkpoint, and the checkpoint it was
    # checked against before consistent with it.
    for i in range(2):
        hotline(wd, server.address, f"later {i}")
    later = ceasefire("outbox", "check", *s, "--json", cwd=wd)
    assert later.returncode == 0, later.stderr
    checked = json.loads(later.stdout)["checked"]
    assert all(c["ok"] for c in checked) and len(checked) == 5
    assert "consistent with the one of size 4" in checked[0]["message"]
    rows = json.loads(ceasefire("outbox", "list", "--json", cwd=wd).stdout)
    assert {r["checked_size"] for r in rows} == {6}

    # A kept receipt altered: the outbox row names another entry than its signed receipt.
    path = outbox.default_path()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE statements SET receipt_index = 4 WHERE id = 1")
    altered = ceasefire("outbox", "check", *s, cwd=wd)
    assert altered.returncode == 3
    assert "#1" in altered.stdout and "it says entry 1, the outbox says entry 4" in altered.stdout
    assert "VERIFICATION FAILED" in altered.stderr
    with sqlite3.connect(path) as db:
        db.execute("UPDATE statements SET receipt_index = 1 WHERE id = 1")
        # The root checked before is not the log's: the log showed another history then.
        db.execute("UPDATE statements SET checked_root = zeroblob(32) WHERE id = 2")
    split = ceasefire("outbox", "check", *s, "--json", cwd=wd)
    assert split.returncode == 3
    bad = [c for c in json.loads(split.stdout)["checked"] if not c["ok"]]
    assert [c["id"] for c in bad] == [2] and "another root" in bad[0]["message"]


def test_too_old_refused_with_hint_then_resigned(initialised: Initialised) -> None:  # noqa: F811
    wd, server, _ = initialised
    key = wd / "keys/arm-monitor.key"
    four_days_ago = now_us() - 4 * 86400 * 1_000_000
    with outbox.Outbox.open(outbox.default_path()) as box:
        old = box.add(message("seen days ago", signed_us=four_days_ago, key=key), "old one")
        box.add(message("seen now", key=key), "fresh one")

    synced = ceasefire("sync", "--server", server.address, cwd=wd)
    assert synced.returncode == 1
    assert "older than the 259200 s" in synced.stdout
    assert f"ceasefire outbox resign {old.id} --key KEY" in synced.stdout
    refused = json.loads(ceasefire("outbox", "list", "--state", "refused", "--json", cwd=wd).stdout)
    assert [r["id"] for r in refused] == [old.id] and "resign" in refused[0]["hint"]

    stranger = ceasefire("outbox", "resign", str(old.id), "--key", "keys/aze-monitor.key", cwd=wd)
    assert stranger.returncode == 1 and "did not sign it" in stranger.stderr
    resigned = ceasefire("outbox", "resign", str(old.id), "--key", str(key), "--json", cwd=wd)
    assert resigned.returncode == 0, resigned.stderr
    new = json.loads(resigned.stdout)
    assert new["state"] == "pending" and new["replaces"] == old.id

    sent = json.loads(ceasefire("sync", "--server", server.address, "--json", cwd=wd).stdout)
    assert [r["id"] for r in sent["sent"]] == [new["id"]] and sent["logged"] == 1
    shown = json.loads(ceasefire("outbox", "show", str(new["id"]), "--json", cwd=wd).stdout)
    was = json.loads(ceasefire("outbox", "show", str(old.id), "--json", cwd=wd).stdout)
    # The same statement but for its signing time.
    assert shown["statement"]["text"] == was["statement"]["text"] == "seen days ago"
    assert shown["statement"]["created_time"] != was["statement"]["created_time"]
    assert was["replaced_by"] == new["id"] and was["hint"] is None


def test_refused_statement_kept_with_reason(initialised: Initialised) -> None:  # noqa: F811
    wd, server, _ = initialised
    out = ceasefire(
        "hotline", "send", "--party", "AZE", "--to", "ARM", "--text", "not my party",
        "--key", "keys/arm-monitor.key", "--server", server.address, cwd=wd,
    )  # fmt: skip
    assert out.returncode == 1 and "PERMISSION_DENIED" in out.stderr
    assert "Traceback" not in out.stderr and "refused" in out.stderr
    rows = json.loads(ceasefire("outbox", "list", "--json", cwd=wd).stdout)
    assert [r["state"] for r in rows] == ["refused"]
    assert "PERMISSION_DENIED" in rows[0]["last_error"]
    direct = ceasefire(
        "hotline", "send", "--party", "ARM", "--to", "AZE", "--text", "no outbox",
        "--key", "keys/arm-monitor.key", "--server", server.address, "--no-outbox", cwd=wd,
    )  # fmt: skip
    assert direct.returncode == 0 and direct.stdout.startswith("entry 1:")
    assert len(json.loads(ceasefire("outbox", "list", "--json", cwd=wd).stdout)) == 1


def test_lateness_in_the_timeline(initialised: Initialised) -> None:  # noqa: F811
    wd, server, _ = initialised
    (report,) = reports.load_reports(wd / "incident-arm.yaml")
    observed_us = now_us() - 2 * 3600 * 1_000_000  # observed two hours ago ...
    report.window.start.CopyFrom(to_timestamp(observed_us - 600 * 1_000_000))
    report.window.end.CopyFrom(to_timestamp(observed_us))
    signed_us = now_us() - 3600 * 1_000_000  # ... signed an hour ago, offline
    envelope = reports.sign_report(
        report, [keys.read_private(wd / "keys/arm-monitor.key")], created_us=signed_us
    )
    with outbox.Outbox.open(outbox.default_path()) as box:
        box.add(envelope, "a report signed offline")
    assert ceasefire("sync", "--server", server.address, cwd=wd).returncode == 0

    with LedgerClient(server.address) as client:
        (t,) = list(client.timeline())
    doc = incident_view.incident_doc(t.index, t.status, t.report, t.geo, t.current, entry=t.entry)
    assert 7200 <= doc["logged_after_observed_s"] < 7200 + 120
    assert 3600 <= doc["logged_after_signed_s"] < 3600 + 120
    (_head, *rest) = incident_view.timeline_lines(doc)
    assert "      logged 2 h 0 min after it was observed (1 h 0 min after it was signed)" in rest
    assert any(line.startswith("  late   logged 2 h") for line in incident_view.dossier_lines(doc))


def test_outbox_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "not.db").write_text("this is not a database, it is text " * 100)
    out = ceasefire("outbox", "list", "--outbox", str(tmp_path / "not.db"), cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("error: outbox")
    assert "Traceback" not in out.stderr
    missing = ceasefire("outbox", "show", "7", cwd=tmp_path)
    assert missing.returncode == 1 and "no statement #7" in missing.stderr


def test_same_envelope_kept_once(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    keys.write_private(key, keys.generate())
    envelope = message("once", key=key)
    with outbox.Outbox.open(tmp_path / "box.db") as box:
        a = box.add(envelope, "first")
        b = box.add(envelope, "again")
        assert a.id == b.id and box.counts()["pending"] == 1
    with pytest.raises(outbox.OutboxError, match="newer version"):
        with sqlite3.connect(tmp_path / "box.db") as db:
            db.execute("PRAGMA user_version = 99")
        outbox.Outbox.open(tmp_path / "box.db")
