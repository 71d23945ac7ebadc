"""GraphQL hardening: abusive documents are refused while parsing/validating, before any resolver runs."""

from __future__ import annotations

from tests.api.conftest import Api, ApiFactory
from tests.api.support import CountingStore


def _refused_without_store_calls(api: Api, document: str) -> list[str]:
    store = api.service.store
    assert isinstance(store, CountingStore)
    store.calls.clear()
    body = api.gql(document)
    assert body.get("data") is None, body
    assert body["errors"], body
    assert sum(store.calls.values()) == 0, f"a resolver ran: {dict(store.calls)}"
    return [e["message"] for e in body["errors"]]


def test_a_query_fifty_levels_deep_is_refused(counted: Api) -> None:
    assert "errors" not in counted.gql("{ executions { items { steps { key } workflowVersion { name } } } }")
    fields = "id"
    for _ in range(50):
        fields = f"executions {{ items {{ {fields} }} }}"
    messages = _refused_without_store_calls(counted, "{ " + fields + " }")
    assert any("depth" in m for m in messages), messages


def test_alias_amplification_through_fragments_is_refused(counted: Api) -> None:
    aliases = " ".join(f"a{i}: workflows {{ items {{ name }} }}" for i in range(10))
    spreads = " ".join("...F" for _ in range(10))
    document = f"query {{ {spreads} }} fragment F on Query {{ {aliases} }}"
    messages = _refused_without_store_calls(counted, document)
    assert any("aliases" in m for m in messages), messages


def test_a_hundred_thousand_tokens_are_refused(counted: Api) -> None:
    document = "{ " + " ".join("__typename" for _ in range(100_000)) + " }"
    assert len(document) < 2 * 1024 * 1024
    api = counted
    store = api.service.store
    assert isinstance(store, CountingStore)
    store.calls.clear()
    response = api.client.post("/graphql", json={"query": document}, headers=api.headers())
    # The body limit (1 MiB by default in tests: 64 KiB) or the token limit refuses it; no resolver runs.
    assert response.status_code in (200, 413)
    if response.status_code == 200:
        assert response.json()["data"] is None
        assert "token" in response.json()["errors"][0]["message"].lower()
    assert sum(store.calls.values()) == 0


def test_the_token_limit_applies_below_the_body_limit(make_api: ApiFactory) -> None:
    api = make_api(counting=True, max_request_bytes=4 * 1024 * 1024, graphql_max_document_bytes=4 * 1024 * 1024)
    api.gql("{ __typename }")
    document = "{ " + " ".join("__typename" for _ in range(100_000)) + " }"
    messages = _refused_without_store_calls(api, document)
    assert any("token" in m.lower() for m in messages), messages


def test_introspection_is_off_in_the_production_profile(make_api: ApiFactory) -> None:
    production = make_api(profile="production")
    body = production.gql("{ __schema { types { name } } }")
    assert body.get("data") is None and body["errors"]
    development = make_api(profile="development")
    assert development.gql("{ __schema { queryType { name } } }")["data"]["__schema"]["queryType"]["name"] == "Query"
    switched = make_api(profile="production", graphql_introspection=True)
    assert "errors" not in switched.gql("{ __schema { queryType { name } } }")
