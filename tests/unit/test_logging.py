"""JSON logs name the tenant, execution and step of every line logged while a step runs, stdlib
``logging`` records of the step's own code included, and a step followed inline names itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from structlog.contextvars import bound_contextvars

from conveyor import step
from engine.logging import configure_logging
from engine.settings import Settings
from tests.harness import Harness

user_log = logging.getLogger("acme.steps")


@step
def chatty(label: str) -> str:
    user_log.info("working on %s", label)
    print("a print is not a log record")
    return label


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def json_logging() -> Any:
    configure_logging(Settings(log_json=True, log_level="INFO"))
    yield
    configure_logging(Settings())


def test_stdlib_records_are_json_with_the_bound_context(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    with bound_contextvars(tenant="acme", execution_id="e1", step_key="charge"):
        logging.getLogger("acme.payments").warning("card declined", extra={"amount": 12})
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "card declined" and line["level"] == "warning"
    assert (line["tenant"], line["execution_id"], line["step_key"]) == ("acme", "e1", "charge")
    assert line["logger"] == "acme.payments" and line["amount"] == 12 and "timestamp" in line


def test_every_step_of_a_chain_run_inline_logs_its_own_key(
    tmp_path: Path, json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Harness(tmp_path)
    fn = f"{__name__}.chatty"
    h.apply(
        {
            "name": "chain",
            "steps": [
                {"id": "first", "type": "task", "with": {"function": fn, "args": {"label": "one"}}},
                {"id": "second", "type": "task", "needs": ["first"], "with": {"function": fn, "args": {"label": "two"}}},
            ],
        }
    )
    execution_id = h.start("chain")
    h.drain()
    assert h.reports[0].followed == 1, "the second step ran inline after the first"
    lines = [line for line in json_lines(capsys.readouterr().err) if line.get("logger") == "acme.steps"]
    assert [(line["event"], line["step_key"]) for line in lines] == [
        ("working on one", "first"),
        ("working on two", "second"),
    ]
    assert {(line["tenant"], line["execution_id"]) for line in lines} == {("t1", execution_id)}
    h.store.close()
