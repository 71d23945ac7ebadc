"""``conveyor run --no-worker`` leaves reconciling to beat unless ``--reconcile`` asks for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import conveyor.embedded
from conveyor.cli import app
from engine.errors import ConveyorError

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "order_fanout"


@pytest.mark.parametrize(
    ("flags", "worker", "reconcile"),
    [
        ([], True, True),
        (["--no-worker"], False, False),
        (["--no-worker", "--reconcile"], False, True),
        (["--no-reconcile"], True, False),
    ],
)
def test_which_of_worker_and_reconciler_a_run_starts(
    flags: list[str], worker: bool, reconcile: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def fake_embedded_service(settings: Any, **options: Any) -> Iterator[Any]:
        seen.update(options)
        raise ConveyorError("stop here: nothing else of the run is under test")
        yield

    monkeypatch.setattr(conveyor.embedded, "embedded_service", fake_embedded_service)
    monkeypatch.setenv("CONVEYOR_BROKER_URL", "redis://127.0.0.1:1/0")  # --no-worker needs a broker
    args = ["run", str(WORKFLOW / "workflow.yaml"), "--input", f"@{WORKFLOW / 'input.json'}"]
    result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path), *flags])
    assert "stop here" in result.output
    assert (seen["worker"], seen["reconcile"]) == (worker, reconcile)
