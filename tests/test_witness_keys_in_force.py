"""Clients that check a witness quorum count the witness keys IN FORCE, not entry 0's.

A log whose policy needs one witness of each party; AZE retires its witness w1 (its key
revoked, e.g. stolen) for a new one, w2, in one key change, and the log is then fed by w2.
A monitor run replays the key state. `proof --require-witnesses`, `outbox check
--require-witnesses` and the client library, given that state (`--monitor-state DIR`,
`clients.monitor.trust_state`), count w2 and no longer w1: a checkpoint cosigned by the
revoked w1 (as whoever holds the log key and w1's key could make for a fork) is refused,
where entry 0 alone accepts it. Without the state they say whose witnesses they counted.

Real witnesses over HTTP, a real gRPC server; the forged checkpoint is served by replacing
`LedgerClient.checkpoint` in this process, as a log holding both keys would serve it."""

from __future__ import annotations

import io
import json
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from nacl.signing import SigningKey

from clients import checkpoints
from clients import monitor as monitor_mod
from clients.checkpoints import ENTRY_0_WITNESSES_WARNING
from clients.cli import main
from clients.client import LedgerClient
from clients.monitor import Monitor, MonitorStateError, Options
from geo.borders import BorderDataset
from ledger import keys
from ledger.formats import dsse
from ledger.formats.cosignature import CosignatureSigner
from ledger.formats.note import split_note
from ledger.log_key import LogKey
from ledger.trust import TrustState
from ledger.witness.server import Witness, serve
from ledger.witness.state import WitnessState
from ledger.witnesses import QuorumError
from tests.conftest import ORIGIN
from tests.reports import report, signed
from tests.test_witnessed import (  # noqa: F401 (the fixture)
    ARM_WITNESS,
    AZE_WITNESS,
    POLICY,
    Witnessed,
    _witnessed_size,
    witnessed,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
AZE_W2 = "witness.aze.test/w2"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _names(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["party"], c["name"]) for c in doc["witnesses"]["cosigned_by"]}


def test_the_witness_keys_in_force_count_not_entry_0s(
    witnessed: Witnessed,  # noqa: F811
    borders: BorderDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, target = witnessed.client, witnessed.client.target
    before = witnessed.submit(2)
    witnessed.wait(lambda: _witnessed_size(client) == before)

    # AZE retires w1 for w2 in one key change (kept in an outbox, whose receipt `outbox
    # check` checks below); w2 then answers at w1's address.
    w1 = witnessed.witnesses[AZE_WITNESS]
    port = w1.port
    w1.stop()
    w2 = CosignatureSigner(AZE_W2, SigningKey.generate())
    w1_key_id = dsse.key_id(keys.public_bytes(witnessed.witness_keys[AZE_WITNESS]))
    authority = tmp_path / "aze-authority.key"
    keys.write_private(authority, witnessed.parties.aze_authority)
    box = tmp_path / "outbox.db"
    rotate = ["keys", "rotate", "--party", "AZE", "--old-key-id", w1_key_id, "--role", "witness",
              "--witness-vkey", w2.verifier.vkey, "--key", str(authority), "--outbox", str(box),
              "--server", target]  # fmt: skip
    assert main(rotate) == 0
    log_verifier = LogKey(ORIGIN, witnessed.parties.log).note_signer.verifier
    w2_server = serve(
        Witness(w2, {ORIGIN: [log_verifier]}, WitnessState(tmp_path / "w2-witness.db")),
        "127.0.0.1",
        port,
    )
    w2_server.start()
    witnessed.witnesses[AZE_W2] = w2_server  # stopped with the others
    response = client.submit(signed(report("AZE"), witnessed.parties.aze_monitor))
    after = client.checkpoint().tree_size
    witnessed.wait(lambda: _witnessed_size(client) == after, timeout_s=90)

    # A monitor run replays the key change: its state holds w2 in force, w1 revoked.
    state_dir = tmp_path / "monitor"
    options = Options(state_dir=state_dir, borders=(borders,), workers=0)
    run = Monitor(client, options, out=io.StringIO(), err=io.StringIO()).run_once()
    assert run.code == 0 and run.tree_size == after, run
    in_force = monitor_mod.trust_state(state_dir)
    entry_0: TrustState = witnessed.trust
    state = str(state_dir)

    # (a) Entry 0 alone does not know w2: the witnessed checkpoint does not meet the policy
    # for it (exit 1, as for any unmet quorum), and it says whose witnesses it counted.
    code, out, err = _run(capsys, "proof", "inclusion", "--index", "1", "--require-witnesses",
                          "--server", target)  # fmt: skip
    assert code == 1 and out == ""
    assert f"cosigned by ARM {ARM_WITNESS}; witness policy {POLICY}: NOT met" in err
    assert err.splitlines()[0] == ENTRY_0_WITNESSES_WARNING
    assert "--monitor-state" in ENTRY_0_WITNESSES_WARNING

    # (b) With the monitor's key state, met, naming w2; before or after the subcommand.
    for argv in (
        ["proof", "--monitor-state", state, "--require-witnesses", "--server", target,
         "inclusion", "--index", "1"],
        ["proof", "inclusion", "--index", "1", "--require-witnesses", "--monitor-state",
         state, "--server", target],
        ["proof", "consistency", "--old", "1", "--require-witnesses", "--monitor-state",
         state, "--server", target],
    ):  # fmt: skip
        code, out, err = _run(capsys, *argv)
        assert code == 0, (argv, err)
        assert err == ""  # no warning: the keys in force were counted
        doc = json.loads(out)
        assert doc["witnesses"]["policy_met"] and doc.get("tree_size", doc.get("new_size")) == after
        assert _names(doc) == {("ARM", ARM_WITNESS), ("AZE", AZE_W2)}

    # `outbox check` likewise: entry 0 alone, NOT met (and the warning); the keys in force, met.
    check = ["outbox", "check", "--outbox", str(box), "--require-witnesses", "--server", target]
    code, out, err = _run(capsys, *check, "--json")
    assert code == 1 and out == "" and ENTRY_0_WITNESSES_WARNING in err and "NOT met" in err
    code, out, err = _run(capsys, *check, "--monitor-state", state, "--json")
    assert code == 0 and err == "", err
    assert json.loads(out)["ok"] and json.loads(out)["tree_size"] == after

    # (c) The defence. A checkpoint cosigned by ARM's witness and the REVOKED w1 (made here
    # with w1's key, as its thief would): entry 0 accepts it; the keys in force do not.
    served = client.checkpoint(witnessed=True)
    text, lines = split_note(served.signed_note)
    kept = [s.line() for s in lines if s.name != AZE_W2]
    w1_signer = CosignatureSigner(AZE_WITNESS, witnessed.witness_keys[AZE_WITNESS])
    forged = text + "\n" + "".join(kept) + w1_signer.cosign(text, int(time.time())).line()
    assert checkpoints.check(forged, entry_0, require_witnesses=True).witnessing.met
    with pytest.raises(QuorumError, match="NOT met"):
        checkpoints.check(forged, in_force, require_witnesses=True)
    assert checkpoints.check(served.signed_note, in_force, require_witnesses=True).witnessing.met

    # The log (holding both keys) serves the forged checkpoint.
    forged_response = api.GetCheckpointResponse(
        signed_note=forged, tree_size=served.tree_size, root_hash=served.root_hash
    )
    monkeypatch.setattr(LedgerClient, "checkpoint", lambda self, **_: forged_response)
    proof = ["proof", "inclusion", "--index", "1", "--require-witnesses", "--server", target]
    code, out, err = _run(capsys, *proof)
    assert code == 0 and json.loads(out)["witnesses"]["policy_met"]  # entry 0: fooled,
    assert ("AZE", AZE_WITNESS) in _names(json.loads(out))
    assert ENTRY_0_WITNESSES_WARNING in err  # and it says so
    code, out, err = _run(capsys, *proof, "--monitor-state", state)
    assert code == 1 and out == ""
    assert err.strip() == (
        f"error: cosigned by ARM {ARM_WITNESS}; witness policy {POLICY}: NOT met"
    )
    code, out, err = _run(capsys, *check, "--json")
    assert code == 0 and json.loads(out)["ok"]  # entry 0: fooled
    code, out, err = _run(capsys, *check, "--monitor-state", state, "--json")
    assert code == 1 and out == "" and "NOT met" in err

    # The client library: verify_receipt / prove_inclusion with trust=the monitor's state.
    assert client.verify_receipt(response, trust=entry_0, require_witnesses=True).tree_size == after
    with pytest.raises(QuorumError, match="NOT met"):
        client.verify_receipt(response, trust=in_force, require_witnesses=True, timeout_s=0.3)
    with pytest.raises(QuorumError, match="NOT met"):
        client.prove_inclusion(1, trust=in_force, require_witnesses=True, timeout_s=0.3)


def test_a_monitor_state_that_is_not_this_logs_is_refused(
    witnessed: Witnessed,  # noqa: F811
    borders: BorderDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, target = witnessed.client, witnessed.client.target
    proof = ["proof", "inclusion", "--index", "0", "--require-witnesses", "--server", target]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _run(capsys, *proof, "--monitor-state", str(empty))
    assert code == 1 and out == ""
    assert err == (
        f"error: --monitor-state: {empty} holds no monitor state (monitor.state): run "
        f"`ceasefire monitor --state-dir {empty}` first\n"
    )
    with pytest.raises(MonitorStateError, match="holds no monitor state"):
        monitor_mod.trust_state(empty)

    state_dir = tmp_path / "monitor"
    options = Options(state_dir=state_dir, borders=(borders,), workers=0)
    assert Monitor(client, options, out=io.StringIO(), err=io.StringIO()).run_once().code == 0
    path = state_dir / monitor_mod.STATE_FILE
    doc = pickle.loads(path.read_bytes())
    digest = doc["replay"]["trust_root_digest"]
    assert monitor_mod.trust_state(state_dir, trust_root=digest.upper()).origin == ORIGIN
    doc["replay"]["trust_root_digest"] = "ab" * 32  # as another log's state would say
    path.write_bytes(pickle.dumps(doc))
    code, out, err = _run(capsys, *proof, "--monitor-state", str(state_dir))
    assert code == 1 and out == ""
    assert err == (
        f"error: --monitor-state: {state_dir} is the monitor state of another log (trust "
        f"root {'ab' * 32}, not {digest})\n"
    )
