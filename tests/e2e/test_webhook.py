"""Events reach the configured webhook in batches, without keys or prompts."""

import time

from conftest import E2E_KEY, chat


def test_events_are_posted_to_the_webhook_in_batches(client, mock):
    mock.script("recover-a", [{"error": "unavailable"}])
    secret_prompt = "my secret prompt 41"
    assert client.post("/v1/chat/completions", json=chat("recover", secret_prompt)).status_code == 200
    deadline = time.monotonic() + 10
    posted = []
    while time.monotonic() < deadline:
        posted = [r for r in mock.requests("webhook-sink") if r["method"] == "POST"]
        events = [e for r in posted for e in (r["body"] or {}).get("events", [])]
        if any(e["event"] == "retry" and e["deployment"] == "recover/openai/recover-1" for e in events):
            break
        time.sleep(0.2)
    assert posted, "no webhook post"
    assert posted[0]["path"] == "/webhook-sink/hooks/T000/B000/secret-token"
    assert posted[0]["body"]["source"] == "detour"
    assert any(e["event"] == "retry" and e["deployment"] == "recover/openai/recover-1" for e in events)
    for r in posted:
        assert len(r["body"]["events"]) <= 20
        assert E2E_KEY not in r["raw_body"] and secret_prompt not in r["raw_body"]
