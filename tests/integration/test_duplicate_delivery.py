"""Duplicate delivery is harmless: every step message sent three times gives the same run.

The broker may deliver a message more than once (redelivery after a visibility timeout, a
re-sent dispatch). Exactly one delivery records a QUEUED step's outcome: a copy that comes
later finds the step taken and is acknowledged and ignored; a copy that ran the step at the
same time (a first delivery runs before its claim) has its outcome refused by the claim in
the outcome's transaction. So the final state and the history of a run whose every message
was tripled must equal those of a run with single delivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from engine.states import ExecutionStatus
from tests.integration import flows
from tests.integration.conftest import TENANT, RepeatingDispatcher, World

pytestmark = pytest.mark.backend


def outcome(world: World, execution_id: str) -> dict[str, Any]:
    """What must not depend on how often messages were delivered."""
    execution = world.service.get_execution(TENANT, execution_id)
    steps = world.service.list_steps(TENANT, execution_id)
    history = world.service.events_after(TENANT, execution_id, None)
    return {
        "status": execution.status,
        "output": execution.output,
        "steps": {s.key: (str(s.status), s.output, s.attempt) for s in steps},
        "events": Counter((e.step_key, e.type) for e in history),
    }


def run_pipeline(world: World, messages: Callable[[], int]) -> str:
    """Run the pipeline to its end, and until the worker handled all ``messages()`` sent."""
    world.apply(flows.PIPELINE)
    with world.worker():
        execution_id = world.start("it-pipeline", {"n": 5})
        world.wait(execution_id)
        world.wait_handled(messages())
    return execution_id


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_every_message_delivered_three_times_changes_nothing(store: str, make_world: Callable[..., World]) -> None:
    single = make_world(store, wrap=lambda inner: RepeatingDispatcher(inner, times=1))
    single_id = run_pipeline(single, lambda: single.dispatcher.sent)

    tripled = make_world(
        store, wrap=lambda inner: RepeatingDispatcher(inner, times=3), default_queue=f"{single.queue}-x3"
    )
    tripled_id = run_pipeline(tripled, lambda: tripled.dispatcher.sent)

    expected = outcome(single, single_id)
    assert expected["status"] is ExecutionStatus.SUCCEEDED
    assert expected["output"] == flows.PIPELINE_OUTPUT
    assert outcome(tripled, tripled_id) == expected

    # The duplicates really reached the worker, and none of them recorded anything.
    assert single.runner.outcomes["ignored"] == single.runner.outcomes["lease-lost"] == 0
    # A copy of the failed attempt's message that arrives while the step waits for its retry
    # carries an older epoch than the step: it is dropped, never sent again as an early timer.
    assert tripled.dispatcher.sent == 3 * single.dispatcher.sent
    refused = Counter({name: tripled.runner.outcomes[name] for name in ("ignored", "lease-lost")})
    assert refused.total() == 2 * single.dispatcher.sent
    assert tripled.runner.outcomes - refused == single.runner.outcomes
