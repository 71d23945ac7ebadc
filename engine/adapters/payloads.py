"""Record and payload helpers shared by the store adapters.

``record_to_dict`` / ``record_from_dict`` turn the dataclasses of :mod:`engine.records` into
plain JSON-shaped dicts and back, so every backend stores the same shape and a record read
back compares equal to the one written. ``to_json`` is the core's one payload encoding
(:mod:`engine.payloads`), re-exported for the adapters.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from engine.payloads import to_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

__all__ = ["record_from_dict", "record_to_dict", "to_json"]


def record_to_dict(record: DataclassInstance) -> dict[str, Any]:
    """The fields of ``record`` as a fresh JSON-shaped dict (enums become their values).

    Nested dicts and lists are copied, so later changes to the record do not reach the
    dict (the adapters buffer this dict as the written version).
    """
    # A loop with the scalar test inline, not a comprehension calling _plain per field: nearly
    # every field is a scalar, and this runs for each record written (several per step).
    fields: dict[str, Any] = {}
    for name in _field_names(type(record)):
        value = getattr(record, name)
        fields[name] = value if type(value) in _SCALARS else _plain(value)
    return fields


def record_from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
    """Rebuild a ``cls`` record from :func:`record_to_dict` output.

    Enum fields get their enum type back. Keys that ``cls`` does not know are ignored and
    missing optional fields take their defaults, so records written by a neighbouring
    schema version still load (migrations fill in the meaning).
    """
    enums = _enum_fields(cls)
    kwargs: dict[str, Any] = {}
    for name in _field_names(cls):
        if name not in data:
            continue
        value = data[name]
        enum = enums.get(name)
        kwargs[name] = enum(value) if enum is not None and value is not None else value
    return cls(**kwargs)


#: Values returned as they are; checked first because nearly every field is one of them, and
#: the ``Mapping`` check below is slow (an ABC instance check).
_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:  # exact types: an Enum may subclass str or int
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@functools.cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _enum_fields(cls: type[DataclassInstance]) -> dict[str, type[Enum]]:
    """Field name -> enum type, for fields typed ``SomeEnum`` or ``SomeEnum | None``."""
    hints = typing.get_type_hints(cls)
    found: dict[str, type[Enum]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                found[f.name] = candidate
    return found
