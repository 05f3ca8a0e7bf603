"""The log's size as tailing streams see it, on the server's event loop.

Streams that have sent every entry wait here, holding no thread, until the log grows:
this replica's sequencer reports each commit (`committed`, from its thread), and one
shared check of the stored tree size every `poll_s` (only while some stream waits) finds
entries other replicas committed on the same database. So the database is asked once per
`poll_s` however many streams wait, never once per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class SizeWatch:
    def __init__(self, read_size: Callable[[], Awaitable[int]], poll_s: float = 0.5) -> None:
        """`read_size`: the stored tree size (awaited; it runs in the server's pool)."""
        self._read_size = read_size
        self.poll_s = poll_s
        self._size = 0
        self._grown = asyncio.Event()
        self._waiting = 0
        self._poller: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        # How many times the stored size was read for waiting streams (for tests and
        # metrics: it grows with time, not with the number of streams).
        self.polls = 0

    @property
    def size(self) -> int:
        return self._size

    def committed(self, size: int) -> None:
        """The log now holds `size` entries: safe to call from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self.seen, size)

    def seen(self, size: int) -> None:
        """The log holds at least `size` entries (on the loop's thread)."""
        if size > self._size:
            self._size = size
            self._grown.set()
            self._grown = asyncio.Event()

    async def wait_beyond(self, size: int, timeout_s: float) -> int:
        """The log's size once it exceeds `size`, or whatever it is after `timeout_s`."""
        if self._size > size:
            return self._size
        self._waiting += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while self._size <= size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._grown.wait()
            return self._size
        finally:
            self._waiting -= 1

    async def close(self) -> None:
        """Stop the shared check (the server is stopping)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        """While any stream waits: the stored size, every `poll_s`."""
        while self._waiting > 0:
            await asyncio.sleep(self.poll_s)
            if self._waiting == 0:
                return
            self.polls += 1
            try:
                self.seen(await self._read_size())
            except Exception:  # a failed read is tried again at the next poll
                continue
