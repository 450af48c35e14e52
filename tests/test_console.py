"""The console: its API on the tiny models, its live view on the embedded broker, and the page in a real browser."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

pytest.importorskip("fastapi", reason="the console extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from console.live import LiveFeed, LiveState, _quantile_ms  # noqa: E402
from console.web import create_app  # noqa: E402
from consumer.routing import RoutingPolicy  # noqa: E402
from schemas.feedback import Feedback
from tests.fakes import enriched_event  # noqa: E402


def enriched(event_id: str, route: str = "auto_response", intent: str = "track_order") -> bytes:
    return enriched_event(event_id, None, intent, route)


@pytest.fixture
def published() -> list[Feedback]:
    return []


@pytest.fixture
def client(tiny_model, published) -> TestClient:
    app = create_app(tiny_model, RoutingPolicy.default(), max_text_chars=200, publish_feedback=published.append)
    return TestClient(app)


def test_typed_text_gets_the_top_three_intents_sentiment_and_route(client):
    response = client.post("/api/classify", json={"text": "i want a refund please"})
    assert response.status_code == 200
    body = response.json()
    assert body["intent"]["label"] == "get_refund" and body["intent"]["category"] == "REFUND"
    assert len(body["intent"]["top_k"]) == 3 and body["route"] in ("auto_response", "human_agent")
    assert body["sentiment"]["label"] in ("negative", "neutral", "positive") and body["reasons"]
    assert "<textarea" in client.get("/").text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"text": "   "}', 400, "the text is empty"),
        (b'{"text": "' + b"x" * 300 + b'"}', 413, "the service takes at most 200"),
        (b'{"text": "caf\xe9"}', 400, "in UTF-8"),
        (b"not json", 400, "send JSON"),
        (b"[1, 2]", 400, "send JSON"),
    ],
)
def test_bad_input_gets_a_clear_message(client, body, status, message):
    response = client.post("/api/classify", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status and message in response.json()["error"]


def test_a_correction_is_published_only_when_it_is_valid(client, published, tiny_model):
    assert client.post("/api/feedback", json={"event_id": "e-1", "intent": "track_order"}).status_code == 202
    assert published == [Feedback(event_id="e-1", intent="track_order")]
    unknown = client.post("/api/feedback", json={"event_id": "e-1", "intent": "weather"})
    assert unknown.status_code == 400 and "not an intent" in unknown.json()["error"]
    assert client.post("/api/feedback", json={"intent": "track_order"}).status_code == 400
    without = TestClient(create_app(tiny_model, RoutingPolicy.default()))
    assert without.post("/api/feedback", json={"event_id": "e", "intent": "track_order"}).status_code == 503
    assert without.get("/api/labels").json()["feedback"] is False


def test_the_live_view_counts_routes_and_intents_and_hides_text():
    state = LiveState(keep=2)
    for i, route in enumerate(["auto_response", "human_agent", "auto_response"]):
        state.add(route, enriched(f"e{i}", route, "track_order" if i else "get_refund"), now=100.0 + i)
    state.add("dlq", b"anything", now=103.0)
    view = state.snapshot(now=104.0)
    assert view["routes"] == {"auto_response": 2, "human_agent": 1, "dlq": 1}
    assert view["intents"] == {"track_order": 2, "get_refund": 1}
    assert [e["event_id"] for e in view["events"]] == ["e2", "e1"] and view["events"][0]["text"] is None
    assert view["per_s"] == 0.4
    shown = LiveState(show_text=True)
    shown.add("auto_response", enriched("e9"))
    assert shown.snapshot()["events"][0]["text"] == "secret text of e9"


def test_p99_is_read_from_the_latency_histogram():
    buckets = [(0.05, 50.0), (0.1, 98.0), (0.25, 99.5), (float("inf"), 100.0)]
    assert _quantile_ms(buckets, 0.99) == 250.0 and _quantile_ms(buckets, 0.5) == 50.0
    assert _quantile_ms([], 0.99) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def live_console(tiny_model, bootstrap_servers, topics) -> Iterator[tuple[str, LiveState]]:
    """The console on a free port, its live feed on the embedded broker's routing topics."""
    import uvicorn

    from consumer.settings import Settings
    from consumer.topics import ensure_topics

    names = {"auto_response": topics["auto_topic"], "human_agent": topics["human_topic"], "dlq": topics["dlq_topic"]}
    settings = Settings(bootstrap_servers=bootstrap_servers)
    ensure_topics(settings.admin_config(), list(names.values()), 1, 1)
    state = LiveState()
    feed = LiveFeed(settings.common_config(), names, state).start()
    port = _free_port()
    app = create_app(tiny_model, RoutingPolicy.default(), live=state)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 30, "the console to listen")
    try:
        yield f"http://127.0.0.1:{port}/", state
    finally:
        server.should_exit = True
        thread.join(10)
        feed.stop()


def _produce_until_counted(bootstrap_servers, topics, state, count: int) -> None:
    """The feed starts at the end of each topic once assigned: produce until the console has counted ``count``."""
    from tests.kafka_client import produce

    sent = 0
    deadline = time.monotonic() + 60
    while sum(state.snapshot()["routes"].values()) < count:
        assert time.monotonic() < deadline, "the live feed never counted the events"
        produce(bootstrap_servers, topics["auto_topic"], [(b"k", enriched(f"live-{sent}"), [])])
        sent += 1
        time.sleep(0.3)


@pytest.mark.integration
@pytest.mark.slow
def test_the_live_feed_counts_events_streaming_through_the_broker(live_console, bootstrap_servers, topics):
    url, state = live_console
    _produce_until_counted(bootstrap_servers, topics, state, 3)
    import urllib.request

    view = orjson.loads(urllib.request.urlopen(url + "api/live", timeout=10).read())["live"]
    assert view["routes"]["auto_response"] >= 3 and view["intents"]["track_order"] >= 3


def _chrome():
    """Headless chromium driven by Selenium through the system's chromedriver; skipped where there is none."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no system chromium/chromedriver (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=DriverService(driver_path), options=options)


@pytest.mark.integration
@pytest.mark.slow
def test_the_page_in_a_browser_classifies_and_shows_live_counts(live_console, bootstrap_servers, topics, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    url, state = live_console
    browser = _chrome()
    try:
        browser.get(url)
        browser.find_element(By.ID, "text").send_keys("i want a refund please")
        browser.find_element(By.ID, "classify").click()
        WebDriverWait(browser, 20).until(expected_conditions.visibility_of_element_located((By.ID, "result")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#topk tbody tr")
        assert len(rows) == 3 and rows[0].find_elements(By.TAG_NAME, "td")[0].text == "get_refund"
        assert browser.find_element(By.ID, "route").text in ("auto_response", "human_agent")

        browser.find_element(By.ID, "text").clear()
        browser.find_element(By.ID, "classify").click()
        WebDriverWait(browser, 10).until(lambda b: "empty" in b.find_element(By.ID, "error").text)

        before = int(browser.find_element(By.ID, "count-auto_response").text)
        _produce_until_counted(bootstrap_servers, topics, state, before + 3)
        WebDriverWait(browser, 20).until(lambda b: int(b.find_element(By.ID, "count-auto_response").text) >= before + 3)
        assert "live-" in browser.find_element(By.ID, "events").text
        assert "secret text" not in browser.page_source, "inquiry texts stay hidden unless enabled"
        browser.save_screenshot(str(Path(tmp_path) / "console.png"))
    finally:
        browser.quit()
