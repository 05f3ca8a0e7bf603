"""The writer's cache of subjects: bounded, least recently used out first."""

from __future__ import annotations

from ledger.incidents import IncidentInfo
from ledger.subjects import Cache


def test_cache_keeps_the_most_recently_used_within_its_bound() -> None:
    cache = Cache(max_entries=3)
    cache.update({i: IncidentInfo(i, "ARM") for i in (1, 2, 3)})
    assert cache.get(1) == IncidentInfo(1, "ARM")  # 1 is now the most recently used
    cache.update({4: IncidentInfo(4, "AZE")})
    assert cache.get(2) is None  # the least recently used went out
    assert [cache.get(i) is not None for i in (1, 3, 4)] == [True, True, True]
    cache.update({3: IncidentInfo(3, "ARM", retracted_at=9)})
    assert cache.get(3) == IncidentInfo(3, "ARM", retracted_at=9)  # replaced, not added
    cache.clear()
    assert [cache.get(i) for i in (1, 3, 4)] == [None, None, None]
