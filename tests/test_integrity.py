"""Append-only inside the database, and an audit that catches what slips past it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from clients import audit
from clients.cli import main
from tests.conftest import RunningLedger
from tests.reports import report, signed

TRIGGERS = {
    "sqlite": ["DROP TRIGGER entries_no_update"],
    "postgresql": ["DROP TRIGGER entries_append_only ON entries"],
}


def _fill(running: RunningLedger, n: int = 4) -> None:
    for i in range(n):
        party, key = (("ARM", running.parties.arm_monitor), ("AZE", running.parties.aze_monitor))[
            i % 2
        ]
        lat, lon = (40.8811, 45.3875) if party == "ARM" else (41.0933, 45.3661)
        running.client.submit(signed(report(party, lat=lat, lon=lon, hours_ago=i + 1), key))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET entry = entry WHERE idx = 1",
        "DELETE FROM entries WHERE idx = 2",
        "UPDATE tree_nodes SET hash = hash",
        "DELETE FROM checkpoints",
        "UPDATE incidents SET party = 'AZE'",
        "UPDATE tree_state SET size = 1",
        "DELETE FROM tree_state",
        "DELETE FROM sighting_keys",
    ],
)
def test_database_refuses_rewriting_history(running: RunningLedger, statement: str) -> None:
    _fill(running)
    with pytest.raises(DBAPIError) as info, running.ledger.store.engine.begin() as conn:
        conn.execute(text(statement))
    assert "append-only" in str(info.value) or "cannot" in str(info.value)
    assert running.ledger.store.tree_size() == 5


def test_verify_passes_then_names_the_tampered_entry(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running)
    assert main(["verify", "--server", running.address, "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out

    engine = running.ledger.store.engine
    with engine.begin() as conn:
        for stmt in TRIGGERS[engine.dialect.name]:
            conn.execute(text(stmt))
        data = conn.execute(text("SELECT entry FROM entries WHERE idx = 2")).scalar_one()
        tampered = bytearray(data)
        tampered[-3] ^= 0x01  # one byte, inside the validation facts: no signature covers it
        conn.execute(text("UPDATE entries SET entry = :e WHERE idx = 2"), {"e": bytes(tampered)})

    assert main(["verify", "--server", running.address]) == 3
    err = capsys.readouterr().out
    assert "VERIFICATION FAILED: entry 2:" in err


def test_verify_refuses_another_trust_root(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running, 1)
    assert main(["verify", "--server", running.address, "--trust-root", "ab" * 32]) == 3
    assert "is not the pinned one" in capsys.readouterr().out


def test_offline_bundle_verifies_and_catches_tampering(
    running: RunningLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running)
    path = tmp_path / "ledger.bundle"
    state = str(tmp_path / "seen.checkpoint")
    assert main(["export", "--server", running.address, "--out", str(path)]) == 0
    running.client.close()  # offline from here on: no server is asked anything
    capsys.readouterr()
    assert main(["verify", "--bundle", str(path), "--state", state, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["tree_size"] == 5 and first["geo_facts_recomputed"] == 4

    original = path.read_text().splitlines()
    lines = list(original)
    doc = json.loads(lines[1 + 2])
    data = bytearray(base64.b64decode(doc["entry"]))
    data[-3] ^= 0x01  # entry 2's validation facts: no author's signature covers them
    doc["entry"] = base64.b64encode(bytes(data)).decode()
    lines[1 + 2] = json.dumps(doc)
    tampered = tmp_path / "tampered.bundle"
    tampered.write_text("\n".join(lines) + "\n")
    assert main(["verify", "--bundle", str(tampered)]) == 3
    assert "entry 2" in capsys.readouterr().out

    shorter = tmp_path / "shorter.bundle"
    shorter.write_text("\n".join(original[:4]) + "\n")
    assert main(["verify", "--bundle", str(shorter)]) == 3
    assert "the checkpoint covers 5 entries, the bundle holds 3" in capsys.readouterr().out


def test_verify_catches_a_status_the_entries_do_not_give(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator who adds a link row ("jointly confirmed") that no entry made: every
    entry still verifies, but the status the server shows is not the ledger's."""
    _fill(running, 2)
    assert main(["verify", "--server", running.address]) == 0
    capsys.readouterr()
    with running.ledger.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO links (target_idx, idx, relation, response) "
                "VALUES (1, 2, 'joint_finding', 1)"
            )
        )
    assert running.client.dossier(1).status == api.INCIDENT_STATUS_JOINTLY_CONFIRMED
    assert main(["verify", "--server", running.address]) == 3
    err = capsys.readouterr().out
    assert "entry 1: the server shows it as jointly_confirmed" in err
    assert "entries make it reported" in err


def test_verify_checks_the_statuses_on_every_page(
    running: RunningLedger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit reads the whole timeline page after page: a status forged for the
    incident on its last page is found as surely as one on its first."""
    monkeypatch.setattr(audit, "TIMELINE_PAGE", 1)  # a page per incident
    _fill(running, 4)
    assert main(["verify", "--server", running.address]) == 0
    last = max(row.index for row in running.client.timeline())
    with running.ledger.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO links (target_idx, idx, relation, response) "
                f"VALUES ({last}, 2, 'joint_finding', 1)"
            )
        )
    capsys.readouterr()
    assert main(["verify", "--server", running.address]) == 3
    assert f"entry {last}: the server shows it as jointly_confirmed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        # A derived row no entry made: entry 2 flagged as a likely duplicate of entry 1.
        (
            "INSERT INTO links (target_idx, idx, relation, response) "
            "VALUES (1, 2, 'likely_duplicate', 0)",
            "entry 1: the server shows it likely duplicated by [2]; its entries give none",
        ),
        # An incident row for the trust root: the server shows an incident no report made
        # (the audit reads statuses without the entries, which it has replayed itself).
        (
            "INSERT INTO incidents (idx, party, category, window_start_us, window_end_us, "
            "latitude, longitude, territory) VALUES (0, 'ARM', 1, 0, 1, 40.9, 45.4, 'ARM')",
            "entry 0: the server's timeline shows it as an incident report; its entry is not one",
        ),
        # A report's row gone: the timeline leaves the incident out.
        (
            "DELETE FROM incidents WHERE idx = 2",
            "entry 2: the server's timeline leaves out this incident",
        ),
    ],
    ids=["forged-duplicate", "forged-incident", "hidden-incident"],
)
def test_verify_compares_what_the_server_shows_with_the_entries(
    running: RunningLedger, capsys: pytest.CaptureFixture[str], statement: str, says: str
) -> None:
    _fill(running, 2)
    engine = running.ledger.store.engine
    with engine.begin() as conn:
        if statement.startswith("DELETE"):
            drop = {
                "sqlite": ["DROP TRIGGER incidents_no_delete"],
                "postgresql": ["DROP TRIGGER incidents_append_only ON incidents"],
            }
            for stmt in drop[engine.dialect.name]:
                conn.execute(text(stmt))
            conn.execute(text("DELETE FROM evidence_refs WHERE idx = 2"))
        conn.execute(text(statement))
    assert main(["verify", "--server", running.address]) == 3  # evidence the audit found
    c = capsys.readouterr()
    assert says in c.out + c.err
    if says.startswith("entry 0:"):  # the full view reads the entry: the server refuses
        with pytest.raises(grpc.RpcError) as refused:
            list(running.client.timeline())
        assert refused.value.code() == grpc.StatusCode.DATA_LOSS
        assert "entry 0 is indexed as an incident but is not one" in str(refused.value.details())
