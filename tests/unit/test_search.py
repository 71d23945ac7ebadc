"""``ExecutionFilter.of``: how user input becomes a search, and what it refuses."""

from __future__ import annotations

import pytest

from engine.errors import InvalidFilter
from engine.search import ExecutionFilter, label_token, parse_label, parse_labels
from engine.states import ExecutionStatus


def test_a_label_splits_on_its_first_colon() -> None:
    assert parse_label("url:https://x.example:8443/a") == ("url", "https://x.example:8443/a")
    assert parse_label("team:") == ("team", "")  # an empty value is a value
    assert label_token("url", "a=b:c") == "url=a=b:c"  # keys hold no '=', so the token is unambiguous


def test_labels_are_sorted_and_repeats_collapse() -> None:
    assert parse_labels(["team:shop", "env:prod", "team:shop"]) == (("env", "prod"), ("team", "shop"))


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["team"], "not key:value"),
        ([":shop"], "the key must be"),
        (["a b:c"], "the key must be"),
        (["k" * 64 + ":v"], "the key must be"),
        (["team:" + "x" * 257], "at most 256"),
        (["team:shop", "team:ops"], "two values"),
        ([f"k{n}:v" for n in range(33)], "at most 32"),
    ],
)
def test_malformed_labels_are_refused(texts: list[str], message: str) -> None:
    with pytest.raises(InvalidFilter, match=message):
        parse_labels(texts)


def test_combinations_that_mean_nothing_are_refused() -> None:
    with pytest.raises(InvalidFilter, match="give `workflow` too"):
        ExecutionFilter.of(version=2)
    with pytest.raises(InvalidFilter, match="must be before"):
        ExecutionFilter.of(created_after=10.0, created_before=10.0)
    with pytest.raises(InvalidFilter, match="per status"):
        ExecutionFilter.of(status="FAILED").for_counts()


def test_of_builds_the_filter() -> None:
    where = ExecutionFilter.of(
        workflow="orders", version=2, status="FAILED", labels=["b:2", "a:1"], trigger_id="tr", created_after=1.0
    )
    assert where == ExecutionFilter(
        workflow="orders",
        version=2,
        status=ExecutionStatus.FAILED,
        labels=(("a", "1"), ("b", "2")),
        trigger_id="tr",
        created_after=1.0,
    )
    assert ExecutionFilter.of().for_counts() == ExecutionFilter()
