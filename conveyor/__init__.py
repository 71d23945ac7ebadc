"""Conveyor's public SDK: register step functions with :func:`step`; talk to a server with ``Client``."""

from engine.errors import StepFailure
from engine.functions import step

__all__ = ["StepFailure", "step"]
