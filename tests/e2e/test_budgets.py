"""Budgets, RPM/TPM and the human gate, on each host (two workers)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import openai
import pytest

from conftest import chat, render_config

ADMIN_TOKEN = "detour-admin-token-for-e2e-0001"
NANOS = 1_000_000_000
# The mock's default usage (10 prompt, 5 completion) at $0.0001 / $0.0002 per token.
ANSWER_NANOS = 10 * 100_000 + 5 * 200_000


def start(workdir, mock, name: str, host_class):
    (workdir / name).mkdir()
    proxy = host_class(workdir / name, render_config(f"{name}.yaml", mock), env={"DETOUR_ADMIN_TOKEN": ADMIN_TOKEN})
    return proxy.start()


@pytest.fixture(scope="module")
def proxy(workdir, mock, host_class):
    proxy = start(workdir, mock, "budgets", host_class)
    yield proxy
    proxy.stop()


def status(proxy) -> dict:
    resp = httpx.get(f"{proxy.url}/detour/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def budget_of(proxy, scope: str) -> dict:
    return next(b for b in status(proxy)["budgets"] if b["scope"] == scope)


def test_300_concurrent_requests_never_spend_past_the_budget(proxy, mock):
    # Slow answers keep many reservations in flight at once.
    mock.script("capped-a", [], default={"delay_ms": 300})
    # The prompt is estimated at about 13 tokens, over the 10 the mock reports, and
    # max_tokens 5 equals its 5 completion tokens: estimates cover costs, so the
    # documented overshoot bound (cost beyond estimate of the answers in flight) is 0 here.
    body = chat("capped", "hello there, how are you today?", max_tokens=5)

    async def one(client):
        return await client.post("/v1/chat/completions", json=body)

    async def all_at_once():
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(300)))

    responses = asyncio.run(all_at_once())
    statuses = [r.status_code for r in responses]
    served = statuses.count(200)
    refused = [r for r in responses if r.status_code == 402]
    assert served + len(refused) == 300, sorted(set(statuses))
    assert refused and refused[0].json()["error"]["code"] == "budget_exceeded"
    # Every answer the client got is one the provider billed, and nothing else was sent.
    assert len(mock.requests("capped-a")) == served
    account = budget_of(proxy, "group/capped")
    # The recorded spend is exactly the sum of the usages the mock reported.
    assert account["spent_nanos"] == served * ANSWER_NANOS
    assert account["reserved_nanos"] == 0
    limit = int(0.2 * NANOS)
    assert account["spent_nanos"] <= limit
    # And the budget was used, not wasted: all 300 arrive at once, so every request that
    # found room for its estimate (about 13 prompt tokens + 5 completion tokens, under
    # $0.0025) was served; the rest were refused while those reservations were in flight.
    assert served >= limit // (15 * 100_000 + 5 * 200_000)


def test_a_streamed_answer_is_counted_and_the_usage_chunk_stays_hidden(proxy, mock):
    mock.script("metered-a", [{"chunks": ["a", "b"], "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}])
    before = budget_of(proxy, "group/metered")["spent_nanos"]
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=chat("metered", stream=True)) as resp:
            assert resp.status_code == 200
            text = "".join(resp.iter_text())
    # detour asked the provider for usage on the client's behalf ...
    assert mock.requests("metered-a")[-1]["body"]["stream_options"] == {"include_usage": True}
    # ... counted it ...
    assert budget_of(proxy, "group/metered")["spent_nanos"] - before == 100 * 100_000 + 50 * 200_000
    # ... and did not show the client a usage chunk it did not ask for.
    assert "prompt_tokens" not in text and "data: [DONE]" in text


def test_a_client_that_asks_for_stream_usage_gets_it(proxy, mock):
    sdk = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    stream = sdk.chat.completions.create(
        model="metered", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usages) == 1 and usages[0].prompt_tokens == 10


def test_thresholds_fire_once_each_and_100_percent_stops_the_scope(proxy, mock):
    # $0.01 budget; output tokens at $0.000001: 8,200 tokens = 82 %, then 1,000 = +10 %.
    mock.script(
        "alerts-a",
        [
            {"usage": {"prompt_tokens": 1, "completion_tokens": 8200, "total_tokens": 8201}},
            {"usage": {"prompt_tokens": 1, "completion_tokens": 1000, "total_tokens": 1001}},
            # Two answers in flight together, admitted at 92 %, settle to 102 % and 112 %.
            {"delay_ms": 500, "usage": {"prompt_tokens": 1, "completion_tokens": 1000, "total_tokens": 1001}},
            {"delay_ms": 500, "usage": {"prompt_tokens": 1, "completion_tokens": 1000, "total_tokens": 1001}},
        ],
    )
    body = chat("alerts", max_tokens=1)
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        both = list(pool.map(lambda _: httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30), range(2)))
    assert [r.status_code for r in both] == [200, 200]
    # At 112 % the scope is stopped: the next request is refused without reaching the mock.
    refused = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert len(mock.requests("alerts-a")) == 4
    alerts = [e for e in proxy.events() if e["event"] == "budget_alert" and e["scope"] == "group/alerts"]
    assert [a["percent"] for a in alerts] == [80, 90, 100, 110]
    assert budget_of(proxy, "group/alerts")["alerts_fired"] == [80, 90, 100, 110]
    # A group budget does not halt (only the total, or a scope configured to).
    assert status(proxy)["halted"] is False


def test_a_deployment_at_its_rpm_is_skipped_without_the_provider_seeing_it(proxy, mock):
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        served = [client.post("/v1/chat/completions", json=chat("rpm")).headers["x-detour-deployment"] for _ in range(4)]
    assert served == ["rpm/openai/rpm-1"] * 2 + ["rpm/openai/rpm-2"] * 2
    assert len(mock.requests("rpm-a")) == 2


def test_when_the_whole_chain_is_at_its_rpm_the_client_gets_429_with_retry_after(proxy, mock):
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=chat("rpm-only")).status_code == 200
        limited = client.post("/v1/chat/completions", json=chat("rpm-only"))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 120
    assert len(mock.requests("rpmo-a")) == 1


def test_the_admin_api_refuses_a_missing_or_wrong_token_and_says_nothing(proxy):
    for headers in ({}, {"authorization": "Bearer wrong-token"}, {"authorization": ADMIN_TOKEN}):
        resp = httpx.get(f"{proxy.url}/detour/admin/status", headers=headers, timeout=10)
        assert resp.status_code == 401
        assert "budget" not in resp.text and "capped" not in resp.text
    assert httpx.post(f"{proxy.url}/detour/admin/halt", timeout=10).status_code == 401
    assert status(proxy)["halted"] is False


def test_110_percent_of_a_halting_scope_stops_everything_until_a_human_resumes(workdir, mock, host_class):
    proxy = start(workdir, mock, "halt", host_class)
    try:
        mock.script(
            "halt-work",
            [
                {"usage": {"prompt_tokens": 1, "completion_tokens": 9500, "total_tokens": 9501}},
                {"delay_ms": 500, "usage": {"prompt_tokens": 1, "completion_tokens": 1000, "total_tokens": 1001}},
                {"delay_ms": 500, "usage": {"prompt_tokens": 1, "completion_tokens": 1000, "total_tokens": 1001}},
            ],
        )
        tagged = {"x-detour-stage": "Fix"}
        body = chat(max_tokens=1)
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=tagged, timeout=30).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            both = list(pool.map(lambda _: httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=tagged, timeout=30), range(2)))
        assert [r.status_code for r in both] == [200, 200]  # 95 % → 105 % → 115 %

        # Halted: every request, even one no budget covers, gets a clear 402.
        blocked = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("other"), timeout=30)
        assert blocked.status_code == 402
        assert blocked.json()["error"]["code"] == "budget_halted"
        assert mock.requests("halt-other") == []
        assert status(proxy)["halted"] is True
        assert [e["scope"] for e in proxy.events() if e["event"] == "halt"] == ["tag/Fix"]

        # A human resumes: traffic flows again (the Fix tag itself stays at its 100 % stop).
        resumed = httpx.post(f"{proxy.url}/detour/admin/resume", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        assert resumed.status_code == 200 and resumed.json()["was_halted"] is True
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("other"), timeout=30).status_code == 200
        again = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=tagged, timeout=30)
        assert again.status_code == 402 and again.json()["error"]["code"] == "budget_exceeded"

        # A manual halt works the same way.
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.post(f"{proxy.url}/detour/admin/halt", headers=auth, timeout=10).status_code == 200
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("other"), timeout=30).status_code == 402
        assert httpx.post(f"{proxy.url}/detour/admin/resume", headers=auth, timeout=10).status_code == 200
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("other"), timeout=30).status_code == 200
        assert [e["by"] for e in proxy.events() if e["event"] == "resume"] == ["admin", "admin"]
    finally:
        proxy.stop()


def test_budget_gauges_reach_prometheus(proxy):
    import re
    import time

    expected = budget_of(proxy, "group/capped")["spent_nanos"] // 1000
    deadline = time.monotonic() + 15
    seen = None
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{proxy.admin_port}/stats/prometheus", timeout=10).text
        match = re.search(r'^detour_budget_spent_microdollars\{scope="group/capped"\} (\d+)$', text, re.M)
        seen = int(match.group(1)) if match else None
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected
    assert re.search(r'^detour_budget_limit_microdollars\{scope="group/capped"\} 200000$', text, re.M)
