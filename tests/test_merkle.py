"""Merkle tree tests: published known answers, then properties over random trees."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.formats.merkle import (
    EMPTY_ROOT,
    Frontier,
    NodeGetter,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# Known answers from github.com/transparency-dev/merkle: testonly/constants.go (LeafInputs,
# NodeHashes, RootHashes) and proof/verify_test.go (inclusionProofs, consistencyProofs). These
# are the classic certificate-transparency reference vectors.
LEAVES = [h(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
NODES = [
    [h(x) for x in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ]],
    [h(x) for x in [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ]],
    [h(x) for x in [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]  # fmt: skip
ROOTS = [EMPTY_ROOT] + [h(x) for x in [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]  # fmt: skip
# verify_test.go numbers leaves from 1 ({leaf, size, proof}); these indexes are 0-based.
INCLUSION = [
    (0, 1, []),
    (0, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (5, 8, [NODES[0][4], NODES[1][3], NODES[2][0]]),
    (2, 3, [NODES[1][0]]),
    (1, 5, [NODES[0][0], NODES[1][1], NODES[0][4]]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (6, 8, [NODES[1][2], NODES[1][3], NODES[2][0]]),
    (2, 5, [NODES[1][1], NODES[0][4]]),
    (6, 7, [NODES[1][2], NODES[0][6], NODES[2][0]]),
]
# The same proofs spelled out in hex in verify_test.go, to pin the NODES indexing above.
assert CONSISTENCY[2][2][0] == h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a")
assert CONSISTENCY[4][2][1] == h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f")


def build(leaves: list[bytes]) -> tuple[dict[tuple[int, int], bytes], Frontier]:
    store: dict[tuple[int, int], bytes] = {}
    f = Frontier()
    for data in leaves:
        for level, index, node in f.append(leaf_hash(data)):
            assert (level, index) not in store
            store[(level, index)] = node
    return store, f


def getter(store: dict[tuple[int, int], bytes]) -> NodeGetter:
    def get(level: int, index: int) -> bytes:
        return store[(level, index)]

    return get


def test_hashes_and_empty_root() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert [leaf_hash(x) for x in LEAVES] == NODES[0]
    assert node_hash(NODES[0][0], NODES[0][1]) == NODES[1][0]


def test_reference_nodes_and_roots() -> None:
    store, _ = build(LEAVES)
    for level, row in enumerate(NODES):
        for index, node in enumerate(row):
            assert store[(level, index)] == node
    assert len(store) == sum(len(row) for row in NODES)
    for size in range(9):
        _, f = build(LEAVES[:size])
        assert f.root() == ROOTS[size]
        assert root_from_leaf_hashes([leaf_hash(x) for x in LEAVES[:size]]) == ROOTS[size]
        assert subtree_hash(getter(store), 0, size) == ROOTS[size]
        assert Frontier.from_getter(getter(store), size) == f


def test_compact_ranges_match_reference() -> None:
    # testonly/constants.go CompactTrees(): the frontier hashes for each size.
    want = [
        [],
        [NODES[0][0]],
        [NODES[1][0]],
        [NODES[1][0], NODES[0][2]],
        [NODES[2][0]],
        [NODES[2][0], NODES[0][4]],
        [NODES[2][0], NODES[1][2]],
        [NODES[2][0], NODES[1][2], NODES[0][6]],
        [NODES[3][0]],
    ]
    for size, hashes in enumerate(want):
        assert build(LEAVES[:size])[1].hashes == hashes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_reference_inclusion(index: int, size: int, proof: list[bytes]) -> None:
    store, _ = build(LEAVES[:size])
    assert inclusion_proof(getter(store), index, size) == proof
    verify_inclusion(NODES[0][index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_reference_consistency(old: int, new: int, proof: list[bytes]) -> None:
    store, _ = build(LEAVES[:new])
    assert consistency_proof(getter(store), old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_inclusion_rejects_corruptions() -> None:
    # Mirrors corruptInclusionProof in verify_test.go.
    some = h("abacaba000000000000000000000000000000000000000000060061e00123456")
    for index, size, proof in INCLUSION[1:]:
        leaf, root = NODES[0][index], ROOTS[size]
        bad: list[tuple[bytes, int, int, list[bytes], bytes]] = [
            (leaf, index - 1, size, proof, root),
            (leaf, index + 1, size, proof, root),
            (leaf, index ^ 2, size, proof, root),
            (leaf, index, size * 2, proof, root),
            (leaf, index, size // 2, proof, root),
            (b"WrongLeaf", index, size, proof, root),
            (leaf, index, size, proof, EMPTY_ROOT),
            (leaf, index, size, proof, some),
            (leaf, index, size, [*proof, b""], root),
            (leaf, index, size, [*proof, root], root),
            (leaf, index, size, [b"", *proof], root),
            (leaf, index, size, [root, *proof], root),
            (leaf, index, size, proof[:-1], root),
            (leaf, index, size, [proof[0], some, *proof[1:]], root),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
            bad.append((leaf, index, size, flipped, root))
        for args in bad:
            with pytest.raises(ProofError):
                verify_inclusion(*args)


def test_inclusion_edge_cases() -> None:
    data = leaf_hash(b"data")
    verify_inclusion(data, 0, 1, [], data)
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1)]:
        with pytest.raises(ProofError, match="out of range"):
            verify_inclusion(data, index, size, [], data)
    with pytest.raises(ProofError, match="leaf hash"):
        verify_inclusion(b"", 0, 1, [], data)
    with pytest.raises(ProofError, match="want 3"):
        verify_inclusion(NODES[0][0], 0, 8, [], ROOTS[8])
    with pytest.raises(ProofError, match="out of range"):
        inclusion_proof(getter({}), 3, 3)


def test_consistency_rejects_corruptions() -> None:
    # Mirrors corruptConsistencyProof in verify_test.go.
    for old, new, proof in CONSISTENCY[1:]:
        r1, r2 = ROOTS[old], ROOTS[new]
        bad: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
            (old - 1, new, r1, r2, proof),
            (old + 1, new, r1, r2, proof),
            (old ^ 2, new, r1, r2, proof),
            (old, new * 2, r1, r2, proof),
            (old, new // 2, r1, r2, proof),
            (old, new, b"WrongRoot", r2, proof),
            (old, new, r1, b"WrongRoot", proof),
            (old, new, r2, r1, proof),
            (old, new, r1, r2, []),
            (old, new, r1, r2, [*proof, b""]),
            (old, new, r1, r2, [*proof, r1]),
            (old, new, r1, r2, [*proof, r2]),
            (old, new, r1, r2, [b"", *proof]),
            (old, new, r1, r2, [r1, *proof]),
            (old, new, r1, r2, [r2, *proof]),
            (old, new, r1, r2, [proof[0], *proof]),
            (old, new, r1, r2, proof[:-1]),
        ]
        for i in range(len(proof)):
            flipped = list(proof)
            flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
            bad.append((old, new, r1, r2, flipped))
        for args in bad:
            with pytest.raises(ProofError):
                verify_consistency(*args)


def test_consistency_special_cases() -> None:
    # TestVerifyConsistency in verify_test.go (the current, size1 == 0 accepting version).
    r1, r2, e = b"don't care 1", b"don't care 2", EMPTY_ROOT
    Case = tuple[int, int, bytes, bytes, list[bytes]]
    ok: list[Case] = [(0, 0, r1, r1, []), (0, 1, r1, r2, []), (1, 1, r2, r2, [])]
    bad: list[Case] = [
        (0, 0, r1, r2, []),
        (1, 1, r1, r2, []),
        (1, 0, r1, r2, []),
        (2, 1, r1, r2, []),
        (1, 2, r1, r2, []),
        (0, 0, e, r2, []),
        (1, 1, e, r2, []),
        (0, 0, e, e, [e]),
        (0, 1, e, e, [e]),
        (1, 1, e, e, [e]),
    ]
    for old, new, a, b, proof in ok:
        verify_consistency(old, new, a, b, proof)
    for old, new, a, b, proof in bad:
        with pytest.raises(ProofError):
            verify_consistency(old, new, a, b, proof)
    assert consistency_proof(getter({}), 0, 5) == []
    with pytest.raises(ProofError):
        consistency_proof(getter({}), 3, 2)


def test_frontier_serialization() -> None:
    _, f = build(LEAVES[:7])
    data = f.to_bytes()
    assert len(data) == 8 + 3 * 32
    assert data[:8] == (7).to_bytes(8, "big")
    assert Frontier.from_bytes(data) == f
    assert Frontier.from_bytes(Frontier().to_bytes()).root() == EMPTY_ROOT
    for broken in [data[:-1], data + b"\x00", b"\x00" * 7]:
        with pytest.raises(ValueError):
            Frontier.from_bytes(broken)
    with pytest.raises(ValueError):
        f.append(b"short")


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=300))
def test_random_trees(data: st.DataObject, size: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    store, f = build(leaves)
    get = getter(store)
    hashes = [leaf_hash(x) for x in leaves]
    root = f.root()
    assert root == root_from_leaf_hashes(hashes)
    assert Frontier.from_getter(get, size) == f

    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = inclusion_proof(get, index, size)
    verify_inclusion(hashes[index], index, size, proof, root)
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="flip")
        bad = list(proof)
        bad[i] = bad[i][:-1] + bytes([bad[i][-1] ^ 1])
        with pytest.raises(ProofError):
            verify_inclusion(hashes[index], index, size, bad, root)
    if size > 1:
        other = (index + 1) % size
        with pytest.raises(ProofError):
            verify_inclusion(hashes[index], other, size, proof, root)

    old = data.draw(st.integers(min_value=0, max_value=size), label="old")
    old_root = root_from_leaf_hashes(hashes[:old])
    cproof = consistency_proof(get, old, size)
    verify_consistency(old, size, old_root, root, cproof)
    if cproof:
        i = data.draw(st.integers(min_value=0, max_value=len(cproof) - 1), label="cflip")
        bad = list(cproof)
        bad[i] = bytes([bad[i][0] ^ 0x80]) + bad[i][1:]
        with pytest.raises(ProofError):
            verify_consistency(old, size, old_root, root, bad)
        with pytest.raises(ProofError):
            verify_consistency(old, size, root, old_root, cproof)


def test_proofs_use_logarithmic_lookups() -> None:
    n = 2**16 + 3
    store, f = build([i.to_bytes(4, "big") for i in range(n)])
    calls = 0

    def get(level: int, index: int) -> bytes:
        nonlocal calls
        calls += 1
        return store[(level, index)]

    bound = 2 * math.ceil(math.log2(n)) + 2  # well under 4 * log2(n)**2
    root = f.root()
    for index in [0, 1, n // 2, n - 3, n - 1]:
        calls = 0
        proof = inclusion_proof(get, index, n)
        assert calls <= bound, (index, calls)
        verify_inclusion(store[(0, index)], index, n, proof, root)
    for old in [1, 2, 3, 1000, 2**16 - 1, 2**16, 2**16 + 1, n - 1]:
        calls = 0
        proof = consistency_proof(get, old, n)
        assert calls <= bound, (old, calls)
        old_root = Frontier.from_getter(getter(store), old).root()
        verify_consistency(old, n, old_root, root, proof)
    calls = 0
    assert subtree_hash(get, 0, n) == root
    assert calls <= bound


def test_exhaustive_small_trees() -> None:
    leaves = [bytes([i]) for i in range(33)]
    store, _ = build(leaves)
    get = getter(store)
    hashes = [leaf_hash(x) for x in leaves]
    roots = [root_from_leaf_hashes(hashes[:n]) for n in range(34)]
    for new in range(1, 34):
        for index in range(new):
            verify_inclusion(
                hashes[index], index, new, inclusion_proof(get, index, new), roots[new]
            )
        for old in range(new + 1):
            proof = consistency_proof(get, old, new)
            verify_consistency(old, new, roots[old], roots[new], proof)
            if 0 < old < new:
                with pytest.raises(ProofError):
                    verify_consistency(old, new, roots[old - 1], roots[new], proof)
