"""Times in the CLI's ``--json`` output as the API writes them.

Records keep time as epoch seconds; the REST API answers RFC 3339 UTC strings (pydantic's
rendering of an aware ``datetime``). Scripts that read both must not meet two formats, so
every ``--json`` command renders its times through :func:`api_time`. The conversion is
:func:`engine.times.to_datetime`, the API's own, imported from the engine: importing the
``api`` package loads prometheus_client, which must not happen before ``conveyor worker
--metrics-port`` has switched it to multiprocess mode (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from engine.times import to_datetime

_DATETIME = TypeAdapter(datetime)


def api_time(at: float | str | None) -> str | None:
    """Epoch seconds (or an ISO 8601 text, as step log lines keep it) as the API's RFC 3339
    text (``2026-01-02T03:04:05.500000Z``, no fraction on a whole second); None stays None."""
    if at is None:
        return None
    moment = datetime.fromisoformat(at) if isinstance(at, str) else to_datetime(at)
    text: str = _DATETIME.dump_python(moment, mode="json")
    return text


def with_api_times(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of a record (``record_to_dict``) with its times (``*_at``, ``*_until``) as RFC 3339."""
    return {name: api_time(value) if _is_time(name, value) else value for name, value in fields.items()}


def _is_time(name: str, value: Any) -> bool:
    # Records name every instant ``*_at`` or ``*_until`` and keep it as epoch seconds.
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and (name.endswith("_at") or name.endswith("_until"))
