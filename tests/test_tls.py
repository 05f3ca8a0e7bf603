"""Transport security: TLS on the port, and client certificates for writes (ledger.tls).

Certificates are made with `ceasefire certs`, as a user would; the server is the real one
(`build_server(..., tls=...)`) on loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from clients.cli import UsageError, build_parser, main, tls_from_args
from clients.client import ClientTls, LedgerClient
from geo.borders import BorderDataset
from ledger import errors, keys
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore
from ledger.tls import TlsConfig, TlsFileError, peer_name
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folders from `ceasefire certs`: ours (a CA, the server, two field teams) and
    another CA's (a server and a client certificate nobody here trusts)."""
    root = tmp_path_factory.mktemp("certs")
    assert main(["certs", "--dir", str(root / "ours"), "--client", "arm-field"]) == 0
    assert main(["certs", "--dir", str(root / "ours"), "--client", "aze-field"]) == 0
    assert main(["certs", "--dir", str(root / "other"), "--client", "intruder"]) == 0
    return root


def client_tls(certs: Path, ca: str = "ours", client: tuple[str, str] | None = None) -> ClientTls:
    """Trusting `ca`'s CA; presenting `client` (folder, name) if given."""
    if client is None:
        return ClientTls.from_files(certs / ca / "ca.pem")
    folder, name = client
    return ClientTls.from_files(
        certs / ca / "ca.pem", certs / folder / f"{name}.pem", certs / folder / f"{name}.key"
    )


@dataclass
class Served:
    ledger: Ledger
    address: str
    writers: str | None


@pytest.fixture
def ledger(tmp_path: Path, parties: Parties, borders: BorderDataset) -> Iterator[Ledger]:
    store = LedgerStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders)
    yield ledger
    ledger.close()
    store.close()


@pytest.fixture
def serve(ledger: Ledger) -> Iterator[Callable[[TlsConfig], Served]]:
    """A real server (build_server) with the TLS given; its public and writers' ports."""
    servers: list[LedgerServer] = []

    def start(tls: TlsConfig) -> Served:
        server, port = build_server(ledger, "127.0.0.1:0", tls=tls)
        server.start()
        servers.append(server)
        writers = f"127.0.0.1:{server.writers_port}" if server.writers_port else None
        return Served(ledger, f"127.0.0.1:{port}", writers)

    yield start
    for server in servers:
        server.stop(grace=None).wait()


def tls_config(certs: Path, **kw: Any) -> TlsConfig:
    ours = certs / "ours"
    return TlsConfig.from_files(ours / "server.pem", ours / "server.key", **kw)


def writes_need_client_cert(certs: Path) -> TlsConfig:
    return tls_config(
        certs,
        client_ca=certs / "ours" / "ca.pem",
        writes_need_client_cert=True,
        writers_address="127.0.0.1:0",
    )


def refused(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    code = error.code()
    assert isinstance(code, grpc.StatusCode)
    return code


# -- the certificates -------------------------------------------------------------------


def test_certs_makes_a_ca_a_server_certificate_and_client_certificates(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = certs / "ours"
    ca = x509.load_pem_x509_certificate((ours / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((ours / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    for name in ("arm-field", "aze-field"):  # the second run reused the CA
        client = x509.load_pem_x509_certificate((ours / f"{name}.pem").read_bytes())
        client.verify_directly_issued_by(ca)
        assert (ours / f"{name}.key").stat().st_mode & 0o077 == 0
    other = x509.load_pem_x509_certificate((certs / "other" / "ca.pem").read_bytes())
    assert other.public_key() != ca.public_key()

    assert main(["certs", "--dir", str(ours), "--client", "arm-field"]) == 2  # never overwrites
    assert "arm-field.pem exists" in capsys.readouterr().err
    assert main(["certs", "--dir", str(certs / "x"), "--host", "a b"]) == 2
    assert main(["certs", "--dir", str(certs / "y"), "--client", "arm"]) == 0
    out = capsys.readouterr().out
    assert "TEST certificates" in out and "parties' own CA" in out
    assert f"--tls-client-ca {certs / 'y' / 'ca.pem'} --writes-need-client-cert" in out


# -- TLS --------------------------------------------------------------------------------


def test_a_client_trusting_the_ca_reads_and_writes_over_tls(
    certs: Path, serve: Callable[[TlsConfig], Served], parties: Parties
) -> None:
    served = serve(tls_config(certs))
    with LedgerClient(served.address, tls=client_tls(certs)) as client:
        client.wait_ready()
        assert client.checkpoint().tree_size == 1
        # Without a client CA, writes need no client certificate: TLS only.
        assert client.submit(signed(report(), parties.arm_monitor)).receipt.index == 1


def test_a_plaintext_client_cannot_talk_to_a_tls_port(
    certs: Path, serve: Callable[[TlsConfig], Served]
) -> None:
    served = serve(tls_config(certs))
    with LedgerClient(served.address, timeout_s=5) as client:
        assert refused(client.checkpoint) == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_another_ca_cannot_connect(
    certs: Path, serve: Callable[[TlsConfig], Served]
) -> None:
    served = serve(tls_config(certs))
    with LedgerClient(served.address, tls=client_tls(certs, "other"), timeout_s=5) as client:
        assert refused(client.checkpoint) == grpc.StatusCode.UNAVAILABLE
    with LedgerClient(served.address, tls=client_tls(certs)) as client:  # the same port
        assert client.checkpoint().tree_size == 1


# -- client certificates ----------------------------------------------------------------


def test_reads_stay_public_and_writes_need_a_client_certificate_from_the_ca(
    certs: Path, serve: Callable[[TlsConfig], Served], parties: Parties
) -> None:
    served = serve(writes_need_client_cert(certs))
    assert served.writers is not None
    envelope = signed(report(), parties.arm_monitor)
    # The public port: anyone who trusts the CA reads; a write is refused, and adds nothing.
    with LedgerClient(served.address, tls=client_tls(certs)) as reader:
        assert reader.checkpoint().tree_size == 1
        assert refused(lambda: reader.submit(envelope)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            refused(lambda: reader.submit_with_blobs(envelope, {"blob": b"x"}))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert reader.checkpoint().tree_size == 1
    # A client certificate is not asked for on the public port (grpc Python cannot ask for
    # one optionally), so presenting one there does not make a write.
    team = client_tls(certs, client=("ours", "arm-field"))
    with LedgerClient(served.address, tls=team) as client:
        assert refused(lambda: client.submit(envelope)) == grpc.StatusCode.UNAUTHENTICATED
    # The writers' port: a field team's certificate from the CA; reads work there too.
    with LedgerClient(served.writers, tls=team) as writer:
        assert writer.submit(envelope).receipt.index == 1
        assert writer.checkpoint().tree_size == 2


def test_the_writers_port_refuses_the_handshake_without_a_certificate_from_the_ca(
    certs: Path, serve: Callable[[TlsConfig], Served], parties: Parties
) -> None:
    served = serve(writes_need_client_cert(certs))
    assert served.writers is not None
    envelope = signed(report(), parties.arm_monitor)
    for tls in (
        client_tls(certs),  # no client certificate
        client_tls(certs, client=("other", "intruder")),  # one from another CA
    ):
        with LedgerClient(served.writers, tls=tls, timeout_s=5) as client:
            assert refused(partial(client.submit, envelope)) == grpc.StatusCode.UNAVAILABLE
    assert served.ledger.checkpoint().size == 1


def test_a_client_ca_alone_makes_every_call_need_a_client_certificate(
    certs: Path, serve: Callable[[TlsConfig], Served]
) -> None:
    served = serve(tls_config(certs, client_ca=certs / "ours" / "ca.pem"))
    assert served.writers is None
    with LedgerClient(served.address, tls=client_tls(certs), timeout_s=5) as client:
        assert refused(client.checkpoint) == grpc.StatusCode.UNAVAILABLE
    team = client_tls(certs, client=("ours", "aze-field"))
    with LedgerClient(served.address, tls=team) as client:
        assert client.checkpoint().tree_size == 1


def test_check_writer_needs_a_verified_client_certificate(certs: Path) -> None:
    tls = writes_need_client_cert(certs)
    with_cert = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"arm-field"],
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----..."],
    }
    tls.check_writer(with_cert)
    assert peer_name(with_cert) == "arm-field"
    for context in ({}, {"transport_security_type": [b"ssl"]}, {"x509_pem_cert": [b"..."]}):
        with pytest.raises(errors.Unauthenticated, match="client certificate"):
            tls.check_writer(context)
    tls_config(certs).check_writer({})  # writes need no certificate: nothing to check


# -- the command ------------------------------------------------------------------------


def test_every_client_command_takes_the_tls_options_and_their_variables(
    certs: Path,
    serve: Callable[[TlsConfig], Served],
    parties: Parties,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served = serve(writes_need_client_cert(certs))
    assert served.writers is not None
    ours = certs / "ours"
    ca = str(ours / "ca.pem")
    assert main(["checkpoint", "--server", served.address, "--json"]) == 4  # plaintext
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main(["checkpoint", "--server", served.address, "--tls-ca", ca, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tree_size"] == 1

    statement = tmp_path / "report.json"
    statement.write_bytes(signed(report(), parties.arm_monitor))
    assert main(["submit", "--server", served.address, "--tls-ca", ca, str(statement)]) == 1
    assert "UNAUTHENTICATED: writes need a client certificate" in capsys.readouterr().err
    # A field team sets its files once, in the environment.
    monkeypatch.setenv("CEASEFIRE_TLS_CA", ca)
    monkeypatch.setenv("CEASEFIRE_TLS_CERT", str(ours / "arm-field.pem"))
    monkeypatch.setenv("CEASEFIRE_TLS_KEY", str(ours / "arm-field.key"))
    assert main(["submit", "--server", served.writers, str(statement)]) == 0
    assert "entry 1" in capsys.readouterr().out
    # A signed command's own submit (clients.signing) goes the same way.
    key_file = tmp_path / "aze-authority.key"
    keys.write_private(key_file, parties.aze_authority)
    answer = ["answer", "1", "--party", "AZE", "--kind", "denial", "--narrative", "No."]
    assert main([*answer, "--key", str(key_file), "--server", served.writers]) == 0
    assert "entry 2" in capsys.readouterr().out
    assert main(["timeline", "--server", served.address, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1

    # Every subcommand that has --server has the TLS options too.
    parser = build_parser()
    for command in ("submit", "timeline", "verify", "export", "dossier", "answer"):
        args = parser.parse_args([command, *_required(command)])
        assert str(args.tls_ca) == ca and str(args.tls_cert).endswith("arm-field.pem")


def _required(command: str) -> list[str]:
    return {
        "submit": ["x.json"],
        "dossier": ["1"],
        "answer": ["1", "--party", "AZE", "--kind", "denial", "--narrative", "x", "--key", "k"],
        "export": ["--out", "x"],
    }.get(command, [])


def test_files_that_cannot_be_used_are_named_in_one_line(
    certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, other = certs / "ours", certs / "other"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: TlsConfig.from_files(ours / "nope.pem", ours / "server.key"), "no such file"),
        (lambda: TlsConfig.from_files(garbage, ours / "server.key"), "not a PEM certificate"),
        (lambda: TlsConfig.from_files(ours / "server.pem", garbage), "not a PEM private key"),
        (
            lambda: TlsConfig.from_files(ours / "server.pem", other / "server.key"),
            "does not match the certificate",
        ),
        (
            lambda: TlsConfig.from_files(ours / "server.pem", ours / "server.key", garbage),
            "not a PEM certificate file (the client CA)",
        ),
        (
            lambda: TlsConfig.from_files(ours / "server.pem", ours / "server.key", None, True),
            "only with a client CA",
        ),
        (
            lambda: tls_config(certs, client_ca=ours / "ca.pem", writes_need_client_cert=True),
            "--listen-writers",
        ),
        (lambda: ClientTls.from_files(ours / "ca.pem", ours / "arm-field.pem"), "--tls-key"),
        (
            lambda: ClientTls.from_files(ours / "ca.pem", ours / "arm-field.pem", ours / "ca.key"),
            "does not match",
        ),
    ]
    for make, message in cases:
        with pytest.raises(TlsFileError, match=re.escape(message)) as caught:
            make()
        assert "\n" not in str(caught.value)

    # The command prints them and exits 2, before connecting anywhere.
    assert main(["checkpoint", "--tls-cert", str(ours / "arm-field.pem")]) == 2
    assert "need --tls-ca" in capsys.readouterr().err
    assert main(["checkpoint", "--tls-ca", str(tmp_path / "missing.pem")]) == 2
    assert "missing.pem: no such file" in capsys.readouterr().err


def test_serve_options_make_the_tls_config(certs: Path) -> None:
    ours = certs / "ours"
    parser = build_parser()

    def config(*flags: str) -> TlsConfig | None:
        return tls_from_args(parser.parse_args(["serve", *flags]))

    assert config() is None
    server = ["--tls-cert", str(ours / "server.pem"), "--tls-key", str(ours / "server.key")]
    plain = config(*server)
    assert plain is not None and plain.client_ca is None and not plain.mutual
    split = config(
        *server,
        "--tls-client-ca", str(ours / "ca.pem"),
        "--writes-need-client-cert",
        "--listen-writers", "127.0.0.1:0",
    )  # fmt: skip
    assert split is not None and split.writes_need_client_cert and not split.mutual
    with pytest.raises(UsageError, match="only with --tls-cert and --tls-key"):
        config("--tls-client-ca", str(ours / "ca.pem"))
    with pytest.raises(UsageError, match="both --tls-cert and --tls-key"):
        config("--tls-cert", str(ours / "server.pem"))
