"""The docs cannot drift from the CLI: every `ceasefire ...` command line of the ```sh blocks
of README.md and docs/*.md parses with the real argument parser (not run here: most name
servers, keys and files of a deployment; tests/test_readme.py runs the README's)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from clients.cli import build_parser

ROOT = Path(__file__).parent.parent
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


def sh_commands(text: str) -> list[tuple[int, list[str]]]:
    """The `ceasefire` command lines of the ```sh blocks and the `$ ` lines of the ```console
    (or plain ```) blocks, each with its first line number and its arguments (after `ceasefire`),
    continuation lines joined, comments and anything after a shell operator (a pipe, a
    redirection) left out."""
    commands: list[tuple[int, list[str]]] = []
    block, pending, start = None, "", 0  # block: the open fence's language, if any
    for n, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            block = line.strip()[3:] if block is None else None
            continue
        if block in ("console", "") and not pending:
            if not line.startswith("$ "):
                continue  # a command's output
            line = line[2:]
        elif block != "sh" and not pending:
            continue
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = shlex.split(pending + line, comments=True)
        pending = ""
        for i, word in enumerate(words):
            if word in SHELL_OPERATORS:
                words = words[:i]
                break
        if words[:1] == ["ceasefire"]:
            commands.append((start, words[1:]))
    return commands


def is_placeholder(word: str) -> bool:
    """A value the reader fills in: `<sha256>`, `$DIGEST`."""
    return word.startswith(("<", "$"))


def parse(argv: list[str], where: str = "") -> argparse.Namespace | None:
    """argv as `ceasefire` parses it; a usage error fails with argparse's own message,
    except that a placeholder may fail its option's type check (None then: only the
    options and the commands are checked for it)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        bad = re.search(r"argument (--[\w-]+):", err.getvalue())
        option = bad.group(1) if bad else None
        if option in argv[:-1] and is_placeholder(argv[argv.index(option) + 1]):
            return None
        pytest.fail(f"{where}`ceasefire {shlex.join(argv)}`: {err.getvalue().strip()}")


def parsed(argv: list[str]) -> argparse.Namespace:
    """As `parse`, for a command with no placeholder."""
    args = parse(argv)
    assert args is not None, argv
    return args


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_parses(doc: str) -> None:
    commands = sh_commands((ROOT / doc).read_text(encoding="utf-8"))
    for line, argv in commands:
        parse(argv, f"{doc}:{line}: ")


def test_the_commands_of_the_docs_are_found() -> None:
    found = {doc: len(sh_commands((ROOT / doc).read_text(encoding="utf-8"))) for doc in DOCS}
    assert found["README.md"] >= 50 and found["docs/witnesses.md"] >= 5, found
    assert found["docs/queries.md"] >= 20 and sum(found.values()) >= 150, found


def test_the_documented_options_do_what_the_docs_say() -> None:
    """Parsing is not enough where an option may be taken by the wrong parser: the
    documented spellings set what the commands read."""
    text = (ROOT / "docs/witnesses.md").read_text(encoding="utf-8")
    by_line = {shlex.join(argv): argv for _, argv in sh_commands(text)}
    proof = parsed(by_line["proof inclusion --index 5 --require-witnesses"])
    assert (proof.kind, proof.index, proof.require_witnesses) == ("inclusion", 5, True)
    assert parsed(["proof", "inclusion", "--index", "5"]).require_witnesses is False
    assert parsed(["proof", "consistency", "--old", "2", "--require-witnesses"]).require_witnesses
    assert parsed(by_line["export --witnessed --out ledger.bundle"]).witnessed is True
    serve = next(argv for argv in by_line.values() if argv[:2] == ["witness", "serve"])
    assert parsed(serve).new_state is False  # as documented: a state `witness init` made
    init = next(argv for argv in by_line.values() if argv[:2] == ["witness", "init"])
    assert parsed(init).state == Path("arm-witness.db") == parsed(serve).state


def test_sh_commands_reads_blocks_as_a_shell_would() -> None:
    text = "\n".join(
        [
            "```sh",
            "ceasefire witness serve --key k \\",
            "    --log 'a b+c' --listen h:1   # a comment",
            "ceasefire checkpoint > FILE",
            "export X=1",
            "```",
            "```",
            "ceasefire not --in-a-sh-block",
            "```",
            "```yaml",
            "ceasefire: no",
            "```",
        ]
    )
    assert sh_commands(text) == [
        (2, ["witness", "serve", "--key", "k", "--log", "a b+c", "--listen", "h:1"]),
        (4, ["checkpoint"]),
    ]
