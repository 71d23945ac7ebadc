"""Capturing a step attempt's lines: routing by context, levels, bounds and redaction (no store)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError

from engine.settings import Settings
from engine.steplogs import capture
from engine.steplogs.capture import AttemptLog, Redactor
from engine.steplogs.shipper import iso


def attempt(key: str = "s", *, max_lines: int = 100, redact: Redactor | None = None) -> AttemptLog:
    return AttemptLog(
        "t",
        "e",
        key,
        1,
        1,
        max_lines=max_lines,
        max_bytes=64 * 1024,
        max_line_chars=200,
        redact=redact or Redactor(),
        started_at=0.0,
    )


@contextlib.contextmanager
def current(log: AttemptLog) -> Iterator[AttemptLog]:
    token = capture.enter(log)
    try:
        yield log
    finally:
        capture.leave(token)
        log.close(1.0)


def messages(log: AttemptLog) -> list[str]:
    return [line["message"] for line in log.lines]


@pytest.fixture
def printed_warnings() -> Iterator[io.StringIO]:
    """The root logger as a process printing warnings only sets it up: its handler must print no more."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_info_lines_are_captured_where_only_warnings_are_printed(printed_warnings: io.StringIO) -> None:
    capture.install(logging.INFO)
    with current(attempt()) as log:
        logging.getLogger("app").info("quiet detail")
        logging.getLogger("app").warning("loud")
    assert messages(log) == ["quiet detail", "loud"]
    assert printed_warnings.getvalue() == "loud\n"


def test_print_is_captured_by_line_and_still_written() -> None:
    capture.install(logging.INFO)
    router = sys.stdout
    assert isinstance(router, capture._StdoutRouter)
    target, router.target = router.target, io.StringIO()
    try:
        with current(attempt()) as log:
            print("one", "two")
            print("three\nfour", end="")
        written = router.target.getvalue()
    finally:
        router.target = target
    assert messages(log) == ["one two", "three", "four"]
    assert {line["logger"] for line in log.lines} == {"stdout"}
    assert written == "one two\nthree\nfour"


def test_lines_outside_an_attempt_are_not_captured_and_a_closed_attempt_takes_none() -> None:
    capture.install(logging.INFO)
    log = attempt()
    logging.getLogger("app").warning("before")
    with current(log):
        logging.getLogger("app").warning("during")
    logging.getLogger("app").warning("after")
    log.add(2.0, "INFO", "late", "from an abandoned thread")
    assert messages(log) == ["during"] and log.dropped == 0


def test_concurrent_tasks_keep_their_own_lines() -> None:
    capture.install(logging.INFO)

    async def step(log: AttemptLog) -> None:
        with current(log):
            for i in range(5):
                logging.getLogger("app").warning("%s %d", log.step_key, i)
                await asyncio.sleep(0)

    async def both() -> tuple[AttemptLog, AttemptLog]:
        a, b = attempt("a"), attempt("b")
        await asyncio.gather(step(a), step(b))
        return a, b

    a, b = asyncio.run(both())
    assert messages(a) == [f"a {i}" for i in range(5)] and messages(b) == [f"b {i}" for i in range(5)]


def test_the_line_bound_keeps_the_first_lines_and_counts_the_rest() -> None:
    capture.install(logging.INFO)
    with current(attempt(max_lines=3)) as log:
        for i in range(10):
            logging.getLogger("app").warning("line %d", i)
    assert messages(log) == ["line 0", "line 1", "line 2"] and log.dropped == 7
    assert [line["seq"] for line in log.lines] == [0, 1, 2]


def test_the_byte_bound_counts_utf8_bytes_not_characters() -> None:
    overhead = len("app") + capture.LINE_OVERHEAD_BYTES
    log = AttemptLog(
        "t", "e", "s", 1, 1, max_lines=100, max_bytes=2 * (overhead + 20), max_line_chars=200,
        redact=Redactor(), started_at=0.0,
    )  # fmt: skip
    log.add(0.0, "INFO", "app", "é" * 10)  # 10 characters, 20 bytes
    log.add(0.0, "INFO", "app", "a" * 20)  # 20 bytes: the bound is reached exactly
    log.add(0.0, "INFO", "app", "é")
    assert messages(log) == ["é" * 10, "a" * 20] and log.dropped == 1


def test_live_event_times_read_as_datetime_writes_them() -> None:
    """iso() caches the date and time of day per second; its text stays datetime's, rounding included."""

    def expected(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    base = 1_700_000_000.0
    moments = [base, base + 0.9999995, base + 0.9999996, base + 0.0000005, base + 0.0000015, base + 1.25, 1.5]
    moments += [base + k / 7 for k in range(50)] + [base + 86_399.9999999, base - 3_600.123456]
    assert [iso(at) for at in moments] == [expected(at) for at in moments]


def test_redaction_covers_named_variables_conveyors_own_secrets_and_patterns() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url="redis://:r3dis-pass@cache:6379/0",
        approval_link_secret=SecretStr("link-signing-key"),
        step_logs_redact_env=["API_TOKEN", "SHORT", "UNSET"],
        step_logs_redact_patterns=[r"Bearer \S+"],
    )
    redact = Redactor.from_settings(settings, {"API_TOKEN": "tok-123456", "SHORT": "1"})
    text = "tok-123456 r3dis-pass link-signing-key Bearer abc.def 1 2 3"
    assert redact(text) == "*** *** *** *** 1 2 3"


def test_a_redaction_pattern_that_is_not_a_regular_expression_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(_env_file=None, step_logs_redact_patterns=["(unclosed"])  # type: ignore[call-arg]
