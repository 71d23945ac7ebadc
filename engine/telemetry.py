"""Telemetry that records nothing: the default where no metrics backend is wired."""

from __future__ import annotations

from engine.ports import StepAttempt


class NoTelemetry:
    """A :class:`~engine.ports.Telemetry` that drops everything."""

    def step_attempt(self, attempt: StepAttempt) -> None:
        return None

    def execution_started(self, workflow: str) -> None:
        return None

    def execution_settled(self, workflow: str, status: str, seconds: float) -> None:
        return None

    def reconciled(self, repairs: dict[str, int]) -> None:
        return None

    def executions_purged(self, count: int, reason: str) -> None:
        return None
