"""What a log calls: add-checkpoint and the monitoring GET, over urllib.

The cosignatures in an accepted result are parsed, not verified: keep only those of the
witnesses you trust, with ledger.formats.cosignature.cosignatures() (the spec: ignore unknown keys).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ledger.formats.note import NoteSignature
from ledger.witness.protocol import (
    CONTENT_TYPE_SIZE,
    MAX_BODY,
    AddCheckpointRequest,
    ProtocolError,
    origin_hash,
    parse_conflict_body,
    parse_cosignature_body,
)

__all__ = ["AddResult", "WitnessError", "add_checkpoint", "get_checkpoint"]

_MAX_MESSAGE = 200


class WitnessError(Exception):
    """The witness could not be reached, or answered something unexpected."""


@dataclass(frozen=True)
class AddResult:
    """accepted: `cosignatures` holds the witness's signature lines.
    conflict (409): `size` is the size the witness has cosigned; retry from it.
    refused: any other answer, `status` and a short `message`.
    unreachable: no HTTP answer (connection refused, timeout, ...), `message` says why."""

    kind: Literal["accepted", "conflict", "refused", "unreachable"]
    cosignatures: tuple[NoteSignature, ...] = ()
    size: int | None = None
    status: int | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.kind == "accepted"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a GET elsewhere: report it as the answer instead.
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect())


def _url(prefix: str, path: str) -> str:
    return f"{prefix.rstrip('/')}/{path}"


def _short(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _exchange(request: urllib.request.Request, timeout: float) -> tuple[int, str, bytes]:
    """(status, content type, body) of any HTTP answer; WitnessError if there is none."""
    try:
        with _opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        with e:
            try:
                body = e.read(MAX_BODY + 1)
            except (OSError, http.client.HTTPException):
                body = b""
            return e.code, e.headers.get_content_type(), body
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise WitnessError(f"{request.full_url}: {reason}") from e


def add_checkpoint(
    url_prefix: str,
    old_size: int,
    proof: Sequence[bytes],
    signed_note: str,
    *,
    timeout: float = 10,
) -> AddResult:
    """Ask the witness at `url_prefix` (its submission prefix, e.g. http://host:port) to
    cosign `signed_note`, proven consistent with the size it cosigned last (`old_size`, 0
    if never or unknown: a conflict then tells the size)."""
    body = AddCheckpointRequest(old_size, list(proof), signed_note).to_body()
    request = urllib.request.Request(
        _url(url_prefix, "add-checkpoint"),
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    try:
        status, content_type, answer = _exchange(request, timeout)
    except WitnessError as e:
        return AddResult("unreachable", message=str(e))
    try:
        if status == 200:
            return AddResult("accepted", tuple(parse_cosignature_body(answer)), status=200)
        if status == 409 and content_type == CONTENT_TYPE_SIZE:
            return AddResult("conflict", size=parse_conflict_body(answer), status=409)
    except ProtocolError as e:
        return AddResult("refused", status=status, message=f"malformed answer: {e}")
    return AddResult("refused", status=status, message=_short(answer))


def get_checkpoint(url_prefix: str, origin: str, *, timeout: float = 10) -> str | None:
    """The witness's latest cosigned checkpoint of the log (a signed note, with the log's
    signatures and the witness's cosignature; not verified here), or None if it has none.
    `url_prefix` is the witness's monitoring prefix."""
    request = urllib.request.Request(_url(url_prefix, f"{origin_hash(origin)}/checkpoint"))
    status, _, body = _exchange(request, timeout)
    if status == 404:
        return None
    if status != 200:
        raise WitnessError(f"{request.full_url}: HTTP {status}: {_short(body)}")
    if len(body) > MAX_BODY:
        raise WitnessError(f"{request.full_url}: answer over {MAX_BODY} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessError(f"{request.full_url}: answer is not UTF-8") from None
