"""Step keys: a top-level step is its id; a foreach item is ``id[index]``."""

from __future__ import annotations

import pytest

from engine.orchestration.planner import item_key, parse_key


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("fetch", ("fetch", None)),
        (item_key("each", 7), ("each", 7)),
        ("each[12]", ("each", 12)),
        # Not item keys: a caller's typo must not become some other step's item.
        ("each[x]", ("each[x]", None)),
        ("each[-1]", ("each[-1]", None)),
        ("each[3", ("each[3", None)),
    ],
)
def test_parse_key(key: str, parsed: tuple[str, int | None]) -> None:
    assert parse_key(key) == parsed
