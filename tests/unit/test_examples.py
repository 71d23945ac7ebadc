"""Every example validates and runs to SUCCEEDED; the docs list every setting.

Examples run through :class:`tests.harness.Harness` (real SQLite store, manual clock, no
broker), so this stays fast and needs no services. ``tests/integration/test_cli_run.py``
runs the same examples through ``conveyor run``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.compile import compile_workflow
from engine.model import parse_definition_text
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus
from tests.harness import Harness

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_DIRS = sorted(path.parent for path in EXAMPLES.glob("*/workflow.yaml"))


def load_example(directory: Path) -> dict[str, Any]:
    return parse_definition_text((directory / "workflow.yaml").read_text(), source=str(directory))


def run_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, input_file: str = "input.json") -> Any:
    """Apply and run one example to the end; return the harness and the execution id."""
    directory = EXAMPLES / name
    monkeypatch.syspath_prepend(str(directory))  # step modules sit beside the workflow
    harness = Harness(tmp_path)
    definition = load_example(directory)
    harness.apply(definition)
    execution_id = harness.start(definition["name"], json.loads((directory / input_file).read_text()))
    harness.drain()
    return harness, execution_id


def test_there_are_at_least_three_examples_with_unique_step_modules():
    assert len(EXAMPLE_DIRS) >= 3
    modules = [module.stem for directory in EXAMPLE_DIRS for module in directory.glob("*.py")]
    assert len(modules) == len(set(modules)), "step modules share one sys.path namespace: names must be unique"


@pytest.mark.parametrize("directory", EXAMPLE_DIRS, ids=lambda path: path.name)
def test_example_is_valid_and_its_inputs_match_the_schema(directory):
    compiled = compile_workflow(load_example(directory))
    inputs = sorted(directory.glob("input*.json"))
    assert inputs, f"{directory.name} has no sample input"
    for input_file in inputs:
        compiled.validate_input(json.loads(input_file.read_text()))


def test_order_fanout_reserves_every_line_then_joins(tmp_path, monkeypatch):
    h, execution_id = run_example(tmp_path, monkeypatch, "order_fanout")
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    lines = json.loads((EXAMPLES / "order_fanout" / "input.json").read_text())["lines"]
    assert execution.output["units"] == sum(line["qty"] for line in lines)
    assert execution.output["shipment_id"] == "shp-ord-1042"
    items = [step for key, step in h.steps(execution_id).items() if key.startswith("reserve[")]
    assert len(items) == len(lines) and all(step.status is StepStatus.SUCCEEDED for step in items)
    assert execution.output["summary"].startswith("order ord-1042: ")


@pytest.mark.parametrize(
    ("input_file", "decision", "taken"),
    [
        ("input.json", "approve", "approve"),
        ("input-review.json", "review", "review"),
        ("input-decline.json", "decline", "decline"),
    ],
)
def test_loan_approval_takes_exactly_one_branch(tmp_path, monkeypatch, input_file, decision, taken):
    h, execution_id = run_example(tmp_path, monkeypatch, "loan_approval", input_file)
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output["decision"] == decision
    steps = h.steps(execution_id)
    branches = {key: steps[key].status for key in ("approve", "review", "decline")}
    assert branches == {key: StepStatus.SUCCEEDED if key == taken else StepStatus.SKIPPED for key in branches}
    assert steps["notify"].status is StepStatus.SUCCEEDED


def test_payment_retry_survives_a_timeout_and_a_refusal(tmp_path, monkeypatch):
    h, execution_id = run_example(tmp_path, monkeypatch, "payment_retry")
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output["gateway_calls"] == 3
    charge = [e for e in h.history(execution_id) if e.step_key == "charge"]
    errors = [e.data["error"]["type"] for e in charge if e.type == "step.retry_wait"]
    assert errors == ["StepTimeout", "GatewayUnavailable"]
    assert [e.type for e in h.history(execution_id) if e.step_key == "settle"][-1] == "step.succeeded"


def test_support_agent_waits_for_the_refund_approval_then_answers(tmp_path, monkeypatch):
    h, execution_id = run_example(tmp_path, monkeypatch, "support_agent")
    waiting = h.steps(execution_id)["support"]
    assert waiting.status is StepStatus.WAITING
    assert waiting.wait["interrupt"]["request"]["name"] == "refund"
    h.service.signal("t1", execution_id, "support", {"type": "approve"})
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output["style"] in ("concise", "warm")
    assert "refunded the 42" in execution.output["answer"]
    decision = h.steps(execution_id)["style"].output
    assert h.decisions.arm_counts("t1", "support-agent/style") == {decision["route"]: (1.0, 0.0)}


def test_invoice_review_runs_from_its_event_trigger_and_its_schedule(tmp_path):
    from engine.orchestration.approvals import Decision
    from engine.router import EventRouter
    from engine.trigger_admin import Triggers

    directory = EXAMPLES / "invoice_review"
    h = Harness(tmp_path)
    h.apply(load_example(directory))
    triggers = Triggers(h.store, h.clock)
    created = [triggers.create("t1", **spec) for spec in json.loads((directory / "triggers.json").read_text())]
    assert [t.kind for t in created] == ["event", "schedule"]
    router = EventRouter(h.service)

    # The event trigger starts a review with the mapped input; it waits for the scan.
    router.publish("t1", type="invoice.submitted", data={"id": "INV-9", "amount": 80}, event_id="sub-1")
    [execution] = h.service.list_executions("t1").items
    assert execution.input == {"invoice_id": "INV-9", "amount": 80}
    h.drain()
    assert h.steps(execution.id)["scan"].status is StepStatus.WAITING
    router.publish("t1", type="invoice.scanned", correlation_key="INV-9", data={"total": 80, "vendor": "Acme"})
    h.drain()
    review = h.steps(execution.id)["review"]
    assert review.status is StepStatus.WAITING
    assert review.wait["message"] == "Pay 80 EUR to Acme for INV-9?"
    h.service.decide_approval("t1", execution.id, "review", Decision(False, "key:ops", "operator", "duplicate"))
    h.drain()
    rejected = h.execution(execution.id)
    assert rejected.status is ExecutionStatus.SUCCEEDED  # on_reject: continue
    assert rejected.output == {"invoice": "INV-9", "approved": False, "decided_by": "key:ops", "vendor": "Acme"}
    assert h.steps(execution.id)["pay"].status is StepStatus.SKIPPED

    # The schedule starts the monthly rent review at its next fire time.
    schedule = created[1]
    h.clock.value = schedule.next_fire_at
    h.service.fire_due_triggers()
    rent = [e for e in h.service.list_executions("t1").items if e.input.get("invoice_id") == "RENT"]
    assert len(rent) == 1 and rent[0].trigger_id == schedule.id


# --------------------------------------------------------------------------- documentation


def _documented_variables(path: Path) -> set[str]:
    """Variables that have a row of their own in a Markdown table: ``| `CONVEYOR_X` | default | meaning |``."""
    return set(re.findall(r"(?m)^\| `(CONVEYOR_[A-Z0-9_]+)` \|", path.read_text()))


@pytest.mark.parametrize("doc", ["README.md", "docs/configuration.md"])
def test_configuration_table_lists_every_setting(doc):
    expected = {f"CONVEYOR_{name.upper()}" for name in Settings.model_fields}
    missing = expected - _documented_variables(ROOT / doc)
    assert not missing, f"{doc} does not document {sorted(missing)}"


def test_readme_quickstart_runs_a_real_example():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"conveyor run (\S+) --input @(\S+)", readme)
    assert command is not None
    assert (ROOT / command.group(1)).is_file() and (ROOT / command.group(2)).is_file()
