"""`ceasefire demo`, the newcomer's first command, runs to a verified ledger."""

from __future__ import annotations

import re

import pytest

from clients.demo import SAMPLES, run_demo


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert len(SAMPLES) == 12
    assert out.count(" -> in ") == 12
    assert "is not valid at index 15: revoked at index 14" in out
    # Each place lies on the reporting party's side, as the bundled border draws it.
    for s in SAMPLES:
        assert re.search(rf" {s.party} .* at {s.place} +-> in {s.party},", out), s.place
    assert "PERMISSION_DENIED: reporting_party: a key of ARM cannot speak for AZE" in out
    assert "INVALID_ARGUMENT: location.point:" in out and "outside the region" in out
    assert "duplicate=True" in out
    assert "incident 1: jointly_confirmed" in out
    # The dossier names each entry's party.
    assert re.search(r"#1 +\S+ +report +ARM +Automatic fire", out)
    assert "the investigation is concluded" in out
    assert "AZE's member opens it: True" in out
    assert re.search(r"#24 acknowledged by ARM at #26\n  #25 acknowledged by AZE at #27", out)
    assert out.count("OK: ") == 2
    assert "consistent with the checkpoint of size 28 verified before" in out
