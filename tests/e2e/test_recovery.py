"""The recovery story end to end: the primary fails, traffic falls back, the primary
heals, the health check sees it, the next request goes to the primary, and the events
show each step in order."""

import time

import httpx
import pytest

from conftest import chat, render_config


@pytest.fixture(scope="module")
def proxy(workdir, mock, host_class):
    (workdir / "recovery").mkdir()
    proxy = host_class(workdir / "recovery", render_config("recovery.yaml", mock)).start()
    yield proxy
    proxy.stop()


def served_by(proxy) -> str:
    resp = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("story"), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-detour-deployment"]


def test_primary_fails_falls_back_heals_and_is_used_again(proxy, mock):
    primary, backup = "story/openai/primary-model", "story/openai/backup-model"
    mock.script("rec-primary", [], default={"error": "unavailable"})
    assert served_by(proxy) == backup  # 4 failures open the breaker, then the backup
    assert served_by(proxy) == backup  # open: skipped without a request
    assert len(mock.requests("rec-primary")) == 4

    mock.script("rec-primary", [], default={})  # healed
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(e["event"] == "recovery" for e in proxy.events()):
            break
        time.sleep(0.2)
    assert served_by(proxy) == primary

    # The probe was a one-token completion, sent by detour, not a user's request.
    probes = [r for r in mock.requests("rec-primary")[4:] if r["body"] and r["body"].get("max_tokens") == 1]
    assert probes and probes[0]["body"]["messages"] == [{"role": "user", "content": "ping"}]

    story = [
        (e["event"], e.get("deployment") or f'{e.get("from")}->{e.get("to")}', e.get("via"))
        for e in proxy.events()
        if e["event"] in ("breaker_opened", "fallback", "recovery")
    ]
    assert story[:3] == [
        ("breaker_opened", primary, None),
        ("fallback", f"{primary}->{backup}", None),
        ("fallback", f"{primary}->{backup}", None),
    ]
    assert story[3] == ("recovery", primary, "health_check")
    times = [e["ts"] for e in proxy.events() if e["event"] in ("breaker_opened", "recovery")]
    assert times == sorted(times)
