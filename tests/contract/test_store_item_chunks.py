"""Store contract: slices of a foreach's list (``put_item_chunk`` / ``get_item_chunk``), large inputs."""

from __future__ import annotations

from dataclasses import replace

from engine.ports import Store, Transaction
from engine.records import ItemChunkRecord
from tests.contract.test_store_contract import A, B, execution


def chunk(number: int, items: list[object], tenant: str = A, step_id: str = "ship") -> ItemChunkRecord:
    return ItemChunkRecord(tenant=tenant, execution_id="ex-1", step_id=step_id, chunk=number, items=items)


def test_a_chunk_reads_back_by_step_and_number_within_its_tenant(store: Store) -> None:
    first, second = chunk(0, [{"sku": "a"}, None, 3, "x"]), chunk(1, [[1, 2], {"nested": {"k": True}}])
    other_step, other_tenant = chunk(0, ["other step"], step_id="pack"), chunk(0, ["tenant b"], tenant=B)

    def seed(tx: Transaction) -> None:
        tx.put_execution(execution())
        for record in (first, second, other_step, other_tenant):
            tx.put_item_chunk(record)
        assert tx.get_item_chunk(A, "ex-1", "ship", 1) == second  # read-your-writes

    store.atomic(seed)
    assert store.atomic(lambda tx: tx.get_item_chunk(A, "ex-1", "ship", 0)) == first
    assert store.read(lambda reads: reads.get_item_chunk(A, "ex-1", "ship", 1)) == second
    assert store.read(lambda reads: reads.get_item_chunk(A, "ex-1", "pack", 0)) == other_step
    assert store.read(lambda reads: reads.get_item_chunk(B, "ex-1", "ship", 0)) == other_tenant
    assert store.read(lambda reads: reads.get_item_chunk(A, "ex-1", "ship", 2)) is None
    assert store.read(lambda reads: reads.get_item_chunk(A, "ex-2", "ship", 0)) is None


def test_a_chunk_is_replaced_and_a_large_one_round_trips(store: Store) -> None:
    # Larger than the default inline payload size: stored out of line where the backend needs it.
    large = chunk(0, ["x" * 1000 for _ in range(400)])
    store.atomic(lambda tx: tx.put_item_chunk(chunk(0, ["old"])))
    store.atomic(lambda tx: tx.put_item_chunk(large))
    assert store.read(lambda reads: reads.get_item_chunk(A, "ex-1", "ship", 0)) == large


def test_a_large_execution_input_reads_back_in_and_out_of_transactions(store: Store) -> None:
    # Large enough that a backend may keep it apart from the header and read it on first use.
    record = execution(input={"items": [{"i": i, "pad": "x" * 100} for i in range(2000)]})
    store.atomic(lambda tx: tx.put_execution(record))
    assert store.get_execution(A, "ex-1") == record
    assert store.read(lambda reads: reads.get_execution(A, "ex-1")) == record
    assert store.atomic(lambda tx: tx.get_execution(A, "ex-1")) == record
    # A header rewritten without its input being looked at keeps the input.
    store.atomic(lambda tx: tx.put_execution(replace(tx.get_execution(A, "ex-1"), version=2)))
    assert store.get_execution(A, "ex-1") == replace(record, version=2)
