"""Execution search: the filters a listing or a count of executions takes, checked once.

REST, GraphQL and the CLI build an :class:`ExecutionFilter` with :meth:`ExecutionFilter.of`,
which refuses what could never match or means nothing (:class:`~engine.errors.InvalidFilter`);
the stores translate the filter into their own queries (``list_executions`` and
``count_executions`` of :class:`~engine.ports.Store`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import InvalidFilter
from engine.states import ExecutionStatus

#: Label keys, as a start accepts them; ``:`` and ``=`` are never part of a key.
LABEL_KEY_PATTERN = r"^[A-Za-z0-9_.\-/]{1,63}$"
MAX_LABEL_VALUE = 256
#: At most this many labels on an execution, and this many label filters in one search.
MAX_LABELS = 32

_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)


@dataclass(frozen=True)
class ExecutionFilter:
    """Executions matching every field that is set (AND); ``labels`` are (key, value) pairs.

    ``created_after`` is inclusive and ``created_before`` exclusive (epoch seconds).
    """

    workflow: str | None = None
    version: int | None = None
    status: ExecutionStatus | None = None
    labels: tuple[tuple[str, str], ...] = ()
    trigger_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None

    @classmethod
    def of(
        cls,
        *,
        workflow: str | None = None,
        version: int | None = None,
        status: ExecutionStatus | str | None = None,
        labels: Iterable[str] = (),
        trigger_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> ExecutionFilter:
        """A filter from user input; ``labels`` are ``key:value`` texts (split on the first ``:``)."""
        if version is not None and workflow is None:
            raise InvalidFilter("`version` filters by a version of one workflow: give `workflow` too")
        if created_after is not None and created_before is not None and created_after >= created_before:
            raise InvalidFilter("`created_after` must be before `created_before` (the range is empty)")
        return cls(
            workflow=workflow,
            version=version,
            status=ExecutionStatus(status) if status is not None else None,
            labels=parse_labels(labels),
            trigger_id=trigger_id,
            created_after=created_after,
            created_before=created_before,
        )

    def for_counts(self) -> ExecutionFilter:
        """This filter, checked for counting per status: it must not filter by status."""
        if self.status is not None:
            raise InvalidFilter("counts are taken per status: do not filter them by status")
        return self


def parse_label(text: str) -> tuple[str, str]:
    """``key:value`` as a pair; the value may contain ``:`` (the key cannot)."""
    key, colon, value = text.partition(":")
    if not colon:
        raise InvalidFilter(f"label filter {text!r} is not key:value")
    if not _LABEL_KEY.match(key):
        raise InvalidFilter(
            f"label filter {text!r}: the key must be 1 to 63 letters, digits or _ . - / (as labels are given at start)"
        )
    if len(value) > MAX_LABEL_VALUE:
        raise InvalidFilter(f"label filter on {key!r}: a label value has at most {MAX_LABEL_VALUE} characters")
    return key, value


def parse_labels(texts: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Every ``key:value`` text as a pair, sorted and without repeats."""
    pairs: dict[str, str] = {}
    for text in texts:
        key, value = parse_label(text)
        if pairs.get(key, value) != value:
            raise InvalidFilter(
                f"label {key!r} is filtered by two values ({pairs[key]!r} and {value!r}): none can match"
            )
        pairs[key] = value
    if len(pairs) > MAX_LABELS:
        raise InvalidFilter(f"at most {MAX_LABELS} label filters")
    return tuple(sorted(pairs.items()))


def label_token(key: str, value: str) -> str:
    """One label as a single string, ``key=value``: unambiguous, as no key holds ``=``."""
    return f"{key}={value}"
