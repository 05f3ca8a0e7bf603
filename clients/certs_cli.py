"""`ceasefire certs`: TLS certificates for trying TLS and client certificates out.

A throwaway CA (ca.pem, ca.key), a server certificate for the given hosts (server.pem,
server.key) and a client certificate per --client NAME (NAME.pem, NAME.key), all signed by
that CA, ECDSA P-256, valid for 90 days. These are for testing: in production the server's
certificate and the parties' client certificates come from the parties' own CA.

Nothing is overwritten: a CA already in the folder is reused (to add clients later), a
server certificate already there is kept, and a client name already taken is refused.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=90)
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
RESERVED = ("ca", "server")


class CertsError(ValueError):
    pass


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    with path.open("xb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ceasefire Ledger test certificates"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _key_usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str
) -> tuple[x509.CertificateBuilder, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(_name(common_name), ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certificates=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder, key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not HOST_NAME.match(host):
        raise CertsError(f"--host {host!r}: not an IP address or a DNS name")
    return x509.DNSName(host)


def _load_ca(cert: Path, key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate(cert.read_bytes())
        ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CertsError(f"{cert}, {key}: cannot use this CA ({e})") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{key}: not the EC key `ceasefire certs` writes")
    return ca, ca_key


def make_test_certs(
    out: Path, hosts: Sequence[str] = DEFAULT_HOSTS, clients: Sequence[str] = ()
) -> list[Path]:
    """Write the CA (unless there), the server certificate (unless there) and each client's
    certificate into `out`; the files written."""
    for name in clients:
        if not CLIENT_NAME.match(name) or name in RESERVED:
            raise CertsError(
                f"--client {name!r}: a name is 1-64 letters, digits, '.', '_' or '-', "
                f"and not {' or '.join(RESERVED)}"
            )
    if len(set(clients)) != len(clients):
        raise CertsError("a --client name is given twice")
    sans = [_san(h) for h in hosts]
    if not sans:
        raise CertsError("give at least one --host")
    out.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key_pem = out / "ca.pem", out / "ca.key"
    server_pem, server_key = out / "server.pem", out / "server.key"
    for name in clients:
        for taken in (out / f"{name}.pem", out / f"{name}.key"):
            if taken.exists():
                raise CertsError(f"{taken} exists; refusing to overwrite it (choose another name)")
    written: list[Path] = []
    if ca_pem.exists() or ca_key_pem.exists():
        ca, ca_key = _load_ca(ca_pem, ca_key_pem)
    else:
        for stray in (server_pem, server_key):
            if stray.exists():
                raise CertsError(f"{stray} exists without the CA that signed it ({ca_pem})")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = _name("Ceasefire Ledger test CA (not for production)")
        ca = (
            _builder(subject, subject, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(sign_certificates=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key_pem, ca_key)
        _write_cert(ca_pem, ca)
        written += [ca_pem, ca_key_pem]
    if not (server_pem.exists() or server_key.exists()):
        builder, key = _leaf(ca, ca_key, hosts[0])
        cert = (
            builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(server_key, key)
        _write_cert(server_pem, cert)
        written += [server_pem, server_key]
    for name in clients:
        builder, key = _leaf(ca, ca_key, name)
        cert = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        ).sign(ca_key, hashes.SHA256())
        _write_key(out / f"{name}.key", key)
        _write_cert(out / f"{name}.pem", cert)
        written += [out / f"{name}.pem", out / f"{name}.key"]
    return written


def cmd_certs(args: argparse.Namespace) -> int:
    out: Path = args.dir
    hosts: list[str] = args.host or list(DEFAULT_HOSTS)
    clients: list[str] = args.client or []
    written = make_test_certs(out, hosts, clients)
    if args.json:
        doc = {
            "written": [str(p) for p in written],
            "ca": str(out / "ca.pem"),
            "server": {"cert": str(out / "server.pem"), "key": str(out / "server.key")},
            "clients": {
                name: {"cert": str(out / f"{name}.pem"), "key": str(out / f"{name}.key")}
                for name in clients
            },
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"wrote {', '.join(str(p) for p in written) or 'nothing'}")
    print(
        "These are TEST certificates from a throwaway CA (valid 90 days). In production the "
        "server's certificate and the parties' client certificates come from the parties' "
        f"own CA. Keep {out / 'ca.key'} secret, or delete it once every certificate is made."
    )
    ca, srv = out / "ca.pem", out / "server.pem"
    host = f"[{hosts[0]}]" if ":" in hosts[0] else hosts[0]
    writers = f"{host}:50052"
    print("\nServe with TLS (anyone who trusts ca.pem reads and writes):")
    print(f"  ceasefire serve --tls-cert {srv} --tls-key {out / 'server.key'}")
    print("Or: reads public, writes only with a client certificate from this CA:")
    print(
        f"  ceasefire serve --tls-cert {srv} --tls-key {out / 'server.key'} "
        f"--tls-client-ca {ca} --writes-need-client-cert --listen-writers {writers}"
    )
    print(f"Every client command (or set CEASEFIRE_TLS_CA={ca} once):")
    print(f"  ceasefire checkpoint --tls-ca {ca}")
    names = clients or ["NAME"]
    print("A writer presents its client certificate to the writers' port:")
    print(
        f"  ceasefire submit --server {writers} --tls-ca {ca} --tls-cert {out / names[0]}.pem "
        f"--tls-key {out / names[0]}.key --key KEY REPORT.yaml"
    )
    print(f"  (or CEASEFIRE_TLS_CERT={out / names[0]}.pem CEASEFIRE_TLS_KEY={out / names[0]}.key)")
    return 0


def add_parsers(sub: Any) -> None:
    what = "make TEST TLS certificates: a throwaway CA, a server and client certificates"
    sp = sub.add_parser(
        "certs",
        help=what,
        description=f"{what}. For testing only: in production the server's and the parties' "
        "certificates come from the parties' own CA. Nothing is overwritten: a CA already in "
        "DIR is reused (to add clients later), a server certificate already there is kept.",
    )
    sp.add_argument("--dir", type=Path, required=True, help="folder to write them to")
    sp.add_argument(
        "--host",
        action="append",
        help="a name or IP address the server certificate is for (repeatable; default "
        f"{' and '.join(DEFAULT_HOSTS)})",
    )
    sp.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="make a client certificate NAME.pem/NAME.key (repeatable)",
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_certs)
