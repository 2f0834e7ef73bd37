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


def is_probe(request: dict) -> bool:
    body = request["body"] or {}
    return body.get("max_tokens") == 1 and body.get("messages") == [{"role": "user", "content": "ping"}]


def served_by(proxy) -> str:
    resp = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat("story"), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-detour-deployment"]


def test_primary_fails_falls_back_heals_and_is_used_again(proxy, mock):
    primary, backup = "story/openai/primary-model", "story/openai/backup-model"
    mock.script("rec-primary", [], default={"error": "unavailable"})
    assert served_by(proxy) == backup  # 4 failures open the breaker, then the backup
    assert served_by(proxy) == backup  # open: skipped without a request
    # Four real attempts; the health check may already have probed it (and failed).
    assert len([r for r in mock.requests("rec-primary") if not is_probe(r)]) == 4

    mock.script("rec-primary", [], default={})  # healed
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if any(e["event"] == "recovery" for e in proxy.events()):
            break
        time.sleep(0.2)
    assert served_by(proxy) == primary

    # The probe was a one-token completion, sent by detour, not a user's request.
    assert any(is_probe(r) for r in mock.requests("rec-primary"))

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


def test_the_report_shows_the_story(proxy, workdir):
    """`detour report` turns what the host recorded into the seed's evidence: Envoy's log
    for Envoy, the event file for `detour serve` (both carry the same events)."""
    import subprocess

    from harness import detour_binary

    source = getattr(proxy, "events_file", proxy.log)
    out = workdir / f"evidence-{proxy.name}"
    subprocess.run([str(detour_binary()), "report", str(source), "--out", str(out)], check=True, timeout=60)
    recovery = next((out / "recovery").glob("*_recovery_history.md")).read_text()
    fallback = next((out / "fallback").glob("*_fallback_history.md")).read_text()
    assert "story/openai/primary-model" in recovery and "an active health check" in recovery
    assert "story/openai/backup-model" in fallback
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 1
    # Every routed request is recorded, so the page can draw the fallback rate with the
    # seed's 5 % and 10 % lines.
    requests = [e for e in proxy.events() if e["event"] == "request"]
    assert [r["outcome"] for r in requests[:3]] == ["success"] * 3
    assert requests[0]["fallbacks"] == 1 and requests[0]["deployment"] == "story/openai/backup-model"
    assert 'data-threshold="5 % warn"' in html and 'data-threshold="10 % alert"' in html

