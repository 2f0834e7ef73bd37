"""Bad upstreams: each gets a clear answer within its deadline, the worker keeps serving,
and budgets are exactly as if the failed attempt had not reserved anything it did not use."""

import time

import httpx
import pytest

from conftest import chat, render_config
from test_budgets import ADMIN_TOKEN

PRICE_IN, PRICE_OUT = 100_000, 200_000  # nano-dollars per token
ANSWER = 10 * PRICE_IN + 5 * PRICE_OUT  # the mock's default usage


@pytest.fixture(scope="module")
def proxy(workdir, mock, host_class):
    (workdir / "bad").mkdir()
    proxy = host_class(workdir / "bad", render_config("budgets.yaml", mock), env={"DETOUR_ADMIN_TOKEN": ADMIN_TOKEN}).start()
    yield proxy
    proxy.stop()


def account(proxy) -> dict:
    status = httpx.get(f"{proxy.url}/detour/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()
    return next(b for b in status["budgets"] if b["scope"] == "group/bad")


@pytest.mark.parametrize(
    "step",
    [
        {"garbage": True, "status": 502},
        {"status": 503, "body": "x" * (10 * 1024 * 1024)},  # a 10 MB error body
        {"drop": "before_headers"},
        {"hang": True, "hang_ms": 5000},  # accepts, never answers: request_timeout (2 s)
        {"error": "server"},
    ],
    ids=["garbage-502", "10mb-error-body", "reset-before-headers", "never-answers", "server-error"],
)
def test_a_failed_attempt_falls_back_and_costs_nothing(proxy, mock, step):
    mock.script("bad-a", [step])
    before = account(proxy)
    tried = len(mock.requests("bad-a"))
    resp = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("bad", max_tokens=5), timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["x-detour-deployment"] == "bad/openai/bad-2"
    assert len(mock.requests("bad-a")) == tried + 1, "the bad upstream was really tried"
    after = account(proxy)
    # Only the answer the client got was charged, at its reported usage; nothing is held.
    assert after["spent_nanos"] - before["spent_nanos"] == ANSWER
    assert after["reserved_nanos"] == 0
    # The worker keeps serving.
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("bad"), timeout=30).status_code == 200


def test_a_stream_cut_short_is_charged_its_estimate_and_holds_nothing(proxy, mock):
    # Headers and a first chunk reach the client before the provider drops the stream.
    mock.script("bad-a", [{"drop": "mid_body", "chunk_delay_ms": 300}])
    before = account(proxy)
    tried = len(mock.requests("bad-a"))
    received = b""
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        try:
            with client.stream("POST", "/v1/chat/completions", json=chat("bad", "abcd", stream=True, max_tokens=7)) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes():
                    received += chunk
        except httpx.HTTPError:
            pass  # a cut stream may also surface as a protocol error, depending on timing
    # Once bytes reached the client nothing can replace them: the client sees the cut.
    assert len(mock.requests("bad-a")) == tried + 1
    assert b"[DONE]" not in received
    after = account(proxy)
    # Never counted as free: the cut stream reported no usage, so its estimate is charged
    # (prompt "abcd" + role "user" = 8 characters → 2 tokens + 4 per message; 7 output).
    assert after["spent_nanos"] - before["spent_nanos"] == 6 * PRICE_IN + 7 * PRICE_OUT
    assert after["reserved_nanos"] == 0
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("bad"), timeout=30).status_code == 200


def test_a_stream_that_never_ends_can_be_abandoned_and_costs_its_estimate(proxy, mock):
    # A provider that keeps a stream open (a chunk every second, for minutes): the client
    # gives up after the first chunks. Nothing hangs on detour's side; the worker serves
    # the next request; the abandoned answer is charged its estimate and nothing stays held.
    mock.script("bad-a", [{"chunks": ["tick "] * 300, "chunk_delay_ms": 1000}])
    before = account(proxy)
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=chat("bad", "abcd", stream=True, max_tokens=7)) as resp:
            assert resp.status_code == 200
            assert resp.headers["x-detour-deployment"] == "bad/openai/bad-1"
            for chunk in resp.iter_bytes():
                if b"tick" in chunk:
                    break  # leave: closes the connection mid-stream
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("bad"), timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = account(proxy)
        if after["reserved_nanos"] == 0 and after["spent_nanos"] > before["spent_nanos"] + ANSWER:
            break
        time.sleep(0.2)
    assert after["reserved_nanos"] == 0
    assert after["spent_nanos"] - before["spent_nanos"] == (6 * PRICE_IN + 7 * PRICE_OUT) + ANSWER
