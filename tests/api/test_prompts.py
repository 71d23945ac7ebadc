"""Named, versioned prompts: ``/v1/prompts`` and its GraphQL twins, and AI steps that use
them (from the definition or the tenant's store), with the rendered prompt in the history."""

from __future__ import annotations

from typing import Any

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import TENANT_A, TENANT_B

MODELS = {"scripted": {"script": [{"content": "Refund sent."}]}}


def _agent(step_id: str, prompt: Any, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "ai.agent", "with": {"model": "fake:scripted", "prompt": prompt, **extra}}


def _history(api: Api, execution_id: str) -> list[dict[str, Any]]:
    return api.call("GET", f"/v1/executions/{execution_id}/history").json()["items"]


def test_versions_are_added_read_and_listed(api: Api) -> None:
    first = api.call("PUT", "/v1/prompts/reply", json={"template": "Order ${input.order}"})
    same = api.call("PUT", "/v1/prompts/reply", json={"template": "Order ${input.order}"})
    second = api.call("PUT", "/v1/prompts/reply", json={"template": "Order ${input.order}!", "system": "Be kind."})
    assert (first.status_code, same.status_code, second.status_code) == (201, 200, 201)
    assert (first.json()["version"], same.json()["version"], second.json()["version"]) == (1, 1, 2)
    assert api.call("GET", "/v1/prompts/reply").json()["template"] == "Order ${input.order}!"
    assert api.call("GET", "/v1/prompts/reply/versions/1").json()["system"] is None
    versions = api.call("GET", "/v1/prompts/reply/versions").json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert [p["name"] for p in api.call("GET", "/v1/prompts").json()["items"]] == ["reply"]
    assert api.call("GET", "/v1/prompts", tenant=TENANT_B).json()["items"] == []


def test_unknown_or_invalid_prompts_are_refused(api: Api) -> None:
    assert api.call("GET", "/v1/prompts/nope").status_code == 404
    assert api.call("GET", "/v1/prompts/nope/versions").status_code == 404
    api.call("PUT", "/v1/prompts/reply", json={"template": "x"})
    assert api.call("GET", "/v1/prompts/reply/versions/9").status_code == 404
    broken = api.call("PUT", "/v1/prompts/reply", json={"template": "Hi ${input.name"})
    assert broken.status_code == 422
    bad_cel = api.call("PUT", "/v1/prompts/reply", json={"template": "Hi ${input.}"})
    assert bad_cel.status_code == 422 and bad_cel.json()["problems"][0]["path"] == "template"
    assert api.call("PUT", "/v1/prompts/a%20b", json={"template": "x"}).status_code == 422
    assert api.call("PUT", "/v1/prompts/reply", json={"template": "y"}, role=Role.VIEWER).status_code == 403


def test_graphql_twins_save_and_read_prompts(api: Api) -> None:
    apply = "mutation($n: String!, $t: String!) { applyPrompt(name: $n, template: $t) { ... on AppliedPrompt { created prompt { version } } ... on Problem { code } } }"
    assert api.gql(apply, {"n": "reply", "t": "one"})["data"]["applyPrompt"] == {
        "created": True,
        "prompt": {"version": 1},
    }
    assert api.gql(apply, {"n": "reply", "t": "one"})["data"]["applyPrompt"] == {
        "created": False,
        "prompt": {"version": 1},
    }
    assert api.gql(apply, {"n": "reply", "t": "two"})["data"]["applyPrompt"]["prompt"] == {"version": 2}
    assert api.gql(apply, {"n": "reply", "t": "${"})["data"]["applyPrompt"] == {"code": "invalid"}
    read = '{ prompt(name: "reply", version: 1) { template } latest: prompt(name: "reply") { version } missing: prompt(name: "x") { version } }'
    assert api.gql(read)["data"] == {"prompt": {"template": "one"}, "latest": {"version": 2}, "missing": None}
    pages = '{ prompts { items { name version } nextCursor } promptVersions(name: "reply", limit: 1) { items { version } nextCursor } }'
    data = api.gql(pages)["data"]
    assert data["prompts"] == {"items": [{"name": "reply", "version": 2}], "nextCursor": None}
    assert data["promptVersions"] == {"items": [{"version": 2}], "nextCursor": "2"}


def test_graphql_rewards_a_bandit_decision_once(api: Api) -> None:
    routed = {
        "name": "routed",
        "steps": [{"id": "route", "type": "ai.route", "with": {"strategy": "bandit", "routes": ["a", "b"]}}],
    }
    api.call("PUT", "/v1/workflows/routed", json=routed)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "routed"}).json()["id"]
    api.driver.run_all()
    reward = 'mutation($id: ID!, $r: Float!) { rewardDecision(id: $id, step: "route", reward: $r) { ... on RewardResult { counted } ... on Problem { code } } }'
    assert api.gql(reward, {"id": execution_id, "r": 1.0})["data"]["rewardDecision"] == {"counted": True}
    assert api.gql(reward, {"id": execution_id, "r": 1.0})["data"]["rewardDecision"] == {"counted": False}
    assert api.gql(reward, {"id": execution_id, "r": 2.0})["data"]["rewardDecision"] == {"code": "invalid"}
    assert api.gql(reward, {"id": "nope", "r": 1.0})["data"]["rewardDecision"] == {"code": "not-found"}
    arms = api.call("GET", "/v1/workflows/routed/steps/route/decisions").json()["arms"]
    assert [(arm["successes"], arm["failures"]) for arm in arms.values()] == [(1.0, 0.0)]


def test_agent_steps_render_named_prompts_and_record_them_with_the_answer(api: Api) -> None:
    api.call("PUT", "/v1/prompts/stored", json={"template": "Stored v1 for ${input.order}"})
    api.call(
        "PUT",
        "/v1/prompts/stored",
        json={"template": "Stored v2 for ${steps.first.output.answer}", "system": "Sys ${input.order}"},
    )
    workflow = {
        "name": "prompted",
        "models": MODELS,
        "prompts": {
            "local": [{"version": 1, "template": "old"}, {"version": 2, "template": "Local v2: ${input.order}"}]
        },
        "steps": [
            _agent("first", {"name": "local"}),
            {**_agent("second", {"name": "stored"}), "needs": ["first"]},
            {**_agent("third", {"name": "stored", "version": 1}, system="Own system"), "needs": ["second"]},
        ],
    }
    assert api.call("PUT", "/v1/workflows/prompted", json=workflow).status_code == 201
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "prompted", "input": {"order": "A-1"}}).json()[
        "id"
    ]
    api.driver.run_all()
    assert api.call("GET", f"/v1/executions/{execution_id}").json()["status"] == "SUCCEEDED"
    recorded = {e["step_key"]: e["data"] for e in _history(api, execution_id) if e["type"] == "step.succeeded"}
    assert recorded["first"]["prompt"] == {
        "source": "workflow",
        "name": "local",
        "version": 2,
        "text": "Local v2: A-1",
        "system": None,
    }
    assert recorded["second"]["prompt"] == {
        "source": "tenant",
        "name": "stored",
        "version": 2,
        "text": "Stored v2 for Refund sent.",
        "system": "Sys A-1",
    }
    assert recorded["third"]["prompt"]["text"] == "Stored v1 for A-1"
    assert recorded["third"]["prompt"]["system"] == "Own system"
    assert {data["answer"] for data in recorded.values()} == {"Refund sent."}


def test_an_unknown_prompt_version_fails_validation_and_an_unknown_stored_prompt_fails_the_attempt(api: Api) -> None:
    workflow = {
        "name": "unknown",
        "models": MODELS,
        "prompts": {"local": "Hi"},
        "steps": [_agent("ask", {"name": "local", "version": 3})],
    }
    refused = api.call("PUT", "/v1/workflows/unknown", json=workflow)
    assert refused.status_code == 422
    assert refused.json()["problems"] == [
        {"path": "steps[0].with.prompt", "message": "prompt 'local' has no version 3 (declared: 1)"}
    ]
    reads_a_stranger = {
        **workflow,
        "prompts": {"local": "Hi ${steps.other.output}"},
        "steps": [_agent("ask", {"name": "local"})],
    }
    assert api.call("PUT", "/v1/workflows/unknown", json=reads_a_stranger).status_code == 422
    workflow["steps"] = [_agent("ask", {"name": "elsewhere", "version": 1})]
    assert api.call("PUT", "/v1/workflows/unknown", json=workflow).status_code == 201
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "unknown"}).json()["id"]
    api.driver.run_all()
    step = api.service.list_steps(TENANT_A, execution_id)[0]
    assert (step.status.value, step.error["type"]) == ("FAILED", "PromptNotFound")  # type: ignore[index]
    assert "no prompt 'elsewhere' (version 1)" in step.error["message"]  # type: ignore[index]


def test_a_stored_prompt_reads_ancestors_even_when_the_step_config_holds_templates(api: Api) -> None:
    """A config checked only once rendered (here `memory.namespace` holds `${input.customer}`,
    which the label pattern refuses before rendering) still loads what its named prompts read:
    the stored prompt failed with "no such key: 'first'" (found from outside)."""
    api.call("PUT", "/v1/prompts/follow-up", json={"template": "After ${steps.first.output.answer}"})
    local = {"local": "Local after ${steps.first.output.answer}"}
    memory = {"namespace": ["customers", "${input.customer}"]}
    workflow = {
        "name": "remembering",
        "models": MODELS,
        "prompts": local,
        "steps": [
            _agent("first", "Hello"),
            {**_agent("second", {"name": "follow-up"}, memory=memory), "needs": ["first"]},
            {**_agent("third", {"name": "local"}, memory=memory), "needs": ["first"]},
        ],
    }
    assert api.call("PUT", "/v1/workflows/remembering", json=workflow).status_code == 201
    started = api.call("POST", "/v1/executions", json={"workflow": "remembering", "input": {"customer": "c1"}})
    api.driver.run_all()
    execution = api.call("GET", f"/v1/executions/{started.json()['id']}").json()
    assert execution["status"] == "SUCCEEDED", [s["error"] for s in execution["steps"]]
    recorded = {e["step_key"]: e["data"] for e in _history(api, execution["id"]) if e["type"] == "step.succeeded"}
    assert recorded["second"]["prompt"]["text"] == "After Refund sent."
    assert recorded["third"]["prompt"]["text"] == "Local after Refund sent."
