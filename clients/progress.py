"""A progress line for long work (verify, export, sync, border registration): entries done
of the total, the rate and the time left.

On a terminal the line is redrawn in place, at most a few times a second; written to a
file or a pipe (a log), a line of its own every EVERY_S seconds, so that a log is not
flooded. Notes (a line each, e.g. "the root matches") go to the same stream.

A command shows it on stderr when stderr is a terminal, or when asked with --progress
(`for_command`); never on stdout, which carries the result (and --json's document).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_S = 0.25  # on a terminal
EVERY_S = 10.0  # elsewhere


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`stream` None: stderr. `every_s`: seconds between updates (default: REDRAW_S on
        a terminal, else EVERY_S)."""
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = not quiet and self.stream.isatty()
        self.every_s = every_s if every_s is not None else REDRAW_S if self.tty else EVERY_S
        self.clock = clock
        self.total = 0
        self.what = "checked"
        self.done = 0
        self._start = self._last = clock()
        self._drawn = False  # a line is on the terminal, not yet ended

    def start(self, total: int, what: str = "checked") -> None:
        self.total, self.what, self.done = total, what, 0
        self._start = self._last = self.clock()

    def __call__(self, done: int) -> None:
        """`done` entries of the total so far: cheap enough to call for every entry."""
        self.done = done
        if self.quiet:
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._show(self.line(now))

    def line(self, now: float) -> str:
        """E.g. "checked 1,200/5,000 entries (24%), 850/s, 4 s left"."""
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        # A total of 0: not known beforehand (a query read page after page).
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        text = f"{self.what} {count} entries"
        if self.total:
            text += f" ({self.done / self.total:.0%})"
        if rate > 0:
            text += f", {rate:,.0f}/s"
            if self.done < self.total:  # never when the total is not known
                text += f", {_duration((self.total - self.done) / rate)} left"
        return text

    def finish(self) -> None:
        """The count, the time it took and the rate, on a line of its own."""
        elapsed = self.clock() - self._start
        text = f"{self.what} {self.done:,} entries in {_duration(elapsed)}"
        if elapsed > 0:
            text += f", {self.done / elapsed:,.0f}/s"
        self.note(text)

    def close(self) -> None:
        """End a line drawn in place (say, before an error is printed under it)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self._drawn:
            self.stream.write("\r\x1b[K")  # the note takes the progress line's place
            self._drawn = False
        print(message, file=self.stream, flush=True)

    def _show(self, text: str) -> None:
        if self.tty:
            # Back to the line's start and clear it: the line is redrawn in place.
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()
            self._drawn = True
        else:
            print(text, file=self.stream, flush=True)


def add_option(sp: argparse.ArgumentParser) -> None:
    """--progress: show progress on stderr even when it is not a terminal (a log)."""
    sp.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal (default: only there)",
    )


def wanted(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    """--progress given, or the stream (stderr) is a terminal."""
    if getattr(args, "progress", False):
        return True
    return (stream if stream is not None else sys.stderr).isatty()


def for_command(args: argparse.Namespace) -> Progress:
    """The progress line of a command: on stderr, quiet unless `wanted`."""
    return Progress(sys.stderr, quiet=not wanted(args))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"
