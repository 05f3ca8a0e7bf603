"""The witness: tlog-witness's add-checkpoint rules, the monitoring endpoint, and an HTTP
service for them (stdlib http.server: HTTP/1.1 keep-alive, bounded bodies, timeouts, a cap
on connections, no tracebacks to clients).

    POST <prefix>/add-checkpoint
    GET  <prefix>/<lowercase hex SHA-256 of the origin>/checkpoint
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ledger.formats.cosignature import MAX_TIMESTAMP, CosignatureSigner, CosignatureVerifier
from ledger.formats.merkle import EMPTY_ROOT, ProofError, verify_consistency
from ledger.formats.note import Checkpoint, NoteError, NoteVerifier, open_note
from ledger.witness.protocol import (
    CONTENT_TYPE_SIZE,
    MAX_BODY,
    AddCheckpointRequest,
    ProtocolError,
    conflict_body,
    cosignature_body,
    origin_hash,
)
from ledger.witness.state import LogState, WitnessState

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_TREE_SIZE",
    "Response",
    "Witness",
    "WitnessHTTPServer",
    "serve",
]

log = logging.getLogger(__name__)

# Sizes are kept as SQLite INTEGERs (signed 64-bit), as golang.org/x/mod/sumdb/tlog keeps
# them (int64): a larger checkpoint is refused as malformed.
MAX_TREE_SIZE = 2**63 - 1
TEXT = "text/plain; charset=utf-8"
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 15.0  # each read on a connection, and an idle keep-alive connection
BODY_DEADLINE_S = 30.0  # the whole body, however slowly it trickles in


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT


def _text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


class Witness:
    """Cosigns checkpoints of known logs that are consistent with the last one it cosigned."""

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Mapping[str, Sequence[NoteVerifier]],
        state: WitnessState,
    ) -> None:
        for origin, verifiers in logs.items():
            if not verifiers:
                raise ValueError(f"log {origin!r}: no public key")
        self.signer = signer
        self.logs = {origin: list(vs) for origin, vs in logs.items()}
        self.state = state
        self._by_hash = {origin_hash(o): o for o in self.logs}

    @property
    def verifier(self) -> CosignatureVerifier:
        return self.signer.verifier

    def add_checkpoint(self, body: bytes, now: int) -> Response:
        """tlog-witness add-checkpoint, its checks in the spec's order; `now` (POSIX seconds)
        is the cosignature's timestamp. The new state is committed before returning 200."""
        if not 0 < now <= MAX_TIMESTAMP:
            raise ValueError(f"cosignature time {now} out of range")
        try:
            request = AddCheckpointRequest.parse(body)
            text, checkpoint, _ = request.parsed()
        except ProtocolError as e:
            return _text(400, str(e))
        if checkpoint.size > MAX_TREE_SIZE:
            return _text(400, f"tree size over {MAX_TREE_SIZE}")
        if request.old_size > checkpoint.size:
            return _text(
                400, f"old size {request.old_size} above checkpoint size {checkpoint.size}"
            )
        verifiers = self.logs.get(checkpoint.origin)
        if verifiers is None:
            return _text(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            opened = open_note(request.checkpoint, verifiers)
        except NoteError as e:  # no trusted signature, or a trusted key's that fails
            return _text(403, f"checkpoint signature: {e}")
        with self.state.transaction(checkpoint.origin) as tx:
            known = tx.current.size if tx.current is not None else 0
            if request.old_size != known:
                return Response(409, conflict_body(known), CONTENT_TYPE_SIZE)
            current = tx.current
            if (
                current is not None
                and checkpoint.size == current.size != 0
                and checkpoint.root_hash != current.root_hash
            ):
                # tlog-witness: the same size with another root is a 409 Conflict (as
                # litewitness and transparency-dev/witness answer), with the size held.
                # Two roots signed for one size: kept as evidence of a fork.
                conflict = f"another root for the cosigned size {current.size}"
                tx.refuse(now, 409, conflict, body)
                return Response(409, conflict_body(known), CONTENT_TYPE_SIZE)
            reason = _inconsistency(request, checkpoint, tx.current)
            if reason is not None:
                # The log signed it: kept as possible evidence of a fork, never cosigned.
                tx.refuse(now, 422, reason, body)
                return _text(422, reason)
            cosignature = self.signer.cosign(text, now)
            lines = "".join(s.line() for s in (*opened.verified, cosignature))
            note = f"{text}\n{lines}"
            tx.store(LogState(checkpoint.origin, checkpoint.size, checkpoint.root_hash, note, now))
        return Response(200, cosignature_body([cosignature]))

    def get_checkpoint(self, origin_hex: str) -> Response:
        """The last cosigned checkpoint of the log whose origin hashes to `origin_hex`, with
        the log signatures the witness verified and its cosignature."""
        origin = self._by_hash.get(origin_hex)
        stored = self.state.get(origin) if origin is not None else None
        if stored is None:
            return _text(404, "no checkpoint cosigned for this log")
        return Response(200, stored.checkpoint.encode())


def _inconsistency(
    request: AddCheckpointRequest, checkpoint: Checkpoint, stored: LogState | None
) -> str | None:
    """Why the checkpoint is not consistent with the stored one (old size already matches
    the stored size), or None."""
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
        return "a tree of size 0 must have the empty tree's root hash"
    if request.old_size == 0:
        if request.proof:
            return "old size 0 takes an empty consistency proof"
        return None
    assert stored is not None and stored.size == request.old_size
    try:
        verify_consistency(
            stored.size, checkpoint.size, stored.root_hash, checkpoint.root_hash, request.proof
        )
    except ProofError as e:
        return f"not consistent with the cosigned checkpoint of size {stored.size}: {e}"
    return None


# -- HTTP --------------------------------------------------------------------------------

_CHECKPOINT_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    server_version = "ceasefire-witness"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    server: WitnessHTTPServer

    def do_POST(self) -> None:
        self._guard(self._post)

    def do_GET(self) -> None:
        self._guard(self._get)

    def _guard(self, handle: Callable[[], None]) -> None:
        try:
            handle()
        except Exception:
            # Logged here; the client learns only that it failed.
            log.exception("witness: %s %s failed", self.command, self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(_text(500, "internal error"))

    def _route(self) -> str | None:
        prefix = self.server.prefix
        path = self.path.split("?", 1)[0]
        if not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) :]

    def _post(self) -> None:
        route = self._route()
        if route != "/add-checkpoint":
            self._refuse_method_or_missing(route, "GET")
            return
        body = self._read_body()
        if body is None:
            return
        self._send(self.server.witness.add_checkpoint(body, self.server.clock()))

    def _get(self) -> None:
        route = self._route()
        m = _CHECKPOINT_PATH.fullmatch(route or "")
        if m is None:
            self._refuse_method_or_missing(route, "POST")
            return
        self._send(self.server.witness.get_checkpoint(m.group(1)))

    def _refuse_method_or_missing(self, route: str | None, other: str) -> None:
        known = route == "/add-checkpoint" or _CHECKPOINT_PATH.fullmatch(route or "")
        if known:
            self._send(_text(405, f"use {other}"), [("Allow", other)])
        else:
            self._send(_text(404, "not found"))

    def _read_body(self) -> bytes | None:
        """The request body, or None having answered (or dropped) a bad one."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._send(_text(411, "send the body with a Content-Length"))
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.isascii() or not length.isdigit():
            self.close_connection = True
            self._send(_text(411, "a Content-Length is required"))
            return None
        n = int(length) if len(length) <= 20 else MAX_BODY + 1
        if n > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection is unusable
            self._send(_text(413, f"request body over {MAX_BODY} bytes"))
            return None
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        try:
            while n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(min(left, IDLE_TIMEOUT_S))
                chunk = self.rfile.read1(n)
                if not chunk:
                    raise ConnectionError("client closed the connection")
                chunks.append(chunk)
                n -= len(chunk)
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # a slow or gone client gets no answer
            return None
        finally:
            self.connection.settimeout(IDLE_TIMEOUT_S)
        return b"".join(chunks)

    def _send(self, response: Response, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("witness: %s %s", self.address_string(), format % args)


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 18\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many requests\n"
)


class WitnessHTTPServer(ThreadingHTTPServer):
    """The witness over HTTP: one thread per connection, at most `max_connections`."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        witness: Witness,
        *,
        prefix: str = "",
        max_connections: int = MAX_CONNECTIONS,
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"URL prefix {prefix!r}: start with '/', no trailing '/'")
        self.witness = witness
        self.prefix = prefix
        self.clock = clock
        self._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer's would look the host name up (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.port

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The submission (and monitoring) prefix as a URL."""
        host = str(self.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.prefix}"

    def process_request(self, request: Any, client_address: Any) -> None:
        # A full server answers 503 at once, rather than start threads without bound.
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("witness: connection from %s failed", client_address)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits for one poll
            name="witness-http",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket. Connection threads are daemons:
        an idle keep-alive client does not hold the shutdown up."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def serve(
    witness: Witness, host: str, port: int, *, prefix: str = "", max_connections: int = 64
) -> WitnessHTTPServer:
    """Bind (port 0: any free port); call .start() to serve in a thread, .stop() to end."""
    return WitnessHTTPServer(host, port, witness, prefix=prefix, max_connections=max_connections)
