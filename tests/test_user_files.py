"""Files people write are read strictly: a misspelt or unknown key in a trust root, a party
file or an incident report is refused with the file and the key named (one line on stderr,
exit code 1), never silently dropped; and nothing is written. A trust root whose border
data set lies between other parties is refused by `trust-root` and by `init`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ceasefire.v1 import statements_pb2 as pb

from clients.cli import main
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.errors import InvalidArgument
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import dataset_files, initialize
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, RunningLedger

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
FOUNDERS = ("arm-authority-1", "arm-authority-2", "aze-authority-1")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str, *said: str) -> None:
    """Exit 1 and one line on stderr saying all of `said`; no stack trace."""
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for text in said:
        assert text in err, (text, err)


@pytest.fixture
def founding(tmp_path: Path) -> Path:
    """The example trust root's folder with every key it names."""
    for name in ("log", *FOUNDERS, "arm-authority-3", "arm-monitor", "aze-monitor"):
        assert main(["keygen", name, "--dir", str(tmp_path / "keys"), "--no-passphrase"]) == 0
    shutil.copy(EXAMPLES / "trust-root.yaml", tmp_path / "trust-root.yaml")
    return tmp_path


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _trust_root(wd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    signers = [a for f in FOUNDERS[:2] for a in ("--key", str(wd / "keys" / f"{f}.key"))]
    return _run(
        capsys, "trust-root", str(wd / "trust-root.yaml"), "--log-public-key",
        str(wd / "keys/log.pub"), *signers, "--out", str(wd / "root.json"),
    )  # fmt: skip


def _init_yaml(wd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    signers = [a for f in FOUNDERS for a in ("--sign-with", str(wd / "keys" / f"{f}.key"))]
    return _run(
        capsys, "init", "--db", f"sqlite:///{wd / 'ledger.db'}", "--trust-root",
        str(wd / "trust-root.yaml"), "--log-key", str(wd / "keys/log.key"), *signers,
    )  # fmt: skip


def _party(doc: dict[str, Any], code: str) -> dict[str, Any]:
    return next(p for p in doc["parties"] if p["code"] == code)


def _rename(holder: dict[str, Any], old: str, new: str) -> None:
    holder[new] = holder.pop(old)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda d: _rename(_party(d, "ARM"), "authority_threshold", "authority_treshold"),
            ["parties[0]: unknown key 'authority_treshold'", "did you mean 'authority_threshold'"],
        ),
        (
            lambda d: _rename(d, "admission_policy", "admision_policy"),
            ["unknown key 'admision_policy'", "did you mean 'admission_policy'"],
        ),
        (
            lambda d: _party(d, "AZE")["keys"][0].update(lable="AZE authority"),
            ["parties[1].keys[0]: unknown key 'lable'", "did you mean 'label'"],
        ),
        (
            lambda d: _rename(d["finding_policies"][0], "expression", "expresion"),
            ["finding_policies[0]: unknown key 'expresion'"],
        ),
        (
            lambda d: _rename(d["freshness"], "max_age_seconds", "max_age"),
            ["freshness: unknown key 'max_age'"],
        ),
        (lambda d: d.update(observers=["w1"]), ["unknown key 'observers'", "known: origin"]),
        (
            lambda d: _party(d, "ARM").update(authority_threshold="two"),
            ["parties[0].authority_threshold: expected a whole number"],
        ),
    ],
)
def test_a_trust_root_with_an_unknown_key_is_refused(
    founding: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    said: list[str],
) -> None:
    _edit(founding / "trust-root.yaml", change)
    code, _, err = _trust_root(founding, capsys)
    _refused(code, err, str(founding / "trust-root.yaml"), *said)
    assert not (founding / "root.json").exists()
    code, _, err = _init_yaml(founding, capsys)
    _refused(code, err, *said)
    assert not (founding / "ledger.db").exists()


def test_a_key_given_twice_is_refused(founding: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = founding / "trust-root.yaml"
    text = path.read_text().replace(
        "    authority_threshold: 2", "    authority_threshold: 2\n    authority_threshold: 1"
    )
    path.write_text(text)
    code, _, err = _trust_root(founding, capsys)
    # The second one, on the line after the first (numbered from 1).
    line = 2 + next(i for i, s in enumerate(text.splitlines()) if "threshold: 2" in s)
    _refused(code, err, f"{path}:{line}:", "key 'authority_threshold' is given twice")
    assert not (founding / "root.json").exists()


def test_the_example_trust_root_is_read_whole(
    founding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every key of the example is read, including the optional border_policy."""
    _edit(founding / "trust-root.yaml", lambda d: d.update(border_policy="ARM.authority"))
    code, out, err = _trust_root(founding, capsys)
    assert code == 0, err
    assert "ceasefire cosign" in out and "ceasefire init --trust-root" in out
    envelope = dsse.Envelope.from_json((founding / "root.json").read_bytes())
    root = statements.decode(envelope.payload_type, envelope.payload)
    assert isinstance(root, pb.TrustRoot)
    assert root.border_policy == "ARM.authority"
    assert root.admission_policy == "AND(ARM.authority, AZE.authority)"
    assert [p.authority_threshold for p in root.parties] == [2, 1]
    assert root.freshness.max_age_seconds == 259200
    assert [k.label for k in root.parties[0].keys][-1] == "ARM monitoring team, Tavush"


def test_a_party_file_with_an_unknown_key_is_refused(
    founding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("obs-authority", "obs-observer"):
        assert main(["keygen", name, "--dir", str(founding / "keys"), "--no-passphrase"]) == 0
    party = founding / "observer-party.yaml"
    shutil.copy(EXAMPLES / "observer-party.yaml", party)
    _edit(party, lambda d: _rename(d, "authority_threshold", "authority_treshold"))
    out = founding / "obs.json"
    code, _, err = _run(
        capsys, "keys", "add-party", "--party-file", str(party),
        "--key", str(founding / "keys/arm-authority-1.key"), "--out", str(out),
    )  # fmt: skip
    _refused(code, err, f"{party}: unknown key 'authority_treshold'", "'authority_threshold'")
    assert not out.exists()


# -- incident reports ------------------------------------------------------------------------


def _report_file(folder: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = yaml.safe_load((EXAMPLES / "incident-arm.yaml").read_text())
    change(doc)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda d: _rename(d["location"], "uncertainty_m", "uncertainty"),
            ["location: unknown key 'uncertainty' (did you mean 'uncertainty_m'?)"],
        ),
        (lambda d: d.update(severity="high"), ["unknown key 'severity'", "known: reporting_party"]),
        (
            lambda d: d["location"].update(uncertainty_m="far"),
            ["location.uncertainty_m: ", "far"],
        ),
        (  # written as protobuf's JSON spells it: named as the proto does
            lambda d: (
                d["location"].update(uncertaintyM="far") or d["location"].pop("uncertainty_m")
            ),
            ["location.uncertainty_m: ", "far"],
        ),
        (
            lambda d: d.update(category="shelling"),
            ["category: 'shelling' is not one of small_arms_fire, sniper"],
        ),
        (
            lambda d: d["casualties"]["civilians_injured"].update(best=-1),
            ["casualties.civilians_injured.best: "],
        ),
        (
            lambda d: d["location"].update(line={"origin": {"latitude": 40.9}}),
            ["location: give one of point, line, polygon, observation; not both point and line"],
        ),
        (lambda d: d.update(weapons="rifle"), ["weapons: expected a list"]),
    ],
)
def test_a_report_file_with_an_unknown_or_bad_field_is_refused(
    running: RunningLedger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    said: list[str],
) -> None:
    key = tmp_path / "arm-monitor.key"
    keys.write_private(key, running.parties.arm_monitor)
    good = _report_file(tmp_path, "good.yaml", lambda d: None)
    bad = _report_file(tmp_path, "bad.yaml", change)
    # The good file first: nothing is sent unless every file reads.
    code, _, err = _run(
        capsys, "submit", "--server", running.address, "--key", str(key), str(good), str(bad)
    )
    _refused(code, err, f"{bad}[0]: ", *said)
    assert "uncertaintyM" not in err and "Traceback" not in err
    assert running.client.checkpoint().tree_size == 1


def test_a_json_report_is_read_as_strictly(
    running: RunningLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "aze-monitor.key"
    keys.write_private(key, running.parties.aze_monitor)
    text = (EXAMPLES / "incident-aze.json").read_text()
    for name, content, said in (
        ("extra.json", text.replace('"category"', '"categroy"', 1), "unknown key 'categroy'"),
        ("twice.json", text.replace("{", '{"narrative": "x", ', 1), "'narrative' is given twice"),
    ):
        path = tmp_path / name
        path.write_text(content)
        code, _, err = _run(
            capsys, "submit", "--server", running.address, "--key", str(key), str(path)
        )
        _refused(code, err, str(path), said)
    assert running.client.checkpoint().tree_size == 1
    ok = tmp_path / "ok.json"
    ok.write_text(text)
    code, out, err = _run(capsys, "submit", "--server", running.address, "--key", str(key), str(ok))
    assert code == 0 and "entry 1" in out, err


# -- a trust root for other parties than its border data set ---------------------------------


def _kgz_tjk(doc: dict[str, Any]) -> None:
    for party, (code, name) in zip(
        doc["parties"], (("KGZ", "Kyrgyzstan"), ("TJK", "Tajikistan")), strict=True
    ):
        party.update(code=code, name=name)
    doc["admission_policy"] = "AND(KGZ.authority, TJK.authority)"
    doc["finding_policies"] = [{"name": "joint", "expression": "AND(KGZ.authority, TJK.authority)"}]


def test_a_trust_root_for_other_parties_than_its_border_is_refused(
    founding: Path, capsys: pytest.CaptureFixture[str], borders: BorderDataset
) -> None:
    _edit(founding / "trust-root.yaml", _kgz_tjk)
    said = ("between ARM and AZE", "parties are KGZ, TJK")
    code, _, err = _trust_root(founding, capsys)
    _refused(code, err, str(founding / "trust-root.yaml"), *said)
    assert not (founding / "root.json").exists()
    code, _, err = _init_yaml(founding, capsys)
    _refused(code, err, *said)
    assert not (founding / "ledger.db").exists()

    # Signed some other way, it is refused by `init` (ledger.service.initialize) too.
    k = {name: keys.read_private(founding / "keys" / f"{name}.key") for name in ("log", *FOUNDERS)}

    def party(code: str, authorities: list[str]) -> pb.Party:
        return pb.Party(
            code=code,
            name=code,
            authority_threshold=len(authorities),
            keys=[
                pb.PartyKey(public_key=keys.public_bytes(k[a]), role=pb.ROLE_AUTHORITY)
                for a in authorities
            ],
        )

    root = pb.TrustRoot(
        origin=ORIGIN,
        log_public_key=keys.public_bytes(k["log"]),
        border_dataset_sha256=borders.sha256,
        border_dataset_files=dataset_files(borders),
        parties=[party("KGZ", list(FOUNDERS[:2])), party("TJK", [FOUNDERS[2]])],
    )
    envelope = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [k[f] for f in FOUNDERS])
    (founding / "kgz.json").write_bytes(envelope.to_json())
    url = f"sqlite:///{founding / 'kgz.db'}"
    code, _, err = _run(
        capsys, "init", "--db", url, "--trust-root", str(founding / "kgz.json"),
        "--log-key", str(founding / "keys/log.key"),
    )  # fmt: skip
    _refused(code, err, "border_dataset_sha256: ", *said)
    store = LedgerStore.open(url)
    try:
        with pytest.raises(InvalidArgument, match="between ARM and AZE") as info:
            initialize(store, envelope, LogKey(ORIGIN, k["log"]), borders)
        assert info.value.field == "border_dataset_sha256"
        assert store.tree_size() == 0
    finally:
        store.close()
