"""Enums shared with the engine: the engine's own classes, registered with Strawberry."""

from __future__ import annotations

import strawberry

from engine.auth import Role
from engine.states import ExecutionStatus, StepStatus

# Registering the engine's enums (rather than copies) keeps one source of truth for values.
strawberry.enum(ExecutionStatus)
strawberry.enum(StepStatus)
strawberry.enum(Role)

__all__ = ["ExecutionStatus", "Role", "StepStatus"]
