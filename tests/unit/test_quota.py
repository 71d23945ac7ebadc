"""The active-execution counts trigger starts check the tenant quota against (injected clock)."""

from __future__ import annotations

from engine.quota import ActiveCounts


class Counter:
    def __init__(self) -> None:
        self.active = {"t1": 5, "t2": 0}
        self.asked: list[str] = []

    def __call__(self, tenant: str) -> int:
        self.asked.append(tenant)
        return self.active[tenant]


def test_a_recent_count_is_reused_with_this_process_starts_added_while_it_leaves_room():
    now = [100.0]
    count = Counter()
    counts = ActiveCounts(count, 10, max_age=1.0, clock=lambda: now[0])
    assert counts.budget("t1", 3) == 5 and count.asked == ["t1"]
    counts.started("t1", 2)
    assert counts.budget("t1", 3) == 3 and count.asked == ["t1"]  # reused: 10 - 5 - 2
    counts.started("t1", 1)
    count.active["t1"] = 4  # executions ended meanwhile
    assert counts.budget("t1", 3) == 6 and count.asked == ["t1", "t1"]  # 2 left < 3 wanted: counted again
    now[0] += 1.5
    assert counts.budget("t1", 1) == 6 and count.asked == ["t1", "t1", "t1"]  # too old: counted again


def test_tenants_are_counted_apart_and_an_uncounted_tenant_ignores_starts():
    count = Counter()
    counts = ActiveCounts(count, 2, clock=lambda: 0.0)
    counts.started("t2", 5)  # never counted: nothing to add to
    assert counts.budget("t2", 1) == 2
    assert counts.budget("t1", 1) == -3  # over its quota already
    assert count.asked == ["t2", "t1"]
