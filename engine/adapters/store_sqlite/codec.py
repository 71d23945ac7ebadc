"""Records <-> rows: JSON documents, fields stored out of line, large inputs read on first use, page cursors.

Execution and step fields whose JSON is larger than ``inline_payload_bytes`` live out of line
in ``payloads`` (claim-check, as in the Firestore adapter), which keeps the hot rows that the
reconciler scans small.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from engine.adapters.payloads import record_from_dict
from engine.errors import InvalidRequest
from engine.records import Deferred, ExecutionRecord, Page

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
#: Reads an execution's input: ``(tenant, execution_id) -> input``.
InputLoader = Callable[[str, str], Any]


class DocCodec:
    """Splits a record dict into its inline JSON document and its out-of-line fields."""

    def __init__(self, inline_bytes: int) -> None:
        self._inline_bytes = inline_bytes

    def encode(self, data: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The inline document, and JSON text by field name of the fields stored out of line."""
        doc = dumps(data)
        # dumps escapes non-ASCII, so the text length is its size in bytes.
        if len(doc) <= self._inline_bytes:
            return doc, {}
        spilled = {name: text for name, value in data.items() if len(text := dumps(value)) > self._inline_bytes}
        inline = {name: value for name, value in data.items() if name not in spilled}
        return dumps(inline), spilled


def dumps(value: Any) -> str:
    # ensure_ascii (the default) escapes lone surrogates, which SQLite's UTF-8 text cannot hold.
    return json.dumps(value, separators=(",", ":"))


def spilled_names(spilled: dict[str, str]) -> str | None:
    return dumps(sorted(spilled)) if spilled else None


def write_payloads(conn: sqlite3.Connection, owner: tuple[str, str, str], spilled: dict[str, str]) -> None:
    # Replace, not merge: a field that shrank back inline must not keep a stale payload.
    conn.execute("DELETE FROM payloads WHERE tenant = ? AND execution_id = ? AND step_key = ?", owner)
    conn.executemany(
        "INSERT INTO payloads (tenant, execution_id, step_key, field, body) VALUES (?, ?, ?, ?, ?)",
        [(*owner, name, body) for name, body in spilled.items()],
    )


def load(cls: type[R], doc: str) -> R:
    return record_from_dict(cls, json.loads(doc))


def trigger_row(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data["tenant"], data["id"], int(data["enabled"]), data["next_fire_at"], dumps(data))


def fresh(cls: type[R], data: dict[str, Any]) -> R:
    """A record built from a buffered dict that does not share its nested values."""
    return load(cls, dumps(data))


def _load_spilled(conn: sqlite3.Connection, cls: type[R], row: Sequence[Any]) -> R:
    """Load an execution or step row (doc, spilled, owner...) with its out-of-line payloads."""
    return record_from_dict(cls, _row_data(conn, row))


def _row_data(conn: sqlite3.Connection, row: Sequence[Any]) -> dict[str, Any]:
    """The fields of an execution or step row (doc, spilled, owner...), out-of-line payloads included."""
    doc, spilled, *owner = row
    data: dict[str, Any] = json.loads(doc)
    if spilled is not None:
        for name, body in conn.execute(
            "SELECT field, body FROM payloads WHERE tenant = ? AND execution_id = ? AND step_key = ?", owner
        ):
            data[name] = json.loads(body)
    return data


def load_execution(conn: sqlite3.Connection, row: Sequence[Any], load_input: InputLoader) -> ExecutionRecord:
    """Load an execution header; a large input, kept in ``execution_inputs``, is read on first use.

    Most transactions never look at the input, and a large one (a foreach's list) would
    otherwise be read and decoded by every transaction of every step. A small input stays
    in ``doc`` and loads with it (see ``_INLINE_INPUT_BYTES`` in :mod:`.transaction`).
    """
    data = _row_data(conn, row)
    if "input" not in data:
        data["input"] = Deferred(functools.partial(load_input, data["tenant"], data["id"]))
    return record_from_dict(ExecutionRecord, data)


def load_all(conn: sqlite3.Connection, cls: type[R], rows: Iterable[Sequence[Any]]) -> list[R]:
    return [_load_spilled(conn, cls, row) for row in list(rows)]


def make_page(
    rows: Sequence[Any], limit: int, item: Callable[[Any], Any], sort_key: Callable[[Any], list[Any]]
) -> Page:
    """A page from ``limit + 1`` rows: the extra row only tells that another page exists."""
    items = [item(row) for row in rows[:limit]]
    cursor = _encode_cursor(sort_key(rows[limit - 1])) if len(rows) > limit else None
    return Page(items, cursor)


def fetch_count(limit: int) -> int:
    """Rows to fetch for a page of ``limit``: one more, to learn whether another page exists."""
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}")
    return limit + 1


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(dumps(values).encode()).decode()


def _fits(value: Any, kind: type) -> bool:
    """A cursor value of its sort key's type; never a boolean, NaN or an infinity (JSON's ``NaN``,
    ``1e999``), which would page from nowhere instead of being refused."""
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def decode_cursor(cursor: str | None, types: tuple[type, ...]) -> list[Any]:
    """The sort key a cursor carries, or Nones for the first page."""
    if cursor is None:
        return [None] * len(types)
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("the cursor is not valid") from exc
    valid = (
        isinstance(values, list)
        and len(values) == len(types)
        and all(_fits(v, t) for v, t in zip(values, types, strict=True))
    )
    if not valid:
        raise InvalidRequest("the cursor is not valid")
    return list(values)
