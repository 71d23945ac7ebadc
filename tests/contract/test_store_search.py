"""Execution search, part of the Store contract: every filter, their combinations, paging and counts.

Runs against every backend (see conftest.py). Each case states the executions it wants with
a plain predicate over the records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from engine.errors import InvalidFilter
from engine.ports import Store
from engine.records import ExecutionRecord, Page
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus
from tests.contract.test_store_contract import T0, A, B, collect, execution, save

RUNNING, FAILED, SUCCEEDED = ExecutionStatus.RUNNING, ExecutionStatus.FAILED, ExecutionStatus.SUCCEEDED
CANCELLED = ExecutionStatus.CANCELLED


def _labels(n: int) -> dict[str, str]:
    labels = {"team": "shop" if n % 2 else "ops"}
    if n % 3 == 0:
        labels["env"] = "prod"
    if n % 4 == 0:
        labels["url"] = "https://x.example:8443/a"  # a value holding ':'
    return labels


def _corpus() -> list[ExecutionRecord]:
    """24 executions of tenant A; pairs share a timestamp, so paging must break ties by id."""
    statuses = [RUNNING, SUCCEEDED, FAILED, CANCELLED]
    return [
        execution(
            f"ex-{n:02d}",
            workflow="orders" if n % 3 else "refunds",
            version=1 + n % 2,
            status=statuses[n % 4],
            labels=_labels(n),
            trigger_id=("tr-1" if n % 5 == 0 else "tr-2") if n % 5 in (0, 1) else None,
            created_at=T0 + n // 2,
        )
        for n in range(24)
    ]


def _tenant_b() -> list[ExecutionRecord]:
    """Executions of tenant B that every tenant-A filter would match, were tenants mixed up."""
    return [replace(r, tenant=B, id=f"b-{r.id}") for r in _corpus()[:6]]


Wanted = Callable[[ExecutionRecord], bool]

CASES: list[tuple[str, dict[str, Any], Wanted]] = [
    ("everything", {}, lambda r: True),
    ("status", {"status": FAILED}, lambda r: r.status is FAILED),
    ("workflow", {"workflow": "refunds"}, lambda r: r.workflow == "refunds"),
    ("version", {"workflow": "orders", "version": 2}, lambda r: r.workflow == "orders" and r.version == 2),
    ("one label", {"labels": (("team", "shop"),)}, lambda r: r.labels.get("team") == "shop"),
    (
        "two labels",
        {"labels": (("env", "prod"), ("team", "shop"))},
        lambda r: r.labels.get("env") == "prod" and r.labels.get("team") == "shop",
    ),
    (
        "three labels, one value with ':'",
        {"labels": (("env", "prod"), ("team", "ops"), ("url", "https://x.example:8443/a"))},
        lambda r: r.labels.get("env") == "prod" and r.labels.get("team") == "ops" and "url" in r.labels,
    ),
    ("trigger", {"trigger_id": "tr-2"}, lambda r: r.trigger_id == "tr-2"),
    ("created_after", {"created_after": T0 + 7}, lambda r: r.created_at >= T0 + 7),
    ("created_before", {"created_before": T0 + 3}, lambda r: r.created_at < T0 + 3),
    ("range", {"created_after": T0 + 2, "created_before": T0 + 9}, lambda r: T0 + 2 <= r.created_at < T0 + 9),
    (
        "label and status",
        {"labels": (("team", "ops"),), "status": FAILED},
        lambda r: r.labels.get("team") == "ops" and r.status is FAILED,
    ),
    (
        "workflow, version and label",
        {"workflow": "orders", "version": 1, "labels": (("team", "ops"),)},
        lambda r: r.workflow == "orders" and r.version == 1 and r.labels.get("team") == "ops",
    ),
    (
        "trigger and range",
        {"trigger_id": "tr-1", "created_after": T0 + 1, "created_before": T0 + 11},
        lambda r: r.trigger_id == "tr-1" and T0 + 1 <= r.created_at < T0 + 11,
    ),
    (
        "every filter",
        {
            "workflow": "orders",
            "version": 2,
            "status": CANCELLED,
            "labels": (("team", "shop"),),
            "trigger_id": "tr-2",
            "created_after": T0,
            "created_before": T0 + 12,
        },
        lambda r: (
            (r.workflow, r.version, r.status, r.labels.get("team"), r.trigger_id)
            == ("orders", 2, CANCELLED, "shop", "tr-2")
        ),
    ),
    (
        "label and range",
        {"labels": (("env", "prod"),), "created_after": T0 + 3},
        lambda r: "env" in r.labels and r.created_at >= T0 + 3,
    ),
]
EMPTY_CASES: list[tuple[str, dict[str, Any]]] = [
    ("unknown label value", {"labels": (("team", "nobody"),)}),
    ("unknown label key", {"labels": (("owner", "shop"),)}),
    ("unknown trigger", {"trigger_id": "tr-9"}),
    ("version of another workflow", {"workflow": "refunds", "version": 7}),
    ("label present on no execution of the workflow", {"workflow": "refunds", "labels": (("team", "nobody"),)}),
]


@pytest.fixture
def corpus(store: Store) -> list[ExecutionRecord]:
    records = _corpus()
    save(store, *records, *_tenant_b())
    return records


@pytest.mark.parametrize(("filters", "wanted"), [(f, w) for _, f, w in CASES], ids=[c[0] for c in CASES])
def test_every_filter_lists_what_it_matches_newest_first_across_pages(
    store: Store, corpus: list[ExecutionRecord], filters: dict[str, Any], wanted: Wanted
) -> None:
    where = ExecutionFilter(**filters)
    expected = sorted((r for r in corpus if wanted(r)), key=lambda r: (r.created_at, r.id), reverse=True)
    assert expected, "the case must select something"

    for limit in (1, 3, 50):

        def page(cursor: str | None, n: int = limit) -> Page:
            return store.list_executions(A, where, cursor=cursor, limit=n)

        listed = collect(page, limit)
        assert [r.id for r in listed] == [r.id for r in expected], f"limit {limit}"
    assert store.list_executions(A, where, limit=200).items == expected


COUNT_CASES = [case for case in CASES if "status" not in case[1]]


@pytest.mark.parametrize(("filters", "wanted"), [(f, w) for _, f, w in COUNT_CASES], ids=[c[0] for c in COUNT_CASES])
def test_counts_per_status_match_the_listing(
    store: Store, corpus: list[ExecutionRecord], filters: dict[str, Any], wanted: Wanted
) -> None:
    per_status = Counter(r.status for r in corpus if wanted(r))
    counts = store.count_executions(A, ExecutionFilter(**filters))
    assert list(counts) == list(ExecutionStatus), "every status is a key, in the enum's order"
    assert counts == {s: per_status.get(s, 0) for s in ExecutionStatus}


@pytest.mark.parametrize("filters", [f for _, f in EMPTY_CASES], ids=[c[0] for c in EMPTY_CASES])
def test_a_filter_nothing_matches_lists_and_counts_nothing(
    store: Store, corpus: list[ExecutionRecord], filters: dict[str, Any]
) -> None:
    where = ExecutionFilter(**filters)
    page = store.list_executions(A, where, limit=5)
    assert page.items == [] and page.next_cursor is None
    assert store.count_executions(A, where) == dict.fromkeys(ExecutionStatus, 0)


def test_search_never_crosses_tenants(store: Store, corpus: list[ExecutionRecord]) -> None:
    where = ExecutionFilter(labels=(("team", "ops"),), trigger_id="tr-1")
    in_b = [r.id for r in store.list_executions(B, where, limit=50).items]
    assert in_b and all(i.startswith("b-") for i in in_b)
    assert all(not r.id.startswith("b-") for r in store.list_executions(A, where, limit=50).items)
    assert sum(store.count_executions(B).values()) == len(_tenant_b())
    assert sum(store.count_executions("tenant-c").values()) == 0


def test_sparse_matches_page_correctly(store: Store) -> None:
    """One match in seven, two labels: every page but the last is full and none is skipped."""
    records = [
        execution(f"ex-{n:03d}", labels={"team": "shop", "env": "prod" if n % 7 == 0 else "dev"}, created_at=T0 + n)
        for n in range(60)
    ]
    save(store, *records)
    where = ExecutionFilter(labels=(("env", "prod"), ("team", "shop")))
    listed = collect(lambda cursor: store.list_executions(A, where, cursor=cursor, limit=2), 2)
    assert [r.id for r in listed] == [f"ex-{n:03d}" for n in reversed(range(0, 60, 7))]
    assert store.count_executions(A, where)[RUNNING] == 9


def test_labels_follow_the_latest_write_of_an_execution(store: Store) -> None:
    save(store, execution("ex-1", labels={"team": "shop", "env": "dev"}))
    save(store, execution("ex-1", labels={"team": "ops"}, status=SUCCEEDED))

    def ids(*pairs: tuple[str, str]) -> list[str]:
        return [r.id for r in store.list_executions(A, ExecutionFilter(labels=pairs)).items]

    assert ids(("team", "ops")) == ["ex-1"]
    assert ids(("team", "shop")) == [] and ids(("env", "dev")) == []
    assert store.count_executions(A, ExecutionFilter(labels=(("team", "ops"),)))[SUCCEEDED] == 1


def test_counts_refuse_a_status_filter(store: Store) -> None:
    with pytest.raises(InvalidFilter):
        store.count_executions(A, ExecutionFilter(status=RUNNING))


def test_the_backfill_has_nothing_to_do_for_executions_written_through_the_port(
    store: Store, corpus: list[ExecutionRecord]
) -> None:
    assert store.backfill_search_fields() == 0
    assert [r.id for r in store.list_executions(A, ExecutionFilter(labels=(("env", "prod"),)), limit=50).items] == [
        r.id for r in sorted(corpus, key=lambda r: (r.created_at, r.id), reverse=True) if "env" in r.labels
    ]
