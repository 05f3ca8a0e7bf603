"""Transport security for the gRPC port: TLS, and the parties' client certificates.

Three ways to serve, chosen by what the operator gives:

- `cert` and `key` only: TLS. Anyone may connect; the server proves who it is.
- with `client_ca`: mutual TLS. Every call, read or write, needs a client certificate
  signed by a CA in that bundle; the handshake fails without one.
- with `client_ca` and `writes_need_client_cert`: reads stay public, writes need a client
  certificate. grpc Python can only refuse or require a client certificate for a whole port
  (`ssl_server_credentials(require_client_auth=...)`; it cannot ask for one optionally), so
  this mode serves two ports: the public one (TLS, no client certificate asked for), where
  Submit and SubmitWithBlobs are refused UNAUTHENTICATED by `check_writer`, and the writers'
  port (`writers_address`), where the handshake requires a certificate from `client_ca`.

A client certificate admits a connection; it does not speak for a party. What a statement
says, and for whom, is decided by its Ed25519 signatures (ledger.authz), as before.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ledger.errors import Unauthenticated

log = logging.getLogger(__name__)


class TlsFileError(ValueError):
    """A certificate or key file that cannot be used, named with the reason (one line)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsFileError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise TlsFileError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def read_certificates(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    """The PEM file's bytes and the certificates in it (at least one, none expired)."""
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsFileError(f"{path}: not a PEM certificate file ({what})") from None
    now = datetime.datetime.now(datetime.UTC)
    for cert in certs:
        if cert.not_valid_after_utc < now:
            raise TlsFileError(
                f"{path}: the certificate for {_subject(cert)} expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z ({what})"
            )
    return data, certs


def read_key_pair(cert: Path, key: Path, what: str) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM), checked to belong together."""
    chain, certs = read_certificates(cert, what)
    key_pem = _read(key, f"the private key of {what}")
    try:
        private: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsFileError(f"{key}: the private key is encrypted; give it unencrypted") from None
    except ValueError:
        raise TlsFileError(f"{key}: not a PEM private key ({what})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != certs[0].public_key().public_bytes(
        der, spki
    ):
        raise TlsFileError(
            f"{key}: this private key does not match the certificate in {cert} "
            f"({_subject(certs[0])})"
        )
    return chain, key_pem


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


class _Bindable(Protocol):
    """grpc.Server and grpc.aio.Server alike."""

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int: ...


class Ports(NamedTuple):
    public: int
    writers: int | None


@dataclass(frozen=True)
class TlsConfig:
    """The server's TLS material, PEM bytes as read (see the module docstring)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    writes_need_client_cert: bool = False
    # Where writers connect when writes need a client certificate (host:port).
    writers_address: str | None = None

    def __post_init__(self) -> None:
        if self.writes_need_client_cert and self.client_ca is None:
            raise TlsFileError(
                "writes can need a client certificate only with a client CA to check it "
                "(--tls-client-ca)"
            )
        if self.writes_need_client_cert and not self.writers_address:
            raise TlsFileError(
                "writes that need a client certificate need a port of their own "
                "(--listen-writers HOST:PORT): grpc Python cannot ask for a client "
                "certificate optionally on the public port"
            )
        if self.writers_address and not self.writes_need_client_cert:
            raise TlsFileError("a writers' port is only for --writes-need-client-cert")

    @classmethod
    def from_files(
        cls,
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        writes_need_client_cert: bool = False,
        *,
        writers_address: str | None = None,
    ) -> TlsConfig:
        """Read and check the files: readable, PEM, not expired, the key the certificate's."""
        chain, key_pem = read_key_pair(cert, key, "the server certificate")
        ca = read_certificates(client_ca, "the client CA")[0] if client_ca is not None else None
        return cls(chain, key_pem, ca, writes_need_client_cert, writers_address)

    @property
    def mutual(self) -> bool:
        """Every call on the public port needs a client certificate."""
        return self.client_ca is not None and not self.writes_need_client_cert

    def server_credentials(self) -> grpc.ServerCredentials:
        """For the public port: mutual TLS if there is a client CA and no writers' port,
        else TLS with no client certificate asked for."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def writer_credentials(self) -> grpc.ServerCredentials:
        """For the writers' port: the handshake requires a certificate from the client CA."""
        if self.client_ca is None:
            raise TlsFileError("a writers' port needs a client CA (--tls-client-ca)")
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=True,
        )

    def bind(self, server: _Bindable, address: str) -> Ports:
        """Add the public port at `address` and, if writes need a client certificate, the
        writers' port; the ports bound. Raises OSError if either cannot be bound."""
        port = server.add_secure_port(address, self.server_credentials())
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        writers = None
        if self.writes_need_client_cert:
            assert self.writers_address is not None
            writers = server.add_secure_port(self.writers_address, self.writer_credentials())
            if writers == 0:
                raise OSError(f"cannot listen on {self.writers_address}")
            host = self.writers_address.rsplit(":", 1)[0]
            log.info("writers' port (client certificate required): %s:%d", host, writers)
        return Ports(port, writers)

    def check_writer(self, auth_context: Mapping[str, Iterable[bytes]]) -> None:
        """Call first in every write RPC with `context.auth_context()`. When writes need a
        client certificate, refuse a connection that did not present one the handshake
        verified: grpc adds `x509_pem_cert` only then (on the writers' port, where the
        certificate is required and checked against the client CA; the public port never
        asks for one). `auth_context` as grpc.aio's ServicerContext.auth_context() gives it."""
        if not self.writes_need_client_cert:
            return
        tls = list(auth_context.get("transport_security_type", ())) == [b"ssl"]
        if not tls or not list(auth_context.get("x509_pem_cert", ())):
            raise Unauthenticated(
                "writes need a client certificate signed by the parties' CA: connect to the "
                "writers' port with --tls-cert and --tls-key"
            )


def peer_name(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The verified client certificate's common name, for the server log; None without one."""
    names = list(auth_context.get("x509_common_name", ()))
    return names[0].decode(errors="replace") if names else None
