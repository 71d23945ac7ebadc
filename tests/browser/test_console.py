"""The web console in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium; nothing is downloaded) against ``conveyor dev`` (API, worker and beat in one process).

A user signs in with a key, starts an execution from the form, watches its steps turn green on
the graph without reloading, opens a failed step's error and retries its execution, and sees
only its own tenant's executions; a viewer sees no action buttons and the API refuses the
actions anyway. The same holds for a pasted OIDC token (signed by the test's own JWKS), and a
refused or expiring token is answered on the sign-in page with the API's reason. Screenshots of
the pages land in ``docs/screenshots/`` (the README shows them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from selenium import webdriver
from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from engine.adapters.deadletters import RedisDeadLetters
from engine.adapters.store_sqlite import SqliteStore
from engine.auth import Role
from engine.keys import ApiKeys
from engine.records import DeadLetterRecord
from engine.service import SystemClock
from tests.jwks import AUDIENCE, ISSUER, Jwks
from tests.services import free_port, redis_url, wait_for

pytestmark = pytest.mark.backend

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
DEMO: dict[str, Any] = {
    "name": "console-demo",
    "inputs": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
    "steps": [
        {"id": "receive", "type": "transform", "with": {"value": "${input.order}"}},
        {"id": "settle", "type": "wait", "needs": ["receive"], "with": {"duration": "3s"}},
        {"id": "pack", "type": "transform", "needs": ["settle"], "with": {"value": "packed"}},
        {"id": "notify", "type": "transform", "needs": ["settle"], "with": {"value": "sent"}},
        {"id": "archive", "type": "transform", "needs": ["pack", "notify"], "with": {"value": "done"}},
    ],
}
REVIEWED: dict[str, Any] = {
    "name": "console-reviewed",
    "steps": [
        {"id": "review", "type": "approval", "with": {"message": "Ship it?"}},
        {"id": "ship", "type": "transform", "needs": ["review"], "with": {"value": "${steps.review.output.approved}"}},
    ],
}
BROKEN: dict[str, Any] = {
    "name": "console-broken",
    "steps": [
        {"id": "check", "type": "transform", "with": {"value": 1}},
        {
            "id": "refuse",
            "type": "fail",
            "needs": ["check"],
            "with": {"message": "card declined", "error_type": "Declined"},
        },
    ],
}
#: Step functions ``conveyor dev`` imports (CONVEYOR_IMPORTS): one that talks for a few seconds, then fails.
STEPS_MODULE = """
import logging
import time

from conveyor import step

log = logging.getLogger("console.shop")
log.setLevel(logging.INFO)


@step
def charge(order: str) -> None:
    for attempt in range(8):
        log.info("charging %s: try %d", order, attempt)
        time.sleep(0.4)
    print("the gateway answered 402")
    log.warning("the card was declined")
    raise RuntimeError("card declined")
"""
LOGGED: dict[str, Any] = {
    "name": "console-logged",
    "steps": [{"id": "charge", "type": "task", "with": {"function": "console_steps.charge", "args": {"order": "A-7"}}}],
}


def browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, dict[tuple[str, Role], str]]]:
    """``conveyor dev`` on a free port with keys for two tenants and every role."""
    with running_dev(tmp_path) as server:
        yield server


@contextmanager
def running_dev(tmp_path: Path, **settings: str) -> Iterator[tuple[str, dict[tuple[str, Role], str]]]:
    """``conveyor dev`` with ``settings`` (``CONVEYOR_*`` variables), keys and the demo workflows."""
    port = free_port()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    # Redis for the live streams and the bridge's dead-letter log (the test writes dead letters there).
    env.update(CONVEYOR_STATE_DIR=str(state), CONVEYOR_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    env.update(CONVEYOR_REDIS_URL=redis_url())
    (tmp_path / "console_steps.py").write_text(STEPS_MODULE)
    env.update(CONVEYOR_IMPORTS='["console_steps"]', PYTHONPATH=str(tmp_path), **settings)
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dev", "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), 60, "conveyor dev answers /readyz")
        store = SqliteStore(state / "conveyor.db")
        keys = ApiKeys(store, SystemClock())
        tokens = {(t, r): keys.create(t, r, f"{t}-{r}").token for t in ("acme", "globex") for r in Role}
        store.close()
        for tenant in ("acme", "globex"):
            for definition in (DEMO, BROKEN, REVIEWED, LOGGED):
                response = httpx.put(
                    f"{base}/v1/workflows/{definition['name']}",
                    json=definition,
                    headers={"Authorization": f"Bearer {tokens[(tenant, Role.EDITOR)]}"},
                )
                assert response.status_code in (200, 201), response.text
        yield base, tokens
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: WebDriver, condition: Any, seconds: float = 45, what: str = "") -> Any:
    def check(d: WebDriver) -> Any:
        try:
            return condition(d)
        except (StaleElementReferenceException, ElementNotInteractableException):
            return False  # the page re-rendered that part live: look again

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(check, message=what)


def click(driver: WebDriver, selector: str, what: str) -> None:
    """Click ``selector`` once it is there; the page re-renders live, so retry a stale element."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    until(driver, clicked, 60, what)


def type_into(driver: WebDriver, selector: str, text: str) -> None:
    """Type ``text`` into a field the page may re-render meanwhile; done when the field holds it."""

    def typed(d: WebDriver) -> bool:
        field = d.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(text)
        return d.find_element(By.CSS_SELECTOR, selector).get_attribute("value") == text

    until(driver, typed, 30, f"typing into {selector}")


def sign_in(driver: WebDriver, base: str, key: str) -> None:
    driver.get(f"{base}/ui/")
    field = until(driver, lambda d: d.find_element(By.ID, "key"), what="the sign-in form")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(driver, lambda d: d.find_elements(By.ID, "executions"), what="the executions page")


def node_status(driver: WebDriver, step: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'g.node[data-step="{step}"]').get_attribute("data-status"))


def test_console_round_trip(dev_server: tuple[str, dict[tuple[str, Role], str]], browser: WebDriver) -> None:
    base, keys = dev_server
    other = httpx.post(
        f"{base}/v1/executions",
        json={"workflow": "console-demo", "input": {"order": "G-1"}},
        headers={"Authorization": f"Bearer {keys[('globex', Role.OPERATOR)]}"},
    ).json()["id"]

    sign_in(browser, base, keys[("acme", Role.OPERATOR)])
    assert "acme · operator" in browser.find_element(By.ID, "who").text

    # Start an execution from the form.
    browser.get(f"{base}/ui/#/start")
    until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#start-workflow option[value="console-demo"]'),
        what="workflows",
    )
    Select(browser.find_element(By.ID, "start-workflow")).select_by_value("console-demo")
    field = browser.find_element(By.ID, "start-input")
    field.clear()
    field.send_keys('{"order": "A-1001"}')
    browser.execute_script("window.notReloaded = true")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "g.node"), what="the execution's graph")

    # Steps turn green live, without a reload.
    until(browser, lambda d: node_status(d, "receive") == "SUCCEEDED", what="receive succeeds")
    assert node_status(browser, "archive") != "SUCCEEDED", "the last step cannot have ended while settle waits"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "execution-graph.png"))
    until(browser, lambda d: node_status(d, "archive") == "SUCCEEDED", 60, "every step succeeds, live")
    assert browser.execute_script("return window.notReloaded === true"), "the page was never reloaded"
    assert all(node_status(browser, s["id"]) == "SUCCEEDED" for s in DEMO["steps"])

    # A failing step: its logs arrive live while it runs, then its error; then a retry.
    broken = httpx.post(
        f"{base}/v1/executions",
        json={"workflow": "console-logged"},
        headers={"Authorization": f"Bearer {keys[('acme', Role.OPERATOR)]}"},
    ).json()["id"]
    browser.get(f"{base}/ui/#/executions/{broken}")
    click(browser, 'button[data-logs="charge"]', "the charge step's logs")
    until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#log-lines li") and node_status(d, "charge") == "RUNNING",
        30,
        "a log line shown while the step still runs (live)",
    )
    until(browser, lambda d: node_status(d, "charge") == "FAILED", 60, "the step fails")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log-lines li")) == 10, 30, "every line")
    panel = browser.find_element(By.ID, "logs")
    assert "charging A-7: try 0" in panel.text and "the gateway answered 402" in panel.text, panel.text
    assert [li.get_attribute("data-seq") for li in panel.find_elements(By.CSS_SELECTOR, "#log-lines li")] == [
        str(n) for n in range(10)
    ]
    assert panel.find_elements(By.CSS_SELECTOR, "#log-lines li.level-warning")
    error = panel.find_element(By.CSS_SELECTOR, ".log-error")
    assert "RuntimeError: card declined" in error.text
    assert error.find_elements(By.CSS_SELECTOR, "pre.traceback"), "an operator sees the traceback"
    until(browser, lambda d: "Run 1, attempt 1: 10 lines" in d.find_element(By.ID, "logs").text, 30, "stored lines")
    browser.execute_script("document.getElementById('logs').scrollIntoView()")
    browser.save_screenshot(str(SCREENSHOTS / "logs.png"))
    assert low_contrast(browser) == [], "text below WCAG AA contrast on the execution page"
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-step="charge"]')
    assert "RuntimeError: card declined" in row.text
    click(browser, "button[data-action=retry]", "retry offered")
    until(browser, lambda d: "retry requested" in d.find_element(By.TAG_NAME, "main").text, what="the retry is sent")
    wait_for(lambda: _execution(base, keys, broken)["run"] == 2, 30, "the execution ran again")

    # Only this tenant's executions.
    browser.get(f"{base}/ui/#/executions")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#executions tbody tr")) == 2, what="the list")
    ids = {row.get_attribute("data-id") for row in browser.find_elements(By.CSS_SELECTOR, "#executions tbody tr")}
    assert other not in ids and broken in ids
    browser.save_screenshot(str(SCREENSHOTS / "executions.png"))
    assert low_contrast(browser) == [], "text below WCAG AA contrast on the executions page"
    browser.get(f"{base}/ui/#/executions/{other}")
    until(browser, lambda d: "not found" in d.find_element(By.TAG_NAME, "main").text.lower(), what="a foreign id")

    # An approval decided from the page, with a comment; the timeline shows the attempts.
    reviewed = httpx.post(
        f"{base}/v1/executions",
        json={"workflow": "console-reviewed"},
        headers={"Authorization": f"Bearer {keys[('acme', Role.OPERATOR)]}"},
    ).json()["id"]
    browser.get(f"{base}/ui/#/executions/{reviewed}")
    until(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'button[data-approve="review"]'), 60, "approve offered")
    type_into(browser, 'tr[data-step="review"] input.comment', "looks right")
    click(browser, 'button[data-approve="review"]', "approve")
    until(browser, lambda d: node_status(d, "ship") == "SUCCEEDED", 60, "the approved execution goes on")
    review = next(s for s in _steps(base, keys, reviewed) if s["key"] == "review")
    assert review["output"]["approved"] is True and review["output"]["comment"] == "looks right"
    assert browser.find_elements(By.CSS_SELECTOR, ".timeline rect.bar")

    # Workflows (the graph of the latest version, its versions) and triggers (next fire times, counters).
    trigger = httpx.post(
        f"{base}/v1/triggers",
        json={
            "workflow": "console-demo",
            "kind": "schedule",
            "spec": {"cron": "0 9 * * *", "timezone": "Europe/Berlin"},
            "input": {"order": "nightly"},
        },
        headers={"Authorization": f"Bearer {keys[('acme', Role.EDITOR)]}"},
    )
    assert trigger.status_code == 201, trigger.text
    browser.get(f"{base}/ui/#/workflows/console-demo")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#versions li"), what="the workflow's versions")
    # the graph is drawn once the compared versions are fetched, after the list of versions
    drawn = {s["id"] for s in DEMO["steps"]}
    until(
        browser,
        lambda d: {n.get_attribute("data-step") for n in d.find_elements(By.CSS_SELECTOR, "g.node")} == drawn,
        what="the graph of the latest version, every step",
    )
    browser.get(f"{base}/ui/#/triggers")
    row = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-trigger="{trigger.json()["id"]}"]'))
    assert row.text.count("AM") + row.text.count("PM") + row.text.count(":00") >= 5, row.text
    browser.save_screenshot(str(SCREENSHOTS / "triggers.png"))

    # A viewer: no actions in the page, and the API refuses them anyway.
    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, base, keys[("acme", Role.VIEWER)])
    assert not browser.find_element(By.CSS_SELECTOR, 'a[href="#/start"]').is_displayed()
    browser.get(f"{base}/ui/#/executions/{broken}")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "g.node"), what="the execution as a viewer")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-action]")
    click(browser, 'button[data-logs="charge"]', "a viewer opens the logs too")
    until(browser, lambda d: "RuntimeError: card declined" in d.find_element(By.ID, "logs").text, what="the error")
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.traceback"), "no traceback for a viewer"
    refused = httpx.post(
        f"{base}/v1/executions/{broken}/retry", headers={"Authorization": f"Bearer {keys[('acme', Role.VIEWER)]}"}
    )
    assert refused.status_code == 403


def _steps(base: str, keys: dict[tuple[str, Role], str], execution_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/v1/executions/{execution_id}/steps", headers={"Authorization": f"Bearer {keys[('acme', Role.VIEWER)]}"}
    )
    body = response.json()
    return list(body["steps"] if isinstance(body, dict) else body)


def _execution(base: str, keys: dict[tuple[str, Role], str], execution_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{base}/v1/executions/{execution_id}", headers={"Authorization": f"Bearer {keys[('acme', Role.VIEWER)]}"}
    )
    return dict(response.json())


def test_console_assets_ship_in_the_package_with_a_strict_policy(dev_server: Any) -> None:
    base, _ = dev_server
    page = httpx.get(f"{base}/ui/")
    assert page.status_code == 200 and '<script type="module" src="app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for asset in ("app.js", "style.css"):
        response = httpx.get(f"{base}/ui/{asset}")
        assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    assert "http" not in httpx.get(f"{base}/ui/").text.split("<body>")[0].replace("http-equiv", ""), "no CDN"


ROUTED: dict[str, Any] = {
    "name": "console-routed",
    "steps": [
        {"id": "pick", "type": "ai.route", "with": {"strategy": "bandit", "routes": ["fast", "careful"]}},
        {
            "id": "learn",
            "type": "ai.reward",
            "needs": ["pick"],
            "with": {"decision": "${steps.pick.output}", "reward": 1},
        },
    ],
}


def _call(base: str, key: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{base}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def rows(driver: WebDriver) -> dict[str, str]:
    """The executions table as {id: status}."""
    found = driver.find_elements(By.CSS_SELECTOR, "#executions tbody tr")
    return {str(r.get_attribute("data-id")): str(r.get_attribute("data-status")) for r in found}


#: WCAG 2 contrast of every visible text against its background (disabled controls are exempt).
LOW_CONTRAST = """
const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => v / 255)
  .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const opaque = (c) => { const p = c.match(/[\\d.]+/g); return p && (p.length < 4 || Number(p[3]) === 1); };
const background = (node) => { for (let n = node; n; n = n.parentElement) { const c = getComputedStyle(n).backgroundColor;
  if (opaque(c)) return c; } return "rgb(255, 255, 255)"; };
const low = [];
for (const node of document.querySelectorAll("main *, header *")) {
  if (!node.offsetParent || node.closest(":disabled, .sr-only")) continue;
  if (![...node.childNodes].some((t) => t.nodeType === 3 && t.textContent.trim())) continue;
  const fg = getComputedStyle(node).color; const bg = background(node);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x); const ratio = (a + 0.05) / (b + 0.05);
  if (ratio < 4.5) low.push(`${node.tagName}.${node.className} "${node.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
}
return low;
"""


#: Test instrumentation (not part of the console): remember every WebSocket the page opens.
WATCH_SOCKETS = """
const Native = window.WebSocket;
window.sockets = [];
window.WebSocket = function (url, protocols) { const s = new Native(url, protocols); window.sockets.push(s); return s; };
window.WebSocket.prototype = Native.prototype;
"""


def low_contrast(driver: WebDriver) -> list[str]:
    return list(driver.execute_script(LOW_CONTRAST))


def navigation_timing(driver: WebDriver) -> dict[str, float]:
    """The page's navigation timing and when the executions table first rendered, in ms from navigation start."""
    return dict(
        driver.execute_script(
            """const n = performance.getEntriesByType('navigation')[0];
               const m = performance.getEntriesByName('conveyor:executions-rendered')[0];
               return {dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
                       executions_rendered: m ? m.startTime : -1};"""
        )
    )


def test_console_operations(dev_server: tuple[str, dict[tuple[str, Role], str]], browser: WebDriver) -> None:
    base, keys = dev_server
    operator, editor = keys[("acme", Role.OPERATOR)], keys[("acme", Role.EDITOR)]
    held = [
        _call(
            base, operator, "POST", "/v1/executions", {"workflow": "console-reviewed", "labels": {"team": "shop"}}
        ).json()["id"]
        for _ in range(3)
    ]
    other = _call(base, operator, "POST", "/v1/executions", {"workflow": "console-reviewed", "labels": {"team": "ops"}})
    sign_in(browser, base, operator)
    browser.get(f"{base}/ui/?timing#/executions")  # a fresh navigation, the key already in the tab
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#counts a"), what="the list and its counts")
    print(f"console first load, few executions (ms from navigation start): {navigation_timing(browser)}")

    # Search: a label typed into the filters; the counts per status follow the same filters.
    type_into(browser, "input.label-filter", "team:shop")
    click(browser, ".filters button[type=submit]", "filter")
    until(browser, lambda d: set(rows(d)) == set(held), what="only the team:shop executions")
    assert "label=team%3Ashop" in browser.current_url
    until(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-count="RUNNING"]').text.endswith(" 3"), what="3 run"
    )
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="ALL"]').text.endswith(" 3")
    browser.get(f"{base}/ui/#/executions?label=team:ops&label=absent:x")
    until(browser, lambda d: "No executions match." in d.find_element(By.TAG_NAME, "main").text, what="labels AND")
    assert len(browser.find_elements(By.CSS_SELECTOR, "input.label-filter")) == 2
    browser.get(f"{base}/ui/#/executions?label=team:ops")
    until(browser, lambda d: set(rows(d)) == {other.json()["id"]}, what="the team:ops execution")
    later = "2999-01-01T00:00:00.000Z"
    browser.get(f"{base}/ui/#/executions?workflow=console-reviewed&created_after={later}")
    until(browser, lambda d: "No executions match." in d.find_element(By.TAG_NAME, "main").text, what="time range")
    # the counts are asked for once the table has its answer
    until(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-count="ALL"]').text.endswith(" 0"), what="0 counted"
    )

    # An event trigger: the event that matched it, and the executions it started, found by trigger.
    trigger = _call(
        base,
        editor,
        "POST",
        "/v1/triggers",
        {
            "workflow": "console-demo",
            "kind": "event",
            "spec": {"type": "order.paid"},
            "input": {"order": "${event.data.order}"},
        },
    ).json()["id"]
    assert (
        _call(
            base, operator, "POST", "/v1/events", {"type": "order.paid", "id": "evt-77", "data": {"order": "E-1"}}
        ).status_code
        == 202
    )
    browser.get(f"{base}/ui/#/triggers")
    until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-trigger="{trigger}"] li[data-event="evt-77"]'),
        what="the matching event",
    )
    click(browser, f'tr[data-trigger="{trigger}"] a.started', "all the executions the trigger started")
    until(browser, lambda d: len(rows(d)) == 1, what="the execution the trigger started")

    # Bulk cancel, then bulk retry, from the executions list.
    browser.get(f"{base}/ui/#/executions?workflow=console-reviewed&label=team:shop")
    until(browser, lambda d: set(rows(d)) == set(held), what="the three held executions")
    for execution_id in held[:2]:
        click(browser, f'input[data-select="{execution_id}"]', "select a row")
    until(browser, lambda d: "2 selected" in d.find_element(By.CSS_SELECTOR, ".bulk").text, what="two selected")
    click(browser, 'button[data-bulk="cancel"]', "bulk cancel")
    until(browser, lambda d: "Cancelled 2 of 2." in d.find_element(By.TAG_NAME, "main").text, what="the bulk result")
    until(browser, lambda d: [rows(d).get(i) for i in held] == ["CANCELLED", "CANCELLED", "RUNNING"], what="live rows")
    # Bulk retry: the failed ones run again; a running one is refused, and says why.
    failed = [
        _call(base, operator, "POST", "/v1/executions", {"workflow": "console-broken"}).json()["id"] for _ in range(2)
    ]
    wait_for(lambda: all(_execution(base, keys, i)["status"] == "FAILED" for i in failed), 60, "two executions fail")
    browser.get(f"{base}/ui/#/executions")
    until(browser, lambda d: all(rows(d).get(i) == "FAILED" for i in failed), what="the failed rows")
    for execution_id in [*failed, held[2]]:
        click(browser, f'input[data-select="{execution_id}"]', "select a row to retry")
    click(browser, 'button[data-bulk="retry"]', "bulk retry")
    result = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "ul.refused"), what="the retry result")
    assert "Retried 2 of 3." in browser.find_element(By.TAG_NAME, "main").text
    assert held[2][:12] in result.text and "cannot move from RUNNING" in result.text, result.text
    wait_for(lambda: all(_execution(base, keys, i)["run"] == 2 for i in failed), 30, "the failed ones ran again")

    # Keyboard only: tab to a row's checkbox and tick it with the space bar.
    browser.find_element(By.ID, "select-all").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("data-select"), "the first row's checkbox follows select-all in the tab order"
    focused.send_keys(Keys.SPACE)
    until(browser, lambda d: "1 selected" in d.find_element(By.CSS_SELECTOR, ".bulk").text, what="selected by keyboard")

    # A phone: the page does not scroll sideways (wide tables scroll inside their box).
    browser.set_window_size(390, 844)
    browser.get(f"{base}/ui/#/executions")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#executions tbody tr"), what="the list on a phone")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.save_screenshot(str(SCREENSHOTS / "executions-phone.png"))
    browser.set_window_size(1280, 900)

    # A workflow's second version, compared with the first.
    changed = {
        **DEMO,
        "steps": [*DEMO["steps"], {"id": "audit", "type": "transform", "needs": ["archive"], "with": {"value": 1}}],
    }
    assert _call(base, editor, "PUT", "/v1/workflows/console-demo", changed).status_code == 201
    browser.get(f"{base}/ui/#/workflows/console-demo")
    diff = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "pre#diff"), what="the diff of v1 and v2")
    added = [n.text for n in diff.find_elements(By.CSS_SELECTOR, "ins")]
    assert any('"id": "audit"' in line for line in added) and not diff.find_elements(By.CSS_SELECTOR, "del"), added
    assert {n.get_attribute("data-step") for n in browser.find_elements(By.CSS_SELECTOR, "g.node")} >= {"audit"}
    Select(browser.find_element(By.ID, "diff-to")).select_by_value("1")
    until(browser, lambda d: "same definition" in d.find_element(By.ID, "diff").text, what="v1 against itself")

    # AI decisions: the bandit's choices with their rationale, and what it has learned.
    assert _call(base, editor, "PUT", "/v1/workflows/console-routed", ROUTED).status_code == 201
    routed = [
        _call(base, operator, "POST", "/v1/executions", {"workflow": "console-routed"}).json()["id"] for _ in range(3)
    ]
    wait_for(
        lambda: all(_execution(base, keys, i)["status"] == "SUCCEEDED" for i in routed), 60, "routed executions end"
    )
    browser.get(f"{base}/ui/#/decisions")
    section = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-route-step="console-routed/pick"]'))
    decided = section.find_elements(By.CSS_SELECTOR, "tr[data-execution]")
    assert {r.get_attribute("data-execution") for r in decided} == set(routed)
    assert all("Thompson sample" in r.text for r in decided)
    arms = section.find_elements(By.CSS_SELECTOR, "tr[data-route]")
    assert {a.get_attribute("data-route") for a in arms} <= {"fast", "careful"} and arms

    # Dead letters of the bridge, with their reasons: this tenant's only.
    kept = RedisDeadLetters(redis_url(), size=10)
    kept.client.delete(kept.key("acme"), kept.key("globex"))
    for tenant, reason in (("acme", "malformed"), ("acme", "too-large"), ("globex", "unroutable")):
        kept.record(
            DeadLetterRecord(
                tenant, f"{tenant}-{reason}", "orders-sub", reason, f"{reason} detail", time.time(), data="[1]"
            )
        )
    browser.get(f"{base}/ui/#/triggers")
    dead = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"), what="dead letters")
    assert [r.get_attribute("data-reason") for r in dead] == ["too-large", "malformed"]
    assert "malformed detail" in dead[1].text and "globex" not in browser.find_element(By.TAG_NAME, "main").text
    kept.client.delete(kept.key("acme"), kept.key("globex"))
    kept.close()

    # A foreach drawn as one group with done/total; a large input fetched and shown only on demand.
    fanout = {
        "name": "console-fanout",
        "steps": [
            {"id": "each", "type": "transform", "foreach": "input.items", "concurrency": 2, "with": {"value": 1}}
        ],
    }
    assert _call(base, editor, "PUT", "/v1/workflows/console-fanout", fanout).status_code == 201
    items = [{"n": n, "pad": "x" * 100} for n in range(30)]
    fanned = _call(base, operator, "POST", "/v1/executions", {"workflow": "console-fanout", "input": {"items": items}})
    browser.get(f"{base}/ui/#/executions/{fanned.json()['id']}")
    group = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'g.node.group[data-step="each"][data-total="30"]'))
    until(browser, lambda d: node_status(d, "each") == "SUCCEEDED", 60, "every item done")
    group = browser.find_element(By.CSS_SELECTOR, 'g.node.group[data-step="each"]')
    assert (group.get_attribute("data-done"), group.get_attribute("data-total")) == ("30", "30")
    assert "30/30 done" in group.text
    assert not browser.find_elements(By.ID, "input"), "the input is not fetched before it is asked for"
    click(browser, 'button[data-payload="input"]', "show the input")
    click(browser, "#input button", "a large input sits behind a button")
    until(browser, lambda d: '"pad": "xxxx' in d.find_element(By.ID, "input").text, what="the whole input")

    # A live stream that drops is reopened after the last cursor it saw; no line is shown twice.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_SOCKETS})
    talking = _call(base, operator, "POST", "/v1/executions", {"workflow": "console-logged"}).json()["id"]
    browser.get(f"{base}/ui/?watched#/executions/{talking}")
    click(browser, 'button[data-logs="charge"]', "open the logs")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log-lines li")) >= 2, 30, "lines arrive live")
    browser.execute_script("window.sockets[0].close()")
    reopened = until(browser, lambda d: d.execute_script("return window.sockets.length > 1 && window.sockets[1].url"))
    assert "after=" in reopened, reopened
    until(browser, lambda d: node_status(d, "charge") == "FAILED", 60, "the step fails")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log-lines li")) == 10, 30, "every line, once")
    seqs = [li.get_attribute("data-seq") for li in browser.find_elements(By.CSS_SELECTOR, "#log-lines li")]
    assert seqs == [str(n) for n in range(10)], seqs

    # A viewer: no checkboxes or bulk buttons, and the API refuses bulk actions anyway.
    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, base, keys[("acme", Role.VIEWER)])
    until(browser, lambda d: len(rows(d)) >= 3, what="the list as a viewer")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-select], [data-bulk], #select-all")
    refused = _call(base, keys[("acme", Role.VIEWER)], "POST", "/v1/executions/bulk/cancel", {"ids": held})
    assert refused.status_code == 403
    assert _call(base, operator, "GET", f"/v1/executions/{held[2]}").json()["status"] == "RUNNING"


def refused_sign_in(driver: WebDriver, base: str, token: str) -> str:
    """Sign in with a token the API refuses: the text of the alert the sign-in form shows."""
    driver.get(f"{base}/ui/")
    until(driver, lambda d: d.find_element(By.ID, "key"), what="the sign-in form").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    alert = until(driver, lambda d: d.find_element(By.CSS_SELECTOR, "form [role=alert]"), what="the refusal")
    assert driver.find_elements(By.ID, "key") and not driver.find_elements(By.ID, "executions")
    return str(alert.text)


def test_console_signs_in_with_an_oidc_access_token(tmp_path: Path, jwks: Jwks, browser: WebDriver) -> None:
    """A pasted OIDC token (RS256, signed by the test's own JWKS): tenant and role come from its claims."""
    oidc = {"CONVEYOR_OIDC_JWKS_URL": jwks.url, "CONVEYOR_OIDC_ISSUER": ISSUER, "CONVEYOR_OIDC_AUDIENCE": AUDIENCE}
    with running_dev(tmp_path, **oidc) as (base, keys):
        mine = [
            _call(base, keys[("acme", Role.OPERATOR)], "POST", "/v1/executions", {"workflow": "console-reviewed"})
            for _ in range(2)
        ]
        held, kept = (r.json()["id"] for r in mine)
        theirs = _call(
            base, keys[("globex", Role.OPERATOR)], "POST", "/v1/executions", {"workflow": "console-reviewed"}
        )
        assert theirs.status_code == 201, theirs.text

        # Refused tokens: the sign-in page says why (the API's problem detail), and nobody is signed in.
        now = int(time.time())
        expired = jwks.token(sub="ann", role="operator", exp=now - 3600, iat=now - 7200)
        assert "Signature has expired" in refused_sign_in(browser, base, expired)
        impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "tenant": "acme", "role": "admin"},
            impostor,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        assert "Signature verification failed" in refused_sign_in(browser, base, forged)

        # An operator's token: its tenant's executions only, and the actions.
        operator = jwks.token(sub="ann", role="operator")
        sign_in(browser, base, operator)
        assert "acme · operator" in browser.find_element(By.ID, "who").text
        until(browser, lambda d: set(rows(d)) == {held, kept}, what="acme's executions only")
        assert browser.find_elements(By.CSS_SELECTOR, "[data-select], [data-bulk]"), "an operator gets bulk actions"
        assert browser.find_element(By.CSS_SELECTOR, 'a[href="#/start"]').is_displayed()
        browser.get(f"{base}/ui/#/executions/{theirs.json()['id']}")
        until(browser, lambda d: "not found" in d.find_element(By.TAG_NAME, "main").text.lower(), what="a foreign id")
        # The live stream takes the token too (the page does not poll): an approval given through the
        # API with the same token shows up on the graph without a reload.
        browser.get(f"{base}/ui/#/executions/{held}")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-action]"), what="operator actions")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'button[data-approve="review"]'), what="approve")
        browser.execute_script("window.notReloaded = true")
        approved = _call(
            base, operator, "POST", f"/v1/executions/{held}/steps/review/approval", {"decision": "approve"}
        )
        assert approved.status_code < 300, approved.text
        until(browser, lambda d: node_status(d, "ship") == "SUCCEEDED", 60, "the approved execution goes on, live")
        assert browser.execute_script("return window.notReloaded === true"), "the page was never reloaded"

        # A viewer's token: no action buttons, and the API refuses the action anyway.
        browser.find_element(By.ID, "sign-out").click()
        viewer = jwks.token(sub="vic", role="viewer")
        sign_in(browser, base, viewer)
        assert "acme · viewer" in browser.find_element(By.ID, "who").text
        until(browser, lambda d: set(rows(d)) == {held, kept}, what="the list as a viewer")
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-select], [data-bulk], #select-all")
        assert not browser.find_element(By.CSS_SELECTOR, 'a[href="#/start"]').is_displayed()
        browser.get(f"{base}/ui/#/executions/{kept}")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "g.node"), what="the execution as a viewer")
        until(browser, lambda d: node_status(d, "review") == "WAITING", what="the approval waits")
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-action], [data-approve]")
        assert _call(base, viewer, "POST", f"/v1/executions/{kept}/cancel").status_code == 403
        assert _call(base, keys[("acme", Role.VIEWER)], "GET", f"/v1/executions/{kept}").json()["status"] == "RUNNING"

        # A token that expires while the page is open (the API allows 30 s of clock skew, so it is
        # accepted for 7-8 s more: time enough to sign in): the next refresh of the list is
        # refused and the sign-in page says why.
        browser.find_element(By.ID, "sign-out").click()
        sign_in(browser, base, jwks.token(sub="eve", role="operator", exp=int(time.time()) - 22))
        alert = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "form [role=alert]"), 60, "signed out")
        assert "Signature has expired" in alert.text and "Sign in again" in alert.text, alert.text
        assert (
            browser.find_element(By.ID, "who").text == ""
            and browser.find_element(By.ID, "sign-out").is_displayed() is False
        )


KEPT: dict[str, Any] = {
    "name": "console-kept",
    "retention": 0,
    "steps": [{"id": "note", "type": "transform", "with": {"value": "kept"}}],
}


def test_console_shows_retention_and_deletes_a_finished_execution(
    dev_server: tuple[str, dict[tuple[str, Role], str]], browser: WebDriver
) -> None:
    base, keys = dev_server
    operator, viewer = keys[("acme", Role.OPERATOR)], keys[("acme", Role.VIEWER)]
    assert _call(base, keys[("acme", Role.EDITOR)], "PUT", "/v1/workflows/console-kept", KEPT).status_code in (200, 201)
    failed, gone, forever, active = (
        _call(base, operator, "POST", "/v1/executions", {"workflow": name}).json()["id"]
        for name in ("console-broken", "console-broken", "console-kept", "console-reviewed")
    )
    wait_for(lambda: _call(base, operator, "GET", f"/v1/executions/{failed}").json()["status"] == "FAILED", 60, "fail")
    expires_at = _call(base, operator, "GET", f"/v1/executions/{failed}").json()["expires_at"]
    assert expires_at is not None

    # A viewer sees when it goes, but is offered no Delete.
    sign_in(browser, base, viewer)
    browser.get(f"{base}/ui/#/executions/{failed}")
    shown = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-expires]"), what="its expiry")
    assert datetime.fromisoformat(str(shown.get_attribute("data-expires"))) == datetime.fromisoformat(expires_at)
    assert "deleted after" in shown.text
    assert not browser.find_elements(By.CSS_SELECTOR, "button[data-action=delete]")

    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, base, operator)
    # Kept forever (its workflow's retention is 0); an active execution shows no expiry and no Delete.
    browser.get(f"{base}/ui/#/executions/{forever}")
    until(browser, lambda d: "kept forever" in d.find_element(By.CSS_SELECTOR, '[data-expires="never"]').text)
    browser.get(f"{base}/ui/#/executions/{active}")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button[data-action=cancel]"), what="the active page")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-expires]")
    assert not browser.find_elements(By.CSS_SELECTOR, "button[data-action=delete]")

    # Delete asks first; Keep backs out and nothing is deleted.
    browser.get(f"{base}/ui/#/executions/{failed}")
    click(browser, "button[data-action=delete]", "Delete offered")
    click(browser, "button[data-keep]", "Keep")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button[data-action=delete]"), what="Delete again")
    assert _call(base, operator, "GET", f"/v1/executions/{failed}").status_code == 200
    # Confirmed: gone, and the console is back on the list.
    click(browser, "button[data-action=delete]", "Delete offered")
    click(browser, "button[data-confirm-delete]", "Delete permanently")
    until(browser, lambda d: d.current_url.endswith("#/executions"), what="back on the list")
    until(browser, lambda d: d.find_elements(By.ID, "executions"), what="the list")
    assert _call(base, operator, "GET", f"/v1/executions/{failed}").status_code == 404

    # A refusal (deleted meanwhile by someone else) shows the API's problem, like the other actions.
    wait_for(lambda: _call(base, operator, "GET", f"/v1/executions/{gone}").json()["status"] == "FAILED", 60, "fail")
    browser.get(f"{base}/ui/#/executions/{gone}")
    click(browser, "button[data-action=delete]", "Delete offered")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button[data-confirm-delete]"), what="the confirm step")
    assert _call(base, operator, "DELETE", f"/v1/executions/{gone}").status_code == 204
    click(browser, "button[data-confirm-delete]", "Delete permanently")
    alert = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "main .notice.error"), what="the refusal")
    problem = _call(base, operator, "DELETE", f"/v1/executions/{gone}").json()
    assert alert.text == problem["detail"]
    assert browser.current_url.endswith(f"#/executions/{gone}")
