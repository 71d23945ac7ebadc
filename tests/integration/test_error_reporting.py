"""Sentry error reporting as configured from settings: an error reaches a Sentry endpoint (a
local HTTP server standing in for Sentry's ingestion API) with the process's name and
environment, and no personal data."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk

from engine.bootstrap import configure_error_reporting
from engine.settings import Settings


@pytest.fixture
def sentry_server() -> Iterator[tuple[str, list[list[dict[str, Any]]]]]:
    envelopes: list[list[dict[str, Any]]] = []

    class Ingest(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            envelopes.append([json.loads(line) for line in body.splitlines() if line.strip().startswith(b"{")])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://public@127.0.0.1:{server.server_address[1]}/42", envelopes
    finally:
        sentry_sdk.init()  # no DSN: reporting off again for the rest of the session
        server.shutdown()


def test_errors_reach_sentry_when_a_dsn_is_set(sentry_server: tuple[str, list[list[dict[str, Any]]]]) -> None:
    dsn, envelopes = sentry_server
    assert not configure_error_reporting(Settings(_env_file=None), "conveyor-worker")  # type: ignore[call-arg]
    settings = Settings(_env_file=None, sentry_dsn=dsn, sentry_environment="staging")  # type: ignore[call-arg]
    assert configure_error_reporting(settings, "conveyor-worker")
    try:
        raise RuntimeError("the store is on fire")
    except RuntimeError as exc:
        sentry_sdk.capture_exception(exc)
    sentry_sdk.flush(timeout=10)
    events = [item for envelope in envelopes for item in envelope if item.get("exception")]
    (event,) = events
    assert event["exception"]["values"][0]["value"] == "the store is on fire"
    assert event["server_name"] == "conveyor-worker" and event["environment"] == "staging"
    assert "user" not in event, "no personal data"
