"""README.md runs as written: its ```sh blocks, in order, top to bottom, on a fresh ledger.

The blocks run in one bash process (`set -euo pipefail`), so variables, functions, `cd` and
`. .venv/bin/activate` carry from one block to the next as in the user's terminal, in a
temporary copy of the repository's files (`git ls-files`, tracked and new), where
`scripts/run` makes its own `.venv` (uv links it from its cache: about a second).

An HTML comment just before a block says how to run it:
- `<!-- readme-test: skip — REASON -->`: not run (the whole suite, benchmarks, long modes);
- `<!-- readme-test: background ... -->`: a server that keeps running. It is started in its
  own process group, the test waits for its ports (`--listen`/`--listen-writers`, else
  127.0.0.1:50051), and stops it at the end, or when a later server needs one of its ports
  (the user's Ctrl-C).
A failing command fails the test with its block, the command and the output.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEFAULT_PORT = 50051  # `ceasefire serve` and `scripts/run` without --listen
# The ports the README's servers use: they must be free for the walk-through to run as written.
README_PORTS = (50051, 50052, 50061)
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|background)\b(.*?)-->", re.S)
LISTEN = re.compile(r"--listen[ =]\S*:(\d+)")
WRITERS = re.compile(r"--listen-writers[ =]\S*:(\d+)")
BLOCK_TIMEOUT_S = 900  # one block, on a loaded 2-core machine
SERVER_START_S = 300  # scripts/run's first `uv sync`, then the bootstrap


@dataclass
class Block:
    """A ```sh block of README.md: its first line number, its text and its marker."""

    line: int
    text: str
    mode: str = "run"  # run | skip | background
    reason: str = ""


def readme_blocks(text: str) -> list[Block]:
    """The ```sh blocks in order, each with the readme-test marker just before it, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        block = Block(line=start + 1, text="\n".join(lines[start:end]) + "\n")
        before = [ln for ln in lines[:i] if ln.strip()]
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        if marker:
            block.mode, block.reason = marker.group(1), marker.group(2).strip(" —-()")
        blocks.append(block)
        i = end + 1
    return blocks


def test_readme_blocks_are_found() -> None:
    """The parser sees the walk-through: its first block is `scripts/run` in the background,
    every block is run, skipped or backgrounded, and most are run."""
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert blocks[0].mode == "background" and blocks[0].text.startswith("scripts/run")
    assert {b.mode for b in blocks} <= {"run", "skip", "background"}
    assert all(b.reason for b in blocks if b.mode == "skip"), "a skip says why"
    assert sum(b.mode == "run" for b in blocks) > sum(b.mode == "skip" for b in blocks)


def repository_copy(dest: Path) -> None:
    """The repository's files as a fresh checkout has them, plus new files not yet committed
    (not ignored ones: no .venv, var/, node_modules)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def user_environment(home: Path) -> dict[str, str]:
    """A new user's shell: no virtualenv active, no ceasefire settings, their own config and
    data directories (profiles, outbox). The uv cache stays, so nothing is downloaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEASEFIRE_")}
    venv = env.pop("VIRTUAL_ENV", None)
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if p != f"{venv}/bin"
        )
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[name] = str(home / name.lower())
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class Shell:
    """One bash process reading the blocks as the user's terminal would."""

    cwd: Path
    work: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] = field(init=False)
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    servers: dict[int, int] = field(default_factory=dict)  # port -> process group

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        # -E: the ERR trap names the failing command inside sourced blocks too.
        self._send(
            "set -Eeuo pipefail\n"
            "trap 'echo \"__readme_failed: exit $? at line $LINENO: $BASH_COMMAND\"' ERR\n"
        )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", errors="replace"))
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def _until(self, sentinel: str, timeout_s: float) -> tuple[bool, str]:
        """The output up to `sentinel`; False if the shell ended (a command failed) first."""
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return False, "".join(out) + f"\n(no end after {timeout_s:.0f} s)"
            if line is None:
                return False, "".join(out)
            if line.strip() == sentinel:
                return True, "".join(out)
            out.append(line)

    def run(self, n: int, block: Block) -> tuple[bool, str]:
        """Source the block in the shell (stdin closed: nothing may wait for input)."""
        script = self.work / f"block-{n}.sh"
        script.write_text(block.text)
        self._send(f'. "{script}" </dev/null\necho __readme_done_{n}\n')
        return self._until(f"__readme_done_{n}", BLOCK_TIMEOUT_S)

    def start(self, n: int, block: Block) -> tuple[bool, str]:
        """A server block in a session of its own, with the shell's exported environment."""
        ports = [int(p) for p in LISTEN.findall(block.text)] or [DEFAULT_PORT]
        ports += [int(p) for p in WRITERS.findall(block.text)]
        for port in ports:  # the user stops the earlier server on that port first
            if port in self.servers:
                self.stop(self.servers[port])
        script, log = self.work / f"block-{n}.sh", self.work / f"block-{n}.log"
        script.write_text(block.text)
        self._send(
            f'setsid bash -euo pipefail "{script}" >"{log}" 2>&1 </dev/null &\n'
            f"echo __readme_pid_{n} $!\necho __readme_done_{n}\n"
        )
        ok, out = self._until(f"__readme_done_{n}", 60)
        pids = re.findall(rf"__readme_pid_{n} (\d+)", out)
        if not ok or not pids:
            return False, out
        pid = int(pids[0])
        for port in ports:
            self.servers[port] = pid
        deadline = time.monotonic() + SERVER_START_S
        while not all(port_in_use(p) for p in ports):
            if not _alive(pid) or time.monotonic() > deadline:
                why = "ended" if not _alive(pid) else f"not listening after {SERVER_START_S} s"
                return False, f"the server {why}; its output:\n{log.read_text(errors='replace')}"
            time.sleep(0.5)
        return True, out

    def stop(self, pid: int) -> None:
        """Ctrl-C, as the user would; then SIGKILL if it does not end."""
        ports = [p for p, owner in self.servers.items() if owner == pid]
        for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and (
                _alive(pid) or any(port_in_use(p) for p in ports)
            ):
                time.sleep(0.2)
            if not _alive(pid) and not any(port_in_use(p) for p in ports):
                break
        for port in ports:
            del self.servers[port]

    def close(self) -> None:
        for pid in sorted(set(self.servers.values())):
            self.stop(pid)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie awaiting its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    busy = [p for p in README_PORTS if port_in_use(p)]
    if busy:
        message = f"ports {busy} are in use; README.md's servers need them (stop scripts/run?)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    repo, work = tmp_path / "ceasefire-ledger", tmp_path / "readme-test"
    work.mkdir()
    repository_copy(repo)
    sh = Shell(cwd=repo, work=work, env=user_environment(tmp_path / "home"))
    try:
        yield sh
    finally:
        sh.close()


def failure_report(block: Block, output: str) -> str:
    """The failing command as the ERR trap saw it, and its line in README.md."""
    failed = re.findall(r"__readme_failed: (exit \d+ at line (\d+): .*)", output)
    if not failed:
        return ""
    what, line = failed[-1]
    return f"command: {what} (README.md line {block.line + int(line) - 1})\n"


def test_a_failing_command_stops_the_walk_through(tmp_path: Path) -> None:
    """`set -euo pipefail` as a user's script would have it: the failing command is named,
    what it printed is kept, the rest of its block does not run; variables carry over."""
    sh = Shell(cwd=tmp_path, work=tmp_path, env=user_environment(tmp_path / "home"))
    try:
        ok, out = sh.run(0, Block(line=1, text="GREETING=hello\n"))
        assert ok and out == ""
        ok, out = sh.run(1, Block(line=5, text='echo "$GREETING"\nfalse | cat\necho never\n'))
        assert not ok
        assert "hello" in out and "never" not in out
        report = failure_report(Block(line=5, text=""), out)
        assert "exit 1 at line 2: cat" in report and "README.md line 6" in report
    finally:
        sh.close()


def test_readme_runs_as_written(shell: Shell) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    ran = 0
    for n, block in enumerate(blocks):
        if block.mode == "skip":
            continue
        started = time.monotonic()
        ok, output = (shell.start if block.mode == "background" else shell.run)(n, block)
        if not ok:
            pytest.fail(
                f"README.md line {block.line}: a {block.mode} block failed after "
                f"{time.monotonic() - started:.0f} s\n{failure_report(block, output)}"
                f"--- block ---\n{block.text}--- output ---\n{output}",
                pytrace=False,
            )
        ran += 1
    assert ran >= 10
