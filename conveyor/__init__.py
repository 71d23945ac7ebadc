"""Conveyor's public SDK: register step functions with :func:`step` (a ``Client`` is planned, not built)."""

from engine.errors import StepFailure
from engine.functions import step

__all__ = ["StepFailure", "step"]
