"""The one way Conveyor encodes and measures a payload (inputs, outputs, signals, event data).

A payload is stored as compact JSON, so it must be plain JSON: objects with string keys,
arrays, strings, finite numbers, booleans and null. Anything else is refused with
:class:`~engine.errors.PayloadInvalid` naming where it is (``output.when``), never
converted: ``default=str`` would turn a ``datetime`` into a string the step did not return,
and NaN or Infinity would come back as ``null`` from the API. Sizes are the UTF-8 bytes of
that same compact text, so the limit means the same thing wherever it is checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from engine.errors import PayloadInvalid, PayloadTooLarge

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_json(value: Any, what: str = "value") -> str:
    """Compact JSON text of ``value``; raises :class:`PayloadInvalid` (naming the first
    offending path under ``what``) if it is not plain JSON."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadInvalid(_why_not_json(value, what, exc)) from None


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` as compact UTF-8 JSON (the form sizes are limited in)."""
    # surrogatepass: a lone surrogate in a string must be measured, not crash the check.
    return len(to_json(value).encode("utf-8", "surrogatepass"))


def check_payload(value: Any, limit: int, what: str) -> None:
    """Refuse ``value`` unless it is plain JSON of at most ``limit`` bytes.

    Raises :class:`PayloadInvalid` (naming the first offending path under ``what``) or
    :class:`PayloadTooLarge`.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadInvalid(_why_not_json(value, what, exc)) from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes as JSON; the limit is {limit} bytes")


def _why_not_json(value: Any, what: str, exc: BaseException) -> str:
    """A message naming the first value JSON cannot hold (only computed once encoding failed)."""
    if isinstance(exc, RecursionError):
        return f"{what} is nested too deeply to be stored as JSON"
    for path, reason in _not_json(value, what, set()):
        return f"{path} {reason}"
    return f"{what} cannot be stored as JSON: {exc}"


def _not_json(value: Any, path: str, ancestors: set[int]) -> Iterator[tuple[str, str]]:
    """(path, reason) for each value below ``value`` that JSON cannot hold, depth first."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"is {value}, which JSON cannot represent (use null or a string)"
        return
    if not isinstance(value, dict | list | tuple):
        yield path, f"is a {type(value).__name__}, which is not JSON (return strings, numbers, lists and objects)"
        return
    if id(value) in ancestors:
        yield path, "contains itself (a circular reference)"
        return
    ancestors.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key is None or isinstance(key, str | int | float | bool)):
                yield path, f"has a {type(key).__name__} key; JSON object keys must be strings"
            yield from _not_json(item, f"{path}.{key}", ancestors)
    else:
        for index, item in enumerate(value):
            yield from _not_json(item, f"{path}[{index}]", ancestors)
    ancestors.discard(id(value))
