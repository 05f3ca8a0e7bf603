"""The `ceasefire` command run in the test's own process, as a user would run it in a shell:
in a working directory, with environment variables, stdin, and its stdout, stderr and exit
code captured. The same `main` as the installed command, without 1-5 s of start-up per call;
`subprocess_run` is the real process, for the few tests about the process itself."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from clients.cli import main


@contextmanager
def _environment(cwd: Path, env: Mapping[str, str] | None) -> Iterator[None]:
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    try:
        os.chdir(cwd)
        os.environ.update(env or {})
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


@contextmanager
def _process_state() -> Iterator[None]:
    """What a command may set for its whole process, put back afterwards: the root logger's
    handlers and levels (`logging.basicConfig` in `serve` would keep writing to this call's
    captured stderr) and the SIGINT/SIGTERM handlers (those of `monitor`, `witness serve`)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logger.level for name, logger in _loggers()}
    main_thread = threading.current_thread() is threading.main_thread()
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        for name, logger in _loggers():  # those made during the call keep their level
            if name in levels:
                logger.setLevel(levels[name])
        for s, handler in signals.items():
            if main_thread and handler is not None:  # only the main thread may set them
                signal.signal(s, handler)


def _loggers() -> Iterator[tuple[str, logging.Logger]]:
    """The root logger and every named logger created so far."""
    yield "", logging.getLogger()
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            yield name, logger


def _text_stream(data: bytes = b"") -> io.TextIOWrapper:
    """A text stream with a binary `.buffer`, as sys.stdout has."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", write_through=True)


def run(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: str = "",
) -> subprocess.CompletedProcess[str]:
    """`ceasefire ARGS` in `cwd`, in this process: its exit code, stdout and stderr."""
    out, err, stdin = _text_stream(), _text_stream(), _text_stream(input.encode())
    saved = sys.stdin, sys.stdout, sys.stderr
    with _environment(cwd, env), _process_state():
        sys.stdin, sys.stdout, sys.stderr = stdin, out, err
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
    return subprocess.CompletedProcess(["ceasefire", *args], code, _read(out), _read(err))


def _read(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", errors="replace")


def subprocess_run(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: str = "",
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`ceasefire ARGS` as its own process (`python -m clients.cli`)."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
