"""The single writer: verified submissions queue here and are committed in groups.

Handlers verify concurrently, then wait on a future. One thread drains the queue into
batches of up to `max_batch` (waiting at most `linger_s` for a batch to fill) and commits
each batch in one transaction, so a flush to disk is shared by the whole batch. A future
resolves only after its batch is committed. A full queue refuses at once (back-pressure)
instead of growing without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from ledger.errors import LedgerError, Overloaded

log = logging.getLogger(__name__)

# What is queued, and what its commit gives back (storage's Item and Result): the
# sequencer knows nothing of SQL.
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class SequencerStats:
    batches: int = 0
    entries: int = 0
    largest_batch: int = 0


class Sequencer(Generic[Item, Result]):
    def __init__(
        self,
        append: Callable[[Sequence[Item]], list[Result | LedgerError]],
        *,
        max_batch: int = 256,
        max_queue: int = 4096,
        linger_s: float = 0.0,
    ) -> None:
        self._append = append
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: queue.Queue[tuple[Item, Future[Result]] | None] = queue.Queue(
            maxsize=max_queue
        )
        self._thread = threading.Thread(target=self._run, name="sequencer", daemon=True)
        self.stats = SequencerStats()
        self.in_flight = 0  # submissions in the batch being committed now
        self._thread.start()

    def submit(self, item: Item) -> Future[Result]:
        future: Future[Result] = Future()
        try:
            self._queue.put_nowait((item, future))
        except queue.Full:
            raise Overloaded("the ledger is busy; retry shortly", retry_after_s=1.0) from None
        return future

    @property
    def pending(self) -> int:
        """Submissions queued and not yet taken into a batch."""
        return self._queue.qsize()

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self._linger_s
            stop = False
            while len(batch) < self._max_batch:
                try:
                    remaining = deadline - time.monotonic()
                    nxt = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        self.in_flight = len(batch)
        try:
            results = self._append([item for item, _ in batch])
        except BaseException as e:  # every waiter must hear, whatever went wrong
            log.exception("batch of %d failed; nothing of it was committed", len(batch))
            for _, future in batch:
                future.set_exception(e)
            return
        finally:
            self.in_flight = 0
        self.stats.batches += 1
        self.stats.entries += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, LedgerError):
                future.set_exception(result)  # refused at its index; it took none
            else:
                future.set_result(result)
