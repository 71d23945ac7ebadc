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


def test_a_switch_bandit_learns_among_the_eligible_cases_and_is_rewarded_like_a_route(api: Api) -> None:
    switched = {
        "name": "switched",
        "steps": [
            {
                "id": "pick",
                "type": "switch",
                "with": {
                    "strategy": "bandit",
                    "half_life": "7d",
                    "cases": [
                        {"name": "short", "value": {"words": 20}},
                        {"name": "long", "value": {"words": 200}},
                        {"name": "never", "when": "input.vip", "value": {"words": 0}},
                    ],
                },
            },
            {
                "id": "learn",
                "type": "ai.reward",
                "needs": ["pick"],
                "with": {
                    "decision": "${steps.pick.output}",
                    "reward": "${steps.pick.output.value.words < 100 ? 1.0 : 0.0}",
                },
            },
        ],
    }
    assert api.call("PUT", "/v1/workflows/switched", json=switched).status_code == 201
    chosen = []
    for _ in range(6):
        execution_id = api.call(
            "POST", "/v1/executions", json={"workflow": "switched", "input": {"vip": False}}
        ).json()["id"]
        api.driver.run_all()
        steps = {s.key: s for s in api.service.list_steps(TENANT_A, execution_id)}
        output = steps["pick"].output
        assert output["strategy"] == "bandit" and output["bandit"] == "switched/pick" and output["half_life"] == 604800
        assert output["value"] == switched["steps"][0]["with"]["cases"][output["case"]]["value"]  # type: ignore[index]
        assert steps["learn"].output["counted"] is True
        chosen.append(output["route"])
    assert "never" not in chosen
    estimates = api.call("GET", "/v1/workflows/switched/steps/pick/decisions").json()
    assert estimates["half_life"] == 604800
    assert set(estimates["arms"]) == set(chosen)
    total = sum(arm["successes"] + arm["failures"] for arm in estimates["arms"].values())
    assert 5.99 < total <= 6.0  # six outcomes, decayed by the seconds since they were counted


def test_switch_strategy_configs_are_checked_when_saved(api: Api) -> None:
    def switch(**config: object) -> dict[str, object]:
        return {"name": "bad", "steps": [{"id": "s", "type": "switch", "with": config}]}

    cases = [{"when": "true", "value": 1}]
    for config in (
        {"cases": cases, "half_life": "1d"},  # rules do not decay
        {"strategy": "bandit", "cases": [{"name": "a"}, {"name": "a"}]},
        {"strategy": "bandit", "cases": [{"name": "a"}], "half_life": "10ms"},
        {"strategy": "llm", "cases": cases},
    ):
        assert api.call("PUT", "/v1/workflows/bad", json=switch(**config)).status_code == 422, config


def test_a_decaying_route_records_its_half_life_and_shows_decayed_estimates(api: Api) -> None:
    decaying = {
        "name": "decaying",
        "steps": [
            {"id": "route", "type": "ai.route", "with": {"strategy": "bandit", "routes": ["a", "b"], "half_life": "1h"}}
        ],
    }
    api.call("PUT", "/v1/workflows/decaying", json=decaying)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "decaying"}).json()["id"]
    api.driver.run_all()
    decision = api.service.list_steps(TENANT_A, execution_id)[0].output
    assert decision["half_life"] == 3600
    assert api.call("POST", f"/v1/executions/{execution_id}/rewards", json={"step": "route", "reward": 1}).json() == {
        "counted": True
    }
    estimates = api.call("GET", "/v1/workflows/decaying/steps/route/decisions").json()
    arm = estimates["arms"][decision["route"]]
    assert estimates["half_life"] == 3600 and 0.99 < arm["successes"] <= 1.0 and arm["failures"] == 0
