"""Streaming: `"stream": true` streams chunk by chunk from the first deployment that
answers; a failure before the first byte still falls back (the fallback's SSE arrives
as one burst of valid SSE: design B's documented limit)."""

import time

import openai

from conftest import chat


def read_events(response) -> list[tuple[float, str]]:
    """(arrival time, data) of each SSE event as the client receives it."""
    events = []
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            for line in event.splitlines():
                if line.startswith("data: "):
                    events.append((time.monotonic(), line[len("data: "):]))
    return events


def test_a_stream_reaches_the_client_chunk_by_chunk(client, mock):
    mock.script("stream-a", [{"chunks": ["one ", "two ", "three ", "four"], "chunk_delay_ms": 300}])
    with client.stream("POST", "/v1/chat/completions", json=chat("stream", stream=True)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-detour-deployment"] == "stream/openai/stream-1"
        events = read_events(resp)
    assert events[-1][1] == "[DONE]"
    # The mock waits 300 ms between content chunks: had detour buffered the stream, every
    # event would arrive at once. Streamed, the first and last content chunks are at least
    # 3 × 300 ms apart.
    content_times = [t for t, data in events if '"content"' in data]
    assert len(content_times) >= 4
    assert content_times[-1] - content_times[0] >= 0.85


def test_openai_sdk_streams_through_detour(envoy, mock):
    sdk = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key="unused", max_retries=0)
    stream = sdk.chat.completions.create(model="stream", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "hello from stream-a"


def test_a_stream_whose_first_deployment_fails_before_the_first_byte_falls_back(envoy, mock):
    mock.script("sfb-a", [{"error": "rate_limit"}])
    mock.script("sfb-b", [{"chunks": ["fall", "back"]}])
    sdk = openai.OpenAI(base_url=f"{envoy.url}/v1", api_key="unused", max_retries=0)
    stream = sdk.chat.completions.create(model="streamfb", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "fallback"
    assert [r["deployment"] for r in mock.requests() if r["deployment"].startswith("sfb-")] == ["sfb-a", "sfb-b"]
    assert mock.requests("sfb-b")[0]["body"]["stream"] is True
