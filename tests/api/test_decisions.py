"""``POST /v1/executions/{id}/rewards`` and ``GET /v1/workflows/{name}/steps/{step}/decisions``."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.api.support import TENANT_A

ROUTED = {
    "name": "routed",
    "steps": [{"id": "route", "type": "ai.route", "with": {"strategy": "bandit", "routes": ["a", "b"]}}],
}


def test_a_reward_through_the_api_counts_once_and_shows_in_the_estimates(api: Api) -> None:
    api.call("PUT", "/v1/workflows/routed", json=ROUTED)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "routed"}).json()["id"]
    api.driver.run_all()
    chosen = api.service.list_steps(TENANT_A, execution_id)[0].output["route"]
    first = api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "route", "reward": 1})
    again = api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "route", "reward": 1})
    assert (first.status_code, first.json(), again.json()) == (200, {"counted": True}, {"counted": False})
    estimates = api.call("GET", "/v1/workflows/routed/steps/route/decisions").json()
    assert estimates["bandit"] == "routed/route"
    assert estimates["arms"] == {chosen: {"successes": 1.0, "failures": 0.0, "alpha": 2.0, "beta": 1.0, "mean": 2 / 3}}


def test_rewards_and_estimates_are_refused_for_what_is_not_a_bandit_decision(api: Api) -> None:
    api.call("PUT", "/v1/workflows/routed", json=ROUTED)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "routed"}).json()["id"]
    api.driver.run_all()
    assert (
        api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "nope", "reward": 1}).status_code
        == 404
    )
    assert (
        api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "route", "reward": 2}).status_code
        == 422
    )
    assert api.call("GET", "/v1/workflows/routed/steps/missing/decisions").status_code == 404


def test_graphql_shows_the_same_estimates(api: Api) -> None:
    api.call("PUT", "/v1/workflows/routed", json=ROUTED)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "routed"}).json()["id"]
    api.driver.run_all()
    api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "route", "reward": 0})
    query = "query($w: String!, $s: String!) { decisions(workflow: $w, step: $s) { bandit arms { route successes failures mean } } }"
    found = api.gql(query, {"w": "routed", "s": "route"})["data"]["decisions"]
    chosen = api.service.list_steps(TENANT_A, execution_id)[0].output["route"]
    assert found == {
        "bandit": "routed/route",
        "arms": [{"route": chosen, "successes": 0.0, "failures": 1.0, "mean": 1 / 3}],
    }
    assert api.gql(query, {"w": "routed", "s": "nope"})["data"]["decisions"] is None
