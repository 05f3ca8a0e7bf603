"""Evidence that a log signed two checkpoints that cannot both be true (a split view), in a
file anyone can check offline with the log's public key alone.

Format (JSON, `ceasefire-split-evidence/v1`):

    {"format", "found_at", "origin", "log_key" (the C2SP vkey the monitor used),
     "kind": "same_size" | "older_not_prefix" | "inconsistent_advance",
     "why": "...",
     "first":  {"note", "server", "seen_at", "size", "root_hash"},   # accepted before
     "second": {"note", "server", "seen_at", "size", "root_hash"},   # seen now
     "consistency": {"old_size", "new_size", "hashes": [hex], "from": "log" | "monitor",
                     "older_root_in_newer_tree": hex | null, "error": "..."} | null,
     "leaf_conflict": {"index", "first": {"leaf_hash", "tree_size", "proof": [hex]},
                       "second": {...}} | null}

A failing consistency proof alone proves nothing (anyone can write hashes that fail), so
`check` calls the evidence conclusive only when one of these holds, each needing nothing
but the two signed notes:
- the same size with two roots;
- a consistency proof that DOES verify from `older_root_in_newer_tree` to the newer root
  (so that is the newer tree's own prefix root) while the older note signs another root;
- the same index holding two different leaves, each with an inclusion proof that verifies
  against its note's root (RFC 9162 2.1.3).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.formats import merkle
from ledger.formats.note import Checkpoint, NoteError, NoteVerifier, open_note

FORMAT = "ceasefire-split-evidence/v1"
KINDS = ("same_size", "older_not_prefix", "inconsistent_advance")


@dataclass(frozen=True)
class Seen:
    """A signed checkpoint as the monitor saw it."""

    note: str
    checkpoint: Checkpoint
    server: str
    seen_at: str

    def doc(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "server": self.server,
            "seen_at": self.seen_at,
            "size": self.checkpoint.size,
            "root_hash": self.checkpoint.root_hash.hex(),
        }


@dataclass(frozen=True)
class Consistency:
    old_size: int
    new_size: int
    hashes: list[bytes]
    source: str  # "log": the proof the log gave; "monitor": computed from the leaves held
    older_root_in_newer_tree: bytes | None
    error: str

    def doc(self) -> dict[str, Any]:
        x = self.older_root_in_newer_tree
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [h.hex() for h in self.hashes],
            "from": self.source,
            "older_root_in_newer_tree": x.hex() if x is not None else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class LeafAt:
    leaf_hash: bytes
    tree_size: int
    proof: list[bytes]

    def doc(self) -> dict[str, Any]:
        return {
            "leaf_hash": self.leaf_hash.hex(),
            "tree_size": self.tree_size,
            "proof": [h.hex() for h in self.proof],
        }


@dataclass(frozen=True)
class LeafConflict:
    index: int
    first: LeafAt  # in the first checkpoint's tree
    second: LeafAt  # in the second's

    def doc(self) -> dict[str, Any]:
        return {"index": self.index, "first": self.first.doc(), "second": self.second.doc()}


@dataclass(frozen=True)
class Evidence:
    kind: str
    why: str
    origin: str
    log_key: str
    first: Seen
    second: Seen
    consistency: Consistency | None = None
    leaf_conflict: LeafConflict | None = None
    found_at: str = field(default_factory=lambda: now_iso())

    def doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "found_at": self.found_at,
            "origin": self.origin,
            "log_key": self.log_key,
            "kind": self.kind,
            "why": self.why,
            "first": self.first.doc(),
            "second": self.second.doc(),
            "consistency": self.consistency.doc() if self.consistency else None,
            "leaf_conflict": self.leaf_conflict.doc() if self.leaf_conflict else None,
        }


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write(directory: Path, evidence: Evidence) -> Path:
    """DIR/split-<time>.json, written whole (a new name if one is there already)."""
    stamp = evidence.found_at.replace(":", "").replace("-", "").replace(".", "")
    path = directory / f"split-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"split-{stamp}-{n}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(evidence.doc(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Verdict:
    split: bool
    findings: list[str]  # what holds and what does not, one sentence each


class EvidenceError(ValueError):
    """Not an evidence file this version reads."""


def check(doc: dict[str, Any], log_key: NoteVerifier) -> Verdict:
    """Re-check evidence with the log's key alone: both notes signed by it for the same
    origin, and a conflict between them that needs nothing else (see the module's text)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise EvidenceError(f"not a {FORMAT} file")
    findings: list[str] = []
    try:
        cps = [_opened(doc[side]["note"], log_key) for side in ("first", "second")]
    except NoteError as e:
        return Verdict(False, [f"a note is not signed by the log key {log_key.vkey}: {e}"])
    except (KeyError, TypeError) as e:
        raise EvidenceError(f"a checkpoint is missing ({e})") from e
    a, b = cps
    if a.origin != b.origin:
        return Verdict(False, [f"the notes are of two logs: {a.origin!r} and {b.origin!r}"])
    findings.append(
        f"both notes are signed by the log key of {a.origin} (sizes {a.size}, {b.size})"
    )
    split = False
    if a.size == b.size and a.root_hash != b.root_hash:
        split = True
        findings.append(f"SPLIT: two roots for the same size {a.size}")
    try:
        if _consistency_conflict(doc.get("consistency"), a, b, findings):
            split = True
        if _leaf_conflict(doc.get("leaf_conflict"), a, b, findings):
            split = True
    except (KeyError, TypeError, ValueError) as e:
        raise EvidenceError(f"malformed evidence ({e})") from e
    if not split:
        findings.append("nothing here shows that the two checkpoints cannot both be true")
    return Verdict(split, findings)


def _opened(note: str, log_key: NoteVerifier) -> Checkpoint:
    opened = open_note(note, [log_key])
    return Checkpoint.parse(opened.text)


def _consistency_conflict(
    c: dict[str, Any] | None, a: Checkpoint, b: Checkpoint, findings: list[str]
) -> bool:
    if not c:
        return False
    older, newer = (a, b) if a.size <= b.size else (b, a)
    if (c["old_size"], c["new_size"]) != (older.size, newer.size):
        findings.append(
            f"the consistency proof is for sizes {c['old_size']} -> {c['new_size']}, "
            f"not those of the notes ({older.size} -> {newer.size})"
        )
        return False
    hashes = [bytes.fromhex(h) for h in c["hashes"]]
    try:
        merkle.verify_consistency(older.size, newer.size, older.root_hash, newer.root_hash, hashes)
        findings.append("the consistency proof verifies: the older tree is a prefix")
        return False
    except merkle.ProofError as e:
        findings.append(f"the consistency proof fails ({e})")
    x = c.get("older_root_in_newer_tree")
    if not x:
        findings.append(
            "a failing proof alone does not show two histories (no prefix root to check)"
        )
        return False
    prefix = bytes.fromhex(x)
    try:
        merkle.verify_consistency(older.size, newer.size, prefix, newer.root_hash, hashes)
    except merkle.ProofError as e:
        findings.append(f"nor does it lead from the prefix root given to the newer root ({e})")
        return False
    if prefix == older.root_hash:
        return False
    findings.append(
        f"SPLIT: the proof leads to the newer root from the root of its first {older.size} "
        f"leaves, {prefix.hex()}, which is not the root the older note signs"
    )
    return True


def _leaf_conflict(
    c: dict[str, Any] | None, a: Checkpoint, b: Checkpoint, findings: list[str]
) -> bool:
    if not c:
        return False
    index = int(c["index"])
    leaves = []
    for cp, side in ((a, "first"), (b, "second")):
        at = c[side]
        leaf = bytes.fromhex(at["leaf_hash"])
        proof = [bytes.fromhex(h) for h in at["proof"]]
        if int(at["tree_size"]) != cp.size:
            findings.append(f"the {side} leaf's proof is not for its note's size {cp.size}")
            return False
        try:
            merkle.verify_inclusion(leaf, index, cp.size, proof, cp.root_hash)
        except merkle.ProofError as e:
            findings.append(f"the {side} leaf at entry {index} is not in its tree ({e})")
            return False
        leaves.append(leaf)
    if leaves[0] == leaves[1]:
        findings.append(f"entry {index} is the same leaf in both trees")
        return False
    findings.append(
        f"SPLIT: entry {index} is leaf {leaves[0].hex()} in the first tree and "
        f"{leaves[1].hex()} in the second, each proven against its signed root"
    )
    return True
