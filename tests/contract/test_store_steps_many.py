"""Store contract: ``list_steps_many`` answers like ``list_steps`` for each execution, in one call."""

from __future__ import annotations

from engine.ports import Store, Transaction
from engine.records import StepRecord
from tests.contract.test_store_contract import A, B, execution, step


def test_list_steps_many_equals_list_steps_per_execution(store: Store) -> None:
    def seed(tx: Transaction) -> None:
        for execution_id, keys in (("ex-1", ["b", "a"]), ("ex-2", ["c"]), ("ex-3", [])):
            tx.put_execution(execution(execution_id))
            for key in keys:
                tx.put_step(step(key, execution_id))
        tx.put_execution(execution("ex-1", tenant=B))
        tx.put_step(step("z", "ex-1", tenant=B))

    store.atomic(seed)
    found = store.list_steps_many(A, ["ex-1", "ex-2", "ex-3", "missing"])
    assert set(found) == {"ex-1", "ex-2", "ex-3", "missing"}
    for execution_id, steps in found.items():
        assert _keys(steps) == _keys(store.list_steps(A, execution_id))
    assert _keys(found["ex-1"]) == ["a", "b"]
    assert found["missing"] == []
    assert _keys(store.list_steps_many(B, ["ex-1"])["ex-1"]) == ["z"]
    assert store.list_steps_many(A, []) == {}


def _keys(steps: list[StepRecord]) -> list[str]:
    return [s.key for s in steps]
