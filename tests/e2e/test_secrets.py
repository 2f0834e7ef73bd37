"""Secrets and trust: the provider key appears in no output, client credentials never
reach a provider, clients cannot pick the upstream, the admin API wants its token."""

import httpx

from conftest import ADMIN_TOKEN, E2E_KEY, chat


def test_the_provider_key_appears_in_no_output(client, mock, proxy):
    outputs = []
    # Successes, a fallback, an all-failed error listing every attempt, a bad request.
    outputs.append(client.post("/v1/chat/completions", json=chat("basic")).text)
    mock.script("af-a", [], default={"error": "server"})
    mock.script("af-b", [], default={"error": "auth"})
    failed = client.post("/v1/chat/completions", json=chat("allfail"))
    outputs.append(failed.text + str(failed.headers))
    outputs.append(client.post("/v1/chat/completions", content=b"{").text)
    # Status, metrics, the log (events included), what the webhook received.
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    outputs.append(httpx.get(f"{proxy.url}/detour/admin/status", headers=auth, timeout=10).text)
    outputs.append(httpx.get(f"http://127.0.0.1:{proxy.admin_port}/stats/prometheus", timeout=10).text)
    outputs.append(proxy.log_text())
    outputs.append(str(mock.requests("webhook-sink")))
    for text in outputs:
        assert E2E_KEY not in text
    # The key does reach the provider, and only there.
    assert mock.requests("basic-a")[-1]["headers"]["authorization"] == f"Bearer {E2E_KEY}"


def test_clients_cannot_steer_the_upstream(client, mock):
    before = len(mock.requests("basic-a"))
    resp = client.post(
        "/v1/chat/completions",
        json=chat("basic"),
        headers={"x-detour-cluster": "detour_http_127.0.0.1_1", "x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-retry-on": "5xx"},
    )
    assert resp.status_code == 200
    assert len(mock.requests("basic-a")) == before + 1
    sent = mock.requests("basic-a")[-1]["headers"]
    assert not any(k.startswith("x-detour") or k.startswith("x-envoy") for k in sent)
    resp = client.post("/v1/chat/completions", json=chat("basic", base_url="http://evil.example"))
    assert resp.status_code == 400


def test_the_admin_api_wants_its_token(proxy):
    for headers in ({}, {"authorization": "Bearer not-the-token"}, {"authorization": f"Basic {ADMIN_TOKEN}"}):
        resp = httpx.get(f"{proxy.url}/detour/admin/status", headers=headers, timeout=10)
        assert resp.status_code == 401
        assert "deployment" not in resp.text
    ok = httpx.get(f"{proxy.url}/detour/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["halted"] is False
