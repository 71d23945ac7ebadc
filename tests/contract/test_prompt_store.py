"""The PromptStore contract, run against the SQLite and Firestore adapters (see conftest.py)."""

from __future__ import annotations

import threading

import pytest

from engine.bootstrap import build_prompt_store
from engine.errors import StoreUnavailable
from engine.ports import PromptStore, Store

A, B = "tenant-a", "tenant-b"
T0 = 1_700_000_000.0


@pytest.fixture
def prompts(store: Store) -> PromptStore:
    return build_prompt_store(store)


def test_versions_are_numbered_from_one_and_unchanged_texts_add_none(prompts: PromptStore) -> None:
    first, created = prompts.add_prompt_version(A, "reply", "Hi ${input.name}", None, None, T0)
    assert (first.version, created) == (1, True)
    same, created = prompts.add_prompt_version(A, "reply", "Hi ${input.name}", None, None, T0 + 1)
    assert (same, created) == (first, False)
    second, created = prompts.add_prompt_version(A, "reply", "Hello ${input.name}", "Be brief.", "shorter", T0 + 2)
    assert (second.version, created, second.system, second.description) == (2, True, "Be brief.", "shorter")


def test_get_reads_a_version_or_the_newest(prompts: PromptStore) -> None:
    prompts.add_prompt_version(A, "reply", "one", None, None, T0)
    prompts.add_prompt_version(A, "reply", "two", None, None, T0 + 1)
    assert prompts.get_prompt(A, "reply", 1).template == "one"  # type: ignore[union-attr]
    newest = prompts.get_prompt(A, "reply")
    assert newest is not None and (newest.version, newest.template, newest.created_at) == (2, "two", T0 + 1)
    assert prompts.get_prompt(A, "reply", 3) is None
    assert prompts.get_prompt(A, "other") is None


def test_tenants_never_see_each_others_prompts(prompts: PromptStore) -> None:
    prompts.add_prompt_version(A, "reply", "for a", None, None, T0)
    assert prompts.get_prompt(B, "reply") is None
    assert prompts.list_prompts(B).items == []
    record, created = prompts.add_prompt_version(B, "reply", "for b", None, None, T0)
    assert (record.version, created) == (1, True)
    assert prompts.get_prompt(A, "reply").template == "for a"  # type: ignore[union-attr]


def test_listings_page_by_name_and_by_version_newest_first(prompts: PromptStore) -> None:
    for name in ("c", "a/b", "b.x"):
        prompts.add_prompt_version(A, name, f"{name} 1", None, None, T0)
    prompts.add_prompt_version(A, "c", "c 2", None, None, T0 + 1)
    page = prompts.list_prompts(A, limit=2)
    assert [(p.name, p.version) for p in page.items] == [("a/b", 1), ("b.x", 1)]
    rest = prompts.list_prompts(A, cursor=page.next_cursor, limit=2)
    assert [(p.name, p.version) for p in rest.items] == [("c", 2)] and rest.next_cursor is None
    for text in ("c 3", "c 4"):
        prompts.add_prompt_version(A, "c", text, None, None, T0 + 2)
    versions = prompts.list_prompt_versions(A, "c", limit=3)
    assert [p.version for p in versions.items] == [4, 3, 2]
    older = prompts.list_prompt_versions(A, "c", cursor=versions.next_cursor, limit=3)
    assert [p.version for p in older.items] == [1] and older.next_cursor is None


def test_concurrent_writers_never_share_a_version(prompts: PromptStore) -> None:
    taken: list[int] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        # Contention may exhaust a Firestore transaction's retries (StoreUnavailable): a caller retries.
        for attempt in range(5):
            try:
                taken.append(prompts.add_prompt_version(A, "race", f"text {n}", None, None, T0)[0].version)
                return
            except StoreUnavailable as exc:
                if attempt == 4:
                    errors.append(exc)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(taken) == [1, 2, 3, 4]
