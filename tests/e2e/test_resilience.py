"""Resilience rules, one test each, against real Envoy (two workers) and the mock.

Waits are scaled down by the rules config (backoff 100/200/400 ms, cooldown 2 s);
tests assert order and counts, and only lower bounds of time (a wait cannot be shorter
than configured, however slow the machine)."""

import concurrent.futures
import time

import pytest

from conftest import chat


def sent_to(mock, *deployments):
    """Arrival order restricted to the given deployments."""
    return [r["deployment"] for r in mock.requests() if r["deployment"] in deployments]


def test_429_moves_on_at_once_and_cools_the_deployment_down(client, mock, envoy):
    mock.script("rl-primary", [{"error": "rate_limit", "retry_after": 30}])
    resp = client.post("/v1/chat/completions", json=chat("rl"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "rl/openai/rl-2"
    assert sent_to(mock, "rl-primary", "rl-secondary") == ["rl-primary", "rl-secondary"]
    # Cooled down for max(cooldown_time, Retry-After) = 30 s, across both workers: the
    # next requests (fresh connections, spread over the workers by the kernel) skip the
    # primary without sending it anything.
    for _ in range(24):
        assert client.post("/v1/chat/completions", json=chat("rl")).status_code == 200
    assert len(mock.requests("rl-primary")) == 1
    assert len(mock.requests("rl-secondary")) == 25
    skipping_threads = {t for t, e in envoy.events_by_thread() if e["event"] == "fallback" and e["group"] == "rl"}
    assert len(skipping_threads) == 2, "both workers must have seen the shared cooldown"
    kinds = [(e["event"], e.get("deployment")) for e in envoy.events()]
    assert ("cooldown", "rl/openai/rl-1") in kinds
    fallbacks = [e for e in envoy.events() if e["event"] == "fallback" and e["group"] == "rl"]
    assert fallbacks[0]["from"] == "rl/openai/rl-1" and fallbacks[0]["reason"] == "rate_limit"


def test_transient_failures_are_retried_with_backoff_then_the_chain_moves_on(client, mock, envoy):
    mock.script("retry-a", [{"error": "unavailable"}, {"error": "server"}, {"status": 502}, {"error": "overloaded"}])
    resp = client.post("/v1/chat/completions", json=chat("retry"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "retry-backup/openai/retry-2"
    assert resp.headers["x-detour-attempts"] == "5"
    # 1 attempt + num_retries (3) on the same deployment, then the configured fallback.
    assert sent_to(mock, "retry-a", "retry-b") == ["retry-a"] * 4 + ["retry-b"]
    times = [r["time"] for r in mock.requests("retry-a")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # exponential: 100, 200, 400 ms
    retries = [e for e in envoy.events() if e["event"] == "retry" and e["group"] == "retry"]
    assert [e["retry"] for e in retries] == [1, 2, 3]


def test_a_transient_failure_that_clears_is_answered_by_the_same_deployment(client, mock):
    mock.script("recover-a", [{"error": "unavailable"}])
    resp = client.post("/v1/chat/completions", json=chat("recover"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "hello from recover-a"
    assert len(mock.requests("recover-a")) == 2


def test_retry_after_on_a_transient_failure_sets_the_wait(client, mock):
    mock.script("ra-a", [{"error": "unavailable", "retry_after": 1}])
    resp = client.post("/v1/chat/completions", json=chat("retry-after"))
    assert resp.status_code == 200, resp.text
    first, second = [r["time"] for r in mock.requests("ra-a")]
    assert second - first >= 1.0


def test_auth_errors_move_on_at_once(client, mock):
    mock.script("auth-a", [{"error": "auth"}, {"error": "auth"}])
    resp = client.post("/v1/chat/completions", json=chat("auth"))
    assert resp.status_code == 200, resp.text
    assert sent_to(mock, "auth-a", "auth-b") == ["auth-a", "auth-b"]


def test_context_window_error_follows_context_window_fallbacks(client, mock, envoy):
    mock.script("cw-small", [{"error": "context_length"}])
    resp = client.post("/v1/chat/completions", json=chat("cw"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "cw-big/openai/cw-big"
    assert sent_to(mock, "cw-small", "cw-big") == ["cw-small", "cw-big"]
    fallback = [e for e in envoy.events() if e["event"] == "fallback" and e["group"] == "cw"][-1]
    assert fallback["reason"] == "context_window"


def test_a_prompt_larger_than_the_window_skips_the_deployment_before_sending(client, mock):
    small = client.post("/v1/chat/completions", json=chat("cw-pre", "short"))
    assert small.headers["x-detour-deployment"] == "cw-pre/openai/cwpre-small"
    big = client.post("/v1/chat/completions", json=chat("cw-pre", "word " * 400))  # ~500 tokens > 50
    assert big.status_code == 200, big.text
    assert big.headers["x-detour-deployment"] == "cw-pre/openai/cwpre-big"
    assert len(mock.requests("cwpre-small")) == 1  # only the short prompt reached it


def test_content_policy_refusal_follows_content_policy_fallbacks(client, mock):
    mock.script("cp-a", [{"error": "content_policy"}])
    resp = client.post("/v1/chat/completions", json=chat("cp"))
    assert resp.status_code == 200, resp.text
    assert sent_to(mock, "cp-a", "cp-safe") == ["cp-a", "cp-safe"]


def test_other_4xx_goes_back_to_the_client_untouched(client, mock):
    mock.script("pass-a", [{"error": "bad_request"}])
    resp = client.post("/v1/chat/completions", json=chat("pass400"))
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Invalid value for 'temperature'"
    assert mock.requests("pass-b") == []  # the fallback group was not used


def test_when_everything_fails_one_error_lists_every_attempt(client, mock):
    mock.script("af-a", [], default={"error": "server"})
    mock.script("af-b", [], default={"status": 503})
    resp = client.post("/v1/chat/completions", json=chat("allfail"))
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "all_deployments_failed"
    attempts = error["attempts"]
    # The breaker (allowed_fails 3) opens on af-a's 4th failure, so af-a gets 4 attempts,
    # then af-b its 1 + retries, capped by max_attempts (6) in all.
    assert [a["deployment"] for a in attempts][:4] == ["allfail/openai/af-1"] * 4
    assert {a["reason"] for a in attempts} <= {"server_error", "attempt_cap_reached"}
    assert all("duration_ms" in a and "status" in a for a in attempts)
    assert len([a for a in attempts if a["status"] is not None]) == 6
    assert len(mock.requests("af-a")) + len(mock.requests("af-b")) == 6


def test_when_every_deployment_is_rate_limited_the_client_gets_429_with_retry_after(client, mock):
    mock.script("arl-a", [{"error": "rate_limit", "retry_after": 20}])
    mock.script("arl-b", [{"error": "rate_limit", "retry_after": 5}])
    resp = client.post("/v1/chat/completions", json=chat("allrl"))
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "all_deployments_rate_limited"
    # Both are cooling down now: the next request sends nothing and says when to come back.
    again = client.post("/v1/chat/completions", json=chat("allrl"))
    assert again.status_code == 429
    assert 1 <= int(again.headers["retry-after"]) <= 5
    assert len(mock.requests("arl-a")) == 1 and len(mock.requests("arl-b")) == 1


def test_attempt_cap_bounds_a_request(client, mock):
    for dep in ("cap-a", "cap-b", "cap-c"):
        mock.script(dep, [], default={"error": "unavailable"})
    resp = client.post("/v1/chat/completions", json=chat("cap"))
    assert resp.status_code == 502
    assert len(sent_to(mock, "cap-a", "cap-b", "cap-c")) == 6  # detour.max_attempts
    assert resp.json()["error"]["attempts"][-1]["reason"] == "attempt_cap_reached"


def test_a_timeout_is_retried_then_the_chain_moves_on(client, mock):
    mock.script("to-a", [], default={"hang": True, "hang_ms": 5000})
    resp = client.post("/v1/chat/completions", json=chat("timeout"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "timeout/openai/to-2"
    # The breaker opens on the 4th timeout, which is also the last retry.
    assert sent_to(mock, "to-a", "to-b") == ["to-a"] * 4 + ["to-b"]


def test_connection_failures_are_retried_then_the_chain_moves_on(client, mock, envoy):
    resp = client.post("/v1/chat/completions", json=chat("refused"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "refused/openai/refused-2"
    retries = [e for e in envoy.events() if e["event"] == "retry" and e["group"] == "refused"]
    assert [e["reason"] for e in retries] == ["connection_failure"] * 3


def test_garbage_from_a_provider_is_a_failure_not_a_success(client, mock):
    mock.script("garbage-a", [{"garbage": True, "status": 502}], default={"drop": "before_headers"})
    resp = client.post("/v1/chat/completions", json=chat("garbage"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "garbage/openai/garbage-2"


def test_breaker_opens_then_exactly_one_request_probes_and_success_closes_it(client, mock, envoy, httpx_client_factory):
    # Four failures (1 + 3 retries) within the window: more than allowed_fails (3).
    mock.script("brk-a", [], default={"error": "server"})
    assert client.post("/v1/chat/completions", json=chat("breaker")).status_code == 200
    assert len(mock.requests("brk-a")) == 4
    opened = [e for e in envoy.events() if e["event"] == "breaker_opened" and e["deployment"] == "breaker/openai/brk-1"]
    assert len(opened) == 1
    # Open: skipped without a request, on every worker.
    for _ in range(4):
        assert client.post("/v1/chat/completions", json=chat("breaker")).status_code == 200
    assert len(mock.requests("brk-a")) == 4

    # After cooldown_time (2 s) the breaker is half-open. A slow, healthy primary lets
    # the concurrent requests overlap the probe: exactly one may reach it.
    time.sleep(2.2)
    mock.script("brk-a", [], default={"delay_ms": 600})  # under request_timeout (1 s)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(httpx_client_factory().post, "/v1/chat/completions", json=chat("breaker")) for _ in range(6)]
        results = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in results)
    assert len(mock.requests("brk-a")) == 5  # the one probe
    served_by = sorted(r.headers["x-detour-deployment"] for r in results)
    assert served_by.count("breaker/openai/brk-1") == 1

    # The probe succeeded: closed, with a recovery event; the primary serves again.
    assert any(e["event"] == "recovery" and e["deployment"] == "breaker/openai/brk-1" for e in envoy.events())
    mock.script("brk-a", [], default={})
    resp = client.post("/v1/chat/completions", json=chat("breaker"))
    assert resp.headers["x-detour-deployment"] == "breaker/openai/brk-1"


@pytest.fixture
def httpx_client_factory(envoy):
    import httpx

    clients = []

    def make():
        c = httpx.Client(base_url=envoy.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
