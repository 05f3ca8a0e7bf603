"""RFC 6962 / RFC 9162 Merkle tree: hashing, compact frontier, proofs and their verification.

Pure functions over a node store the caller owns. The store holds the hash of every complete
aligned subtree, keyed by (level, index): node (level, i) covers leaves
[i * 2**level, (i + 1) * 2**level), and level 0 holds the leaf hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "LeafTree",
    "NodeGetter",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> hash of the complete aligned subtree at that position.
NodeGetter = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof is malformed, or does not match the claimed roots."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """RFC 9162 k: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(get: NodeGetter, start: int, end: int) -> bytes:
    """MTH(D[start:end]) read from stored nodes.

    A complete aligned subtree is one lookup; anything else splits at RFC 9162's k and
    recurses. For the ranges proofs ask for (start aligned to a power of two >= the range's
    largest part, e.g. any right-edge range) this costs O(log n) lookups.
    """
    size = end - start
    if start < 0 or size < 0:
        raise ValueError(f"invalid range [{start}, {end})")
    if size == 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return get(level, start >> level)
    k = _split(size)
    return node_hash(subtree_hash(get, start, start + k), subtree_hash(get, start + k, end))


class Frontier:
    """Compact range of the tree's right edge: roots of its maximal complete subtrees.

    hashes[i] is the root of the i-th subtree from the left; their sizes are the set bits of
    `size`, largest first, so there are at most log2(size) + 1 of them.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, got {len(hashes)}")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"frontier hashes must be {HASH_SIZE} bytes")
        self.size = size
        self.hashes = list(hashes)

    def __repr__(self) -> str:
        return f"Frontier(size={self.size}, root={self.root().hex()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self.hashes == other.hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the complete nodes it created, leaf first, for storage."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        index = self.size
        level = 0
        h = leaf
        created = [(0, index, leaf)]
        # Each set low bit of the old size is a complete sibling to the left that now closes.
        while (self.size >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            index >>= 1
            created.append((level, index, h))
        self.hashes.append(h)
        self.size += 1
        return created

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def to_bytes(self) -> bytes:
        """8-byte big-endian size, then the hashes left to right."""
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < 8:
            raise ValueError("frontier encoding too short")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise ValueError(f"frontier encoding: size {size} needs {size.bit_count()} hashes")
        hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls(size, hashes)

    @classmethod
    def from_getter(cls, get: NodeGetter, size: int) -> Frontier:
        """Rebuild from stored nodes: one lookup per set bit of size."""
        if size < 0:
            raise ValueError("size must be >= 0")
        hashes = []
        start = 0
        for level in reversed(range(size.bit_length())):
            if (size >> level) & 1:
                hashes.append(get(level, start >> level))
                start += 1 << level
        return cls(size, hashes)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes (O(n)); used to audit a stored tree from its leaves."""
    f = Frontier()
    for h in hashes:
        f.append(h)
    return f.root()


class LeafTree:
    """Every complete aligned subtree over leaf hashes held in memory (2n hashes in all), so
    the root of any prefix costs O(log n): for an auditor who holds the leaves and asks the
    log's proofs about prefixes of them."""

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            pairs = range(0, len(below) - 1, 2)  # an odd last node has no parent yet
            self.levels.append([node_hash(below[i], below[i + 1]) for i in pairs])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def get(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int) -> bytes:
        """MTH of the first `size` leaves."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} out of range for {self.size} leaves")
        return subtree_hash(self.get, 0, size)


def nodes_needed(compute: Callable[[NodeGetter], object]) -> list[tuple[int, int]]:
    """The (level, index) of every stored node `compute` reads, found by running it on
    placeholders: which nodes a proof or root reads depends on sizes and indexes only, never
    on the hashes, so a store can fetch them all in one query and then run it for real."""
    seen: dict[tuple[int, int], None] = {}

    def record(level: int, index: int) -> bytes:
        seen[(level, index)] = None
        return EMPTY_ROOT

    compute(record)
    return list(seen)


def inclusion_proof(get: NodeGetter, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(index, D[0:size]), ordered leaf-side first."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} out of range for tree size {size}")
    return _path(get, index, 0, size)


def _path(get: NodeGetter, m: int, start: int, end: int) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(get, m, start, start + k), subtree_hash(get, start + k, end)]
    return [*_path(get, m - k, start + k, end), subtree_hash(get, start, start + k)]


def consistency_proof(get: NodeGetter, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[0:new_size]); empty when old_size is 0 or equal."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"invalid sizes: old {old_size}, new {new_size}")
    if old_size in (0, new_size):
        return []
    return _subproof(get, old_size, 0, new_size, True)


def _subproof(get: NodeGetter, m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [subtree_hash(get, start, end)]
    k = _split(n)
    if m <= k:
        return [*_subproof(get, m, start, start + k, whole), subtree_hash(get, start + k, end)]
    return [*_subproof(get, m - k, start + k, end, False), subtree_hash(get, start, start + k)]


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what}: expected {HASH_SIZE} bytes, got {len(h)}")


def _inclusion_proof_len(index: int, size: int) -> int:
    # Levels below the fork from the right edge, plus the left siblings above it.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2; raises ProofError unless `leaf` is at `index` in the tree `root`."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} out of range for tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root hash", root)
    want = _inclusion_proof_len(index, size)
    if len(proof) != want:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {want}")
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    if r != root:
        raise ProofError(f"inclusion proof does not match root at size {size}")


def _consistency_proof_len(old_size: int, new_size: int) -> int:
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros
    seed = 0 if old_size == 1 << shift else 1
    return seed + _inclusion_proof_len(old_size - 1, new_size) - shift


def consistency_roots(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes] | None:
    """The (older, newer) roots a consistency proof leads to, as RFC 9162 2.1.4.2 computes
    them (`old_root` is used only when old_size is a power of two, where the proof leaves
    it out); None for sizes or a length that no proof can have. Split evidence uses the
    roots themselves: a proof that leads to the newer root from another older root."""
    if not 0 < old_size < new_size:
        return None
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return None
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (fr, sr) if sn == 0 else None


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2; raises ProofError unless old_root's tree is a prefix of new_root's.

    Special cases follow transparency-dev/merkle: equal sizes need an empty proof and equal
    roots; from size 0 any tree is consistent with an empty proof.
    """
    if old_size < 0 or old_size > new_size:
        raise ProofError(f"invalid sizes: old {old_size}, new {new_size}")
    if old_size in (0, new_size):
        if proof:
            raise ProofError(f"consistency proof {old_size} -> {new_size} must be empty")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"roots differ at equal size {old_size}")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    want = _consistency_proof_len(old_size, new_size)
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want}")
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    roots = consistency_roots(old_size, new_size, list(proof), old_root)
    if roots is None:
        raise ProofError("consistency proof has the wrong shape for its sizes")
    fr, sr = roots
    if fr != old_root:
        raise ProofError(f"consistency proof does not match old root at size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not match new root at size {new_size}")
