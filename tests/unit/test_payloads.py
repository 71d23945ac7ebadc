"""One encoding and one size for every payload (engine.payloads), and what it refuses."""

from __future__ import annotations

import datetime

import pytest

from engine.adapters.payloads import to_json as adapter_to_json
from engine.bootstrap import build_service
from engine.errors import PayloadInvalid, PayloadTooLarge
from engine.payloads import check_payload, json_size, to_json
from engine.settings import Settings


def test_size_is_the_utf8_bytes_of_the_compact_json_the_stores_write():
    value = {"name": "é" * 10, "n": [1, 2]}
    assert to_json(value) == '{"name":"éééééééééé","n":[1,2]}'
    assert json_size(value) == len(to_json(value).encode()) == 41
    assert adapter_to_json is to_json  # the adapters store exactly what was measured


def test_the_service_measures_the_same_way_as_the_stores(tmp_path):
    text = "é" * 100  # 202 bytes as compact UTF-8 JSON; 602 as ASCII-escaped JSON
    service = build_service(Settings(max_payload_bytes=202, state_dir=tmp_path))
    try:
        service.check_payload(text, "input")
        with pytest.raises(PayloadTooLarge, match="input is 203 bytes as JSON; the limit is 202 bytes"):
            service.check_payload(text + "a", "input")
    finally:
        service.store.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, float("nan")]}, r"^output\.a\[1\] is nan, which JSON cannot represent"),
        ({"a": float("-inf")}, r"^output\.a is -inf, which JSON cannot represent"),
        ({"at": datetime.date(2026, 1, 1)}, r"^output\.at is a date, which is not JSON"),
        ({"s": {1, 2}}, r"^output\.s is a set, which is not JSON"),
        ({(1, 2): "x"}, r"^output has a tuple key; JSON object keys must be strings"),
    ],
)
def test_values_json_cannot_hold_are_refused_with_their_path(value, message):
    with pytest.raises(PayloadInvalid, match=message):
        check_payload(value, 1_000_000, "output")


def test_a_circular_value_is_refused():
    value: dict = {"a": []}
    value["a"].append(value)
    with pytest.raises(PayloadInvalid, match=r"^output\.a\[0\] contains itself"):
        check_payload(value, 1_000_000, "output")


def test_a_shared_value_is_not_a_cycle():
    shared = [1, 2]
    assert to_json({"a": shared, "b": shared}) == '{"a":[1,2],"b":[1,2]}'
    with pytest.raises(PayloadInvalid, match=r"^output\.c is a time"):
        check_payload({"a": shared, "b": shared, "c": datetime.time()}, 1_000_000, "output")
