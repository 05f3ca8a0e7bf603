"""Proofs from the stored tree: the nodes a proof needs are computed first and read in one
query (as golang.org/x/mod/sumdb/tlog does), on SQLite and PostgreSQL, and the proofs are
the reference ones."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from ledger.formats import merkle
from ledger.storage import Built, LedgerStore, NewEntry
from tests.conftest import RunningLedger, selects_run, sqlite_plans
from tests.reports import report, signed
from tests.test_merkle import CONSISTENCY, INCLUSION, LEAVES, build, getter

SIZE = 1000


@pytest.fixture
def store(db_url: str) -> Iterator[LedgerStore]:
    store = LedgerStore.open(db_url)
    # The reference vectors' leaves first, so their known answers hold for small sizes.
    leaves = LEAVES + [b"leaf %d" % i for i in range(len(LEAVES), SIZE)]
    store.append(
        [NewEntry(i.to_bytes(32, "big"), i.to_bytes(32, "big"), "test", i) for i in range(SIZE)],
        build=lambda item, index, prev, t: Built(leaves[index], ()),
        clock_us=lambda: 0,
        sign_checkpoint=lambda size, root: f"{size}",
    )
    store.leaves = leaves  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.close()


def test_stored_proofs_give_the_known_answers(store: LedgerStore) -> None:
    for index, size, proof in INCLUSION:
        assert store.inclusion_proof(index, size) == proof
        # With the leaf's hash, from the same nodes (level 0), as the service answers it.
        assert store.inclusion(index, size) == (proof, merkle.leaf_hash(store.leaves[index]))  # type: ignore[attr-defined]
    for old, new, proof in CONSISTENCY:
        if old != new:
            assert store.consistency_proof(old, new) == proof


def test_proofs_read_their_nodes_in_one_query(store: LedgerStore) -> None:
    reference = getter(build(store.leaves)[0])  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(_conn: object, _cur: object, statement: str, *_args: object) -> None:
        if "tree_nodes" in statement:
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    rng = random.Random(3)
    try:
        for _ in range(20):
            size = rng.randint(2, SIZE)
            index, old = rng.randrange(size), rng.randint(1, size)
            before = len(statements)
            assert store.inclusion_proof(index, size) == merkle.inclusion_proof(
                reference, index, size
            )
            assert store.consistency_proof(old, size) == merkle.consistency_proof(
                reference, old, size
            )
            assert store.root_at(size) == merkle.subtree_hash(reference, 0, size)
            assert len(statements) - before <= 3  # one query each (none for an empty proof)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def test_a_proof_the_service_answers_reads_the_log_twice(running: RunningLedger) -> None:
    """Its size (to bound the request) and the proof's nodes: two queries, not three."""
    for hours in (1, 2, 3):
        running.client.submit(signed(report("ARM", hours_ago=hours), running.parties.arm_monitor))
    ledger = running.ledger
    for prove in (lambda: ledger.inclusion_proof(1, 4), lambda: ledger.consistency_proof(2, 4)):
        assert len(selects_run(ledger.store.engine, prove)) == 2


def test_proofs_search_the_nodes_by_index(store: LedgerStore) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans; PostgreSQL plans by its statistics")
    plans = sqlite_plans(
        store.engine,
        lambda: (store.inclusion_proof(123, SIZE), store.consistency_proof(77, SIZE)),
    )
    nodes = [plan for statement, plan in plans.items() if "tree_nodes" in statement]
    assert nodes, plans  # one statement, or two (the two proofs may read as many levels)
    for plan in nodes:
        assert "SCAN" not in plan and "SEARCH tree_nodes" in plan, plan


def test_proofs_of_one_shape_run_one_statement_text(store: LedgerStore) -> None:
    """The nodes are bound as parameters, not rendered into the statement: proofs needing
    as many nodes send the database the same text, which it has prepared already (a text
    per proof made SQLite plan each proof again, most of its cost)."""
    # 14 nodes each, spread over the levels differently (1: one at level 0, 6: none, 513: two).
    ran = selects_run(store.engine, lambda: [store.consistency_proof(m, SIZE) for m in (1, 6, 513)])
    texts = {statement for statement, _ in ran if "tree_nodes" in statement}
    assert len(ran) == 6 and len(texts) == 1, texts  # the log's size, then the nodes
