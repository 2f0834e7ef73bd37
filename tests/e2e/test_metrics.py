"""Metrics reach Envoy's /stats/prometheus with labels."""

import re
import time
import urllib.request

from conftest import chat


def prometheus(envoy) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats/prometheus", timeout=10) as resp:
        return resp.read().decode()


def value(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_requests_fallbacks_tokens_latency_and_breakers_are_exported(client, mock, envoy):
    for _ in range(3):
        assert client.post("/v1/chat/completions", json=chat("metrics")).status_code == 200
    mock.script("metrics-a", [{"error": "auth"}])
    assert client.post("/v1/chat/completions", json=chat("metrics")).status_code == 200
    text = prometheus(envoy)
    first, second = "metrics/openai/metrics-1", "metrics/openai/metrics-2"
    assert value(text, "detour_requests_total", group="metrics", deployment=first, outcome="success") == 3
    assert value(text, "detour_requests_total", group="metrics", deployment=second, outcome="success") == 1
    assert value(text, "detour_fallbacks_total", group="metrics", reason="failure") == 1
    # The mock reports 10 input and 5 output tokens per answer.
    assert value(text, "gen_ai_client_token_usage_total", gen_ai_request_model="openai/metrics-1", gen_ai_token_type="input") == 30
    assert value(text, "gen_ai_client_token_usage_total", gen_ai_request_model="openai/metrics-1", gen_ai_token_type="output") == 15
    # Histograms reach /stats at Envoy's stats flush (every 5 s), gauges at detour's next
    # state publication (every 5 s): wait for both, boundedly.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = prometheus(envoy)
        latency = value(text, "gen_ai_client_operation_duration_milliseconds_count", group="metrics", deployment=first)
        breaker = value(text, "detour_breaker_state", deployment=first)
        if latency and breaker is not None:
            break
        time.sleep(0.5)
    assert latency >= 3
    assert breaker == 0
    # No key material in the metrics.
    assert "sk-detour-e2e-secret" not in text
