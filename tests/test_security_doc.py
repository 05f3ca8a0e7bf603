"""SECURITY.md names, for each claim, the test that shows it: each named test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_test_security_md_names_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    named = 0
    current = ""
    for token in re.findall(r"`([^`]+)`", text):
        m = re.fullmatch(r"(tests/[\w/]+\.py)(?:::(\w+))?", token)
        if m:
            current, name = m.group(1), m.group(2)
        elif re.fullmatch(r"test_\w+", token) and current:
            name = token  # a test of the file named just before
        else:
            continue
        path = ROOT / current
        assert path.exists(), f"SECURITY.md names {current}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{current}::{name}"
        named += 1
    assert named > 20
