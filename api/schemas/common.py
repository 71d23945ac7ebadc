"""Models shared by every resource."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from engine.search import LABEL_KEY_PATTERN

T = TypeVar("T")

#: Labels on executions: bounded so a client cannot attach megabytes to every listing.
LABEL_KEY = LABEL_KEY_PATTERN


class ApiModel(BaseModel):
    """Base of request models: unknown fields are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a listing. Pass ``next_cursor`` as ``cursor`` to get the next page."""

    items: list[T]
    next_cursor: str | None = Field(default=None, description="Absent on the last page")
