"""The log asks its witnesses to cosign each new checkpoint (C2SP tlog-witness, the
client side), and keeps the cosignatures they return to serve after its own signature.

A thread follows the newest checkpoint. For each witness it sends add-checkpoint with the
size the witness last cosigned and a consistency proof from there; a 409 tells the size
the witness holds (another replica fed it, or the log restarted), and the request is made
again from that size. Answers are kept only as far as they verify against the witness keys
of the trust state; a witness that refuses or cannot be reached is retried with a growing
delay, and what went wrong is shown in GetCheckpoint: never skipped in silence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger import witnesses
from ledger.storage import Cosignature, StoredCheckpoint
from ledger.witness import client as witness_client

if TYPE_CHECKING:
    from ledger.service import Ledger

log = logging.getLogger(__name__)

POLL_S = 0.25
TIMEOUT_S = 10.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class WitnessStatus:
    url: str
    cosigned_size: int = 0  # the largest checkpoint it is known to have cosigned
    error: str = ""  # why the last request failed; empty when it succeeded


class WitnessFeed:
    """Feeds the checkpoints of `ledger` to the witnesses at `urls` until closed."""

    def __init__(
        self,
        ledger: Ledger,
        urls: Sequence[str],
        *,
        poll_s: float = POLL_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in urls))
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._status = {u: WitnessStatus(u) for u in self.urls}
        self._retry_at = dict.fromkeys(self.urls, 0.0)
        self._backoff = dict.fromkeys(self.urls, FIRST_BACKOFF_S)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="witness-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 1)

    def wake(self) -> None:
        """A new checkpoint is there: feed it now rather than at the next poll."""
        self._wake.set()

    def statuses(self) -> list[WitnessStatus]:
        return [self._status[u] for u in self.urls]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.feed_once()
            except Exception:  # the feed must outlive a database hiccup
                log.exception("witness feed: could not read the newest checkpoint")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def feed_once(self) -> None:
        """Offer the newest checkpoint to every witness that is due and behind it."""
        cp = self.ledger.checkpoint()
        for url in self.urls:
            if self._stop.is_set():
                return
            if self._status[url].cosigned_size >= cp.size and not self._status[url].error:
                continue
            if self._clock() < self._retry_at[url]:
                continue
            error = self._offer(url, cp)
            if error:
                self._status[url] = WitnessStatus(url, self._status[url].cosigned_size, error)
                self._retry_at[url] = self._clock() + self._backoff[url]
                self._backoff[url] = min(self._backoff[url] * 2, MAX_BACKOFF_S)
                log.warning("witness %s: %s", url, error)
            else:
                self._backoff[url] = FIRST_BACKOFF_S

    def _offer(self, url: str, cp: StoredCheckpoint) -> str:
        """Send `cp` to the witness at `url`; "" once it is cosigned (or the witness holds a
        larger checkpoint already), else what went wrong."""
        old = self._status[url].cosigned_size
        for _ in range(2):  # a 409 tells the witness's size: once more from there
            if old > cp.size:
                # Another replica may have fed it a newer checkpoint since `cp` was read;
                # beyond this log's newest one, it was shown a history this log never
                # signed in its database (a fork, or the database rolled back).
                newest = self.ledger.checkpoint().size
                if old > newest:
                    return (
                        f"it holds size {old}, beyond this log's newest checkpoint "
                        f"({newest}): it was shown another history, or this log's "
                        "database was rolled back"
                    )
                return ""  # it cosigned a newer checkpoint (fed by another replica)
            proof = self.ledger.store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
            result = witness_client.add_checkpoint(url, old, proof, cp.note, timeout=self.timeout_s)
            if result.kind == "conflict" and result.size is not None:
                old = result.size
                self._status[url] = WitnessStatus(url, old, "")
                continue
            if result.kind == "unreachable":
                return f"unreachable: {result.message}"
            if not result.accepted:
                return f"refused: HTTP {result.status}: {result.message}"
            answer = cp.note + "".join(sig.line() for sig in result.cosignatures)
            try:
                found = witnesses.cosigned_lines(answer, self.ledger.trust)
            except ValueError as e:
                return f"its cosignature does not verify: {e}"
            if not found:
                return "it answered with no cosignature by a witness key of the trust root"
            self.ledger.store.add_cosignatures(
                cp.size, [Cosignature(kid, line, t) for kid, (line, t) in found.items()]
            )
            self._status[url] = WitnessStatus(url, cp.size, "")
            return ""
        return f"it holds size {old}, which the log cannot prove consistent"
