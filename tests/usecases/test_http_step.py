"""The ``http`` step's SSRF guard, against real loopback sockets (the only network tests use).

Every refused destination is asserted twice: the step fails with ``EgressDenied`` and a
reason, and a listening socket on 127.0.0.1 that counts ``accept()`` calls saw no connection.
Names are resolved by a fake resolver (the test's DNS), so a name can resolve to a public and
a private address at once; literal addresses must never reach the resolver at all.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.adapters.http_guarded import GuardedHttpClient
from engine.egress import EgressPolicy
from engine.states import ExecutionStatus
from engine.steptypes.base import StepPorts
from tests.harness import Harness

FETCH = {
    "name": "fetch",
    "steps": [{"id": "get", "type": "http", "with": {"method": "GET", "url": "${input.url}"}}],
    "outputs": {"response": "steps.get.output"},
}


class CountingListener:
    """A TCP socket on 127.0.0.1 that accepts and counts connections (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class FakeResolver:
    """The test's DNS: known names only; records every lookup."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return list(self.names.get(host, []))


class Handler(BaseHTTPRequestHandler):
    counter_port = 0

    def do_GET(self) -> None:
        if self.path == "/json":
            self._send(200, json.dumps({"ok": True, "host": self.headers["Host"]}).encode(), "application/json")
        elif self.path == "/to-internal":
            self._redirect(f"http://127.0.0.1:{self.counter_port}/")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/big":
            self._send(200, b"x" * 4096, "text/plain")
        else:
            self._send(404, b"no", "text/plain")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counter():
    listener = CountingListener()
    yield listener
    listener.close()


@pytest.fixture
def server(counter):
    Handler.counter_port = counter.port
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def harness(tmp_path, policy: EgressPolicy, resolver: FakeResolver, **limits) -> Harness:
    h = Harness(tmp_path)
    h.runner.ports = StepPorts(http=GuardedHttpClient(policy, resolver, timeout=10.0, **limits))
    h.apply(FETCH)
    return h


def fetch(h: Harness, url: str):
    execution_id = h.start("fetch", {"url": url})
    h.drain()
    return h.execution(execution_id), h.steps(execution_id)["get"]


def test_ssrf_corpus_is_refused_without_opening_a_connection(tmp_path, counter, server):
    p = counter.port
    resolver = FakeResolver({
        "metadata.google.internal": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"],
        "private.example": ["10.0.0.7"],
        "allowed.test": ["127.0.0.1"],
    })
    # The counter's and the server's ports are allowed, so each refusal below is about the address.
    policy = EgressPolicy.from_lists(hosts=["allowed.test"], ports=[p, server])
    h = harness(tmp_path, policy, resolver)
    corpus = {
        f"http://127.0.0.1:{p}/": "loopback",
        f"http://[::1]:{p}/": "loopback",
        f"http://[::ffff:127.0.0.1]:{p}/": "loopback",
        f"http://0x7f000001:{p}/": "loopback",
        f"http://2130706433:{p}/": "loopback",
        f"http://0.0.0.0:{p}/": "unspecified",
        "http://169.254.169.254/latest/meta-data/": "metadata",
        "http://metadata.google.internal/computeMetadata/v1/": "metadata",
        f"http://10.1.2.3:{p}/": "private",
        f"http://172.16.5.4:{p}/": "private",
        f"http://192.168.1.1:{p}/": "private",
        f"http://mixed.example:{p}/": "loopback",
        f"http://private.example:{p}/": "private",
        f"http://allowed.test:{server}/to-internal": "loopback",
        "file:///etc/passwd": "scheme",
        f"gopher://127.0.0.1:{p}/_GET": "scheme",
        "http://127.0.0.1:8081/": "port",
    }
    for url, reason in corpus.items():
        execution, step = fetch(h, url)
        assert execution.status is ExecutionStatus.FAILED, url
        assert step.error["type"] == "EgressDenied", (url, step.error)
        assert reason in step.error["message"], (url, reason, step.error["message"])
        assert step.attempt == 1, "a refused destination is never retried"
    assert counter.accepted == 0
    # The counter does see a connection the policy allows: the zero above means something.
    h.runner.ports = StepPorts(http=GuardedHttpClient(EgressPolicy.from_lists(cidrs=["127.0.0.0/8"], ports=[p]), resolver))
    fetch(h, f"http://127.0.0.1:{p}/")
    assert counter.accepted == 1
    # Literal addresses never reach the resolver; names are resolved once per connection.
    assert sorted(set(resolver.asked)) == ["allowed.test", "mixed.example", "private.example"]


def test_an_allow_listed_loopback_server_is_reachable_with_limits(tmp_path, server):
    policy = EgressPolicy.from_lists(cidrs=["127.0.0.1/32"], ports=[server])
    h = harness(tmp_path, policy, FakeResolver({}), max_response_bytes=1024)
    execution, step = fetch(h, f"http://127.0.0.1:{server}/json")
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert step.output["status"] == 200
    assert step.output["body"] == {"ok": True, "host": f"127.0.0.1:{server}"}
    _, step = fetch(h, f"http://127.0.0.1:{server}/loop")
    assert step.error["type"] == "HttpTooManyRedirects"
    _, step = fetch(h, f"http://127.0.0.1:{server}/big")
    assert step.error["type"] == "HttpTooLarge"
    _, step = fetch(h, f"http://127.0.0.1:{server}/missing")
    assert step.error["type"] == "HttpStatus" and "404" in step.error["message"]
