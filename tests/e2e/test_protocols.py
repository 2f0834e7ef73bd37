"""Native provider protocols (issue 11), on each host: Anthropic Messages and OpenAI
Responses clients beside Chat Completions ones, and `anthropic/`, `gemini/` and
OpenAI-compatible deployments in one chain, streaming included.

The clients are the official SDKs (`anthropic`, `openai`); the deployments are the mock
provider answering in each protocol's own shapes. Every scenario checks what detour sent
upstream (order, counts, paths, headers, translated bodies) in the mock's request log, and
what the client got back in its own protocol.
"""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import openai
import pytest
import yaml

from conftest import ADMIN_TOKEN, E2E_KEY, render_config

# What clients send as their own key: it must never reach a provider.
CLIENT_KEY = "sk-client-key-never-forwarded-91c2"
NANOS_PER_DOLLAR = 1_000_000_000

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_SCHEMA},
}
ANTHROPIC_WEATHER_TOOL = {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA}
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.fixture(scope="module")
def proxy(workdir, mock, host_class):
    """The host under test with protocols.yaml (module-scoped: started once per host)."""
    (workdir / "protocols").mkdir()
    started = host_class(
        workdir / "protocols",
        render_config("protocols.yaml", mock),
        env={"DETOUR_E2E_KEY": E2E_KEY, "DETOUR_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def claude(proxy):
    """The Anthropic SDK pointed at detour, with its own key in both places clients put it."""
    return anthropic.Anthropic(
        base_url=proxy.url, api_key=CLIENT_KEY, default_headers={"x-api-key": CLIENT_KEY}, max_retries=0, timeout=30
    )


@pytest.fixture
def gpt(proxy):
    """The OpenAI SDK pointed at detour."""
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def text_of(content) -> str:
    """The text of a message's content: a string, or text parts/blocks (`{"type": "text"}`)."""
    if isinstance(content, str):
        return content
    assert isinstance(content, list), content
    return "".join(part.get("text", "") for part in content if part.get("type") in ("text", "input_text"))


def only(requests: list[dict]) -> dict:
    assert len(requests) == 1, [r["path"] for r in requests]
    return requests[0]


def deployments(mock, prefix: str) -> list[str]:
    """The deployments whose names start with `prefix` that got requests, in arrival order."""
    return [r["deployment"] for r in mock.requests() if r["deployment"].startswith(prefix)]


def assert_anthropic_upstream(req: dict, deployment: str, model: str = "claude-opus-4-5") -> None:
    """An attempt sent in Anthropic's protocol, with the deployment's key and nothing of the client's."""
    assert req["protocol"] == "anthropic", req["path"]
    assert req["path"] == f"/{deployment}/v1/messages"
    assert req["body"]["model"] == model
    headers = req["headers"]
    assert headers["x-api-key"] == E2E_KEY
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", headers.get("anthropic-version", "")), headers.get("anthropic-version")
    assert_no_client_credentials(headers)


def assert_gemini_upstream(req: dict, deployment: str, model: str = "gemini-3-pro-preview", stream: bool = False) -> None:
    """An attempt sent in Gemini's protocol: model and method in the path, key in x-goog-api-key."""
    assert req["protocol"] == "gemini", req["path"]
    if stream:
        assert req["path"] == f"/{deployment}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    else:
        assert req["path"] == f"/{deployment}/v1beta/models/{model}:generateContent"
    assert req["headers"]["x-goog-api-key"] == E2E_KEY
    assert "key=" not in req["query"], "the key goes in a header, never in the URL"
    assert_no_client_credentials(req["headers"])


def assert_openai_upstream(req: dict, deployment: str, model: str = "local-model", key: str | None = None) -> None:
    assert req["protocol"] == "openai", req["path"]
    assert req["path"] == f"/{deployment}/v1/chat/completions"
    assert req["body"]["model"] == model
    if key is None:
        assert "authorization" not in req["headers"]
    else:
        assert req["headers"]["authorization"] == f"Bearer {key}"
    assert_no_client_credentials(req["headers"])


def assert_no_client_credentials(headers: dict) -> None:
    assert not any(CLIENT_KEY in value for value in headers.values()), headers
    assert not any(name.startswith("x-detour-") for name in headers), headers
    if "authorization" in headers:
        assert headers["authorization"] == f"Bearer {E2E_KEY}"
    if "x-api-key" in headers:
        assert headers["x-api-key"] == E2E_KEY


def max_tokens_of(body: dict) -> int | None:
    """OpenAI-compatible bodies may say max_tokens or max_completion_tokens."""
    return body.get("max_tokens", body.get("max_completion_tokens"))


def attempts_of(body: dict) -> list[dict]:
    """The `attempts` list of detour's all-failed error, in OpenAI's shape (`error.attempts`)
    or Anthropic's (`error.attempts` inside `{"type": "error", "error": {...}}`)."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    attempts = error.get("attempts", body.get("attempts"))
    assert isinstance(attempts, list), body
    return attempts


def admin_status(proxy) -> dict:
    resp = httpx.get(f"{proxy.url}/detour/admin/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def spent(proxy, group: str) -> int:
    account = next(b for b in admin_status(proxy)["budgets"] if b["scope"] == f"group/{group}")
    assert account["reserved_nanos"] == 0
    return account["spent_nanos"]


def nanos(dollars_per_token: float) -> int:
    return round(dollars_per_token * NANOS_PER_DOLLAR)


def read_sse(resp) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event of an httpx streaming response."""
    events, buffer = [], ""
    for text in resp.iter_text():
        buffer += text.replace("\r\n", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            name, data = None, []
            for line in block.split("\n"):
                if line.startswith("event:"):
                    name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data.append(line[len("data:") :].strip())
            if name or data:
                events.append((name, "\n".join(data)))
    return events


# --------------------------------------------------------------------------
# Anthropic client, anthropic deployment
# --------------------------------------------------------------------------


def test_anthropic_sdk_to_an_anthropic_deployment(claude, mock):
    mock.script("pa-basic", [{"content": "Hi there.", "usage": {"prompt_tokens": 12, "completion_tokens": 3}}])
    sent = {
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-1"},
    }
    raw = claude.messages.with_raw_response.create(model="anthropic-basic", **sent)
    message = raw.parse()
    assert raw.headers["x-detour-deployment"] == "pa-basic"
    assert [block.text for block in message.content] == ["Hi there."]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 12, 3)

    req = only(mock.requests("pa-basic"))
    assert_anthropic_upstream(req, "pa-basic")
    # Same protocol: the body goes through as the client sent it, only `model` replaced.
    assert req["body"] == {**sent, "model": "claude-opus-4-5"}
    assert "authorization" not in req["headers"]


def test_anthropic_sdk_streams_from_an_anthropic_deployment(claude, mock):
    mock.script("pa-stream", [{"chunks": ["Hel", "lo", " there"], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}])
    with claude.messages.stream(model="anthropic-stream", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there"
    assert [block.text for block in final.content] == ["Hello there"]
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 3)

    req = only(mock.requests("pa-stream"))
    assert_anthropic_upstream(req, "pa-stream")
    assert req["body"]["stream"] is True
    assert req["body"]["messages"] == [{"role": "user", "content": "hi"}]


# --------------------------------------------------------------------------
# Fallback across protocols
# --------------------------------------------------------------------------


def test_an_anthropic_request_falls_back_along_the_seed_chain_across_protocols(claude, mock):
    mock.script("p-opus", [{"error": "overloaded"}])
    mock.script("p-sonnet", [{"error": "overloaded"}])
    mock.script("p-gpro", [{"error": "rate_limit"}])
    mock.script("p-gflash", [{"error": "unavailable"}])
    mock.script("p-local", [{"content": "served by local", "usage": {"prompt_tokens": 7, "completion_tokens": 4}}])

    raw = claude.messages.with_raw_response.create(
        model="claude-opus",
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    message = raw.parse()
    assert [block.text for block in message.content] == ["served by local"]
    assert (message.role, message.stop_reason, message.usage.output_tokens) == ("assistant", "end_turn", 4)
    assert raw.headers["x-detour-deployment"] == "p-local"
    assert raw.headers["x-detour-attempts"] == "5"

    # One attempt each, in the chain's order, each in its deployment's own protocol.
    assert deployments(mock, "p-") == ["p-opus", "p-sonnet", "p-gpro", "p-gflash", "p-local"]
    assert_anthropic_upstream(only(mock.requests("p-opus")), "p-opus")
    assert_anthropic_upstream(only(mock.requests("p-sonnet")), "p-sonnet", model="claude-sonnet-4-5")
    # The client's beta header goes with its untouched body to both Anthropic deployments
    # (the first through Envoy's router, the second dispatched), and nowhere else.
    beta = [(name, r["headers"].get("anthropic-beta")) for name in ("p-opus", "p-sonnet", "p-gpro", "p-gflash", "p-local") for r in mock.requests(name)]
    assert beta == [
        ("p-opus", "context-1m-2025-08-07"),
        ("p-sonnet", "context-1m-2025-08-07"),
        ("p-gpro", None),
        ("p-gflash", None),
        ("p-local", None),
    ]
    gpro = only(mock.requests("p-gpro"))
    assert_gemini_upstream(gpro, "p-gpro")
    assert gpro["body"]["systemInstruction"]["parts"][0]["text"] == "You are terse."
    assert [c["role"] for c in gpro["body"]["contents"]] == ["user"]
    assert gpro["body"]["generationConfig"]["maxOutputTokens"] == 100
    assert_gemini_upstream(only(mock.requests("p-gflash")), "p-gflash", model="gemini-2.5-flash")
    local = only(mock.requests("p-local"))
    assert_openai_upstream(local, "p-local")
    assert [(m["role"], text_of(m["content"])) for m in local["body"]["messages"]] == [
        ("system", "You are terse."),
        ("user", "hi"),
    ]
    assert max_tokens_of(local["body"]) == 100
    assert local["body"].get("stream") in (None, False)


def test_a_streamed_anthropic_request_falls_back_to_openai_and_arrives_as_anthropic_sse(claude, mock):
    mock.script("ps-opus", [{"error": "overloaded"}])
    mock.script("ps-gemini", [{"error": "rate_limit"}])
    mock.script("ps-local", [{"chunks": ["served ", "by ", "local"], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}])

    kinds = []
    with claude.messages.stream(model="stream-opus", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    # The SDK parsed a complete Messages stream: it starts and ends as Anthropic's grammar says.
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert [block.text for block in final.content] == ["served by local"]
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 3)

    assert deployments(mock, "ps-") == ["ps-opus", "ps-gemini", "ps-local"]
    opus = only(mock.requests("ps-opus"))
    assert_anthropic_upstream(opus, "ps-opus")
    assert opus["body"]["stream"] is True
    assert_gemini_upstream(only(mock.requests("ps-gemini")), "ps-gemini", stream=True)
    local = only(mock.requests("ps-local"))
    assert_openai_upstream(local, "ps-local")
    assert local["body"]["stream"] is True
    # detour needs the provider's usage to price the answer: it asks for it.
    assert local["body"]["stream_options"] == {"include_usage": True}


# --------------------------------------------------------------------------
# OpenAI Chat Completions client, native deployments
# --------------------------------------------------------------------------

CHAT_TARGETS = [("chat-anthropic", "pc-anthropic", "anthropic"), ("chat-gemini", "pc-gemini", "gemini")]


def chat_request(**extra) -> dict:
    return {
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 200,
        "temperature": 0.2,
        "tools": [OPENAI_WEATHER_TOOL],
        **extra,
    }


def assert_translated_chat_request(req: dict, deployment: str, protocol: str, stream: bool) -> None:
    """The Chat request above, as the deployment's own protocol says it."""
    body = req["body"]
    if protocol == "anthropic":
        assert_anthropic_upstream(req, deployment)
        assert text_of(body["system"]) == "You are terse."
        assert [(m["role"], text_of(m["content"])) for m in body["messages"]] == [("user", "Weather in Paris?")]
        assert body["max_tokens"] == 200
        assert body["temperature"] == 0.2
        assert [(t["name"], t["description"], t["input_schema"]) for t in body["tools"]] == [
            ("get_weather", "Current weather in a city", WEATHER_SCHEMA)
        ]
        assert body.get("stream", False) is stream
    else:
        assert_gemini_upstream(req, deployment, stream=stream)
        assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]
        assert body["generationConfig"]["maxOutputTokens"] == 200
        assert body["generationConfig"]["temperature"] == 0.2
        [declaration] = [d for tool in body["tools"] for d in tool.get("functionDeclarations", [])]
        assert (declaration["name"], declaration["description"]) == ("get_weather", "Current weather in a city")
        # Gemini takes the schema as `parameters` (its OpenAPI subset) or `parametersJsonSchema`.
        schema = declaration.get("parametersJsonSchema", declaration.get("parameters"))
        assert schema["properties"]["city"]["type"].lower() == "string"
        assert schema["required"] == ["city"]
        assert "model" not in body and "stream" not in body


@pytest.mark.parametrize("group,deployment,protocol", CHAT_TARGETS, ids=["anthropic", "gemini"])
def test_openai_chat_client_gets_a_tool_call_from_a_native_deployment(gpt, mock, group, deployment, protocol):
    usage = {"prompt_tokens": 30, "completion_tokens": 12}
    mock.script(deployment, [{"content": "Let me look.", "tool_call": WEATHER_CALL, "usage": usage}])
    completion = gpt.chat.completions.create(model=group, **chat_request())
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Let me look."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert choice.finish_reason == "tool_calls"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 12)
    assert completion.object == "chat.completion"

    assert_translated_chat_request(mock.requests(deployment)[-1], deployment, protocol, stream=False)


@pytest.mark.parametrize("group,deployment,protocol", CHAT_TARGETS, ids=["anthropic", "gemini"])
def test_openai_chat_client_streams_text_and_tool_call_deltas_from_a_native_deployment(gpt, mock, group, deployment, protocol):
    mock.script(deployment, [{"chunks": ["Let ", "me ", "look."], "tool_call": WEATHER_CALL}])
    stream = gpt.chat.completions.create(model=group, stream=True, **chat_request())
    text, calls, finish = "", {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = entry["id"] or call.id
            if call.function:
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me look."
    [call] = calls.values()
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert finish == "tool_calls"

    assert_translated_chat_request(mock.requests(deployment)[-1], deployment, protocol, stream=True)


# --------------------------------------------------------------------------
# OpenAI Responses client
# --------------------------------------------------------------------------

RESPONSES_TARGETS = [("responses-local", "pr-local", "openai"), ("responses-anthropic", "pr-anthropic", "anthropic")]


def assert_translated_responses_request(req: dict, deployment: str, protocol: str, stream: bool) -> None:
    body = req["body"]
    if protocol == "openai":
        # Responses goes to OpenAI-compatible deployments as Chat Completions.
        assert_openai_upstream(req, deployment, key=E2E_KEY)
        assert [(m["role"], text_of(m["content"])) for m in body["messages"]] == [
            (body["messages"][0]["role"], "Be brief."),
            ("user", "Say hi"),
        ]
        assert body["messages"][0]["role"] in ("system", "developer")
        assert max_tokens_of(body) == 50
    else:
        assert_anthropic_upstream(req, deployment)
        assert text_of(body["system"]) == "Be brief."
        assert [(m["role"], text_of(m["content"])) for m in body["messages"]] == [("user", "Say hi")]
        assert body["max_tokens"] == 50
    assert body.get("stream", False) is stream


@pytest.mark.parametrize("group,deployment,protocol", RESPONSES_TARGETS, ids=["openai", "anthropic"])
def test_responses_client(gpt, mock, group, deployment, protocol):
    mock.script(deployment, [{"content": "Hello from the deployment.", "usage": {"prompt_tokens": 11, "completion_tokens": 6}}])
    response = gpt.responses.create(model=group, input="Say hi", instructions="Be brief.", max_output_tokens=50)
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "Hello from the deployment."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 6)

    assert_translated_responses_request(mock.requests(deployment)[-1], deployment, protocol, stream=False)


@pytest.mark.parametrize("group,deployment,protocol", RESPONSES_TARGETS, ids=["openai", "anthropic"])
def test_responses_client_streaming(gpt, mock, group, deployment, protocol):
    mock.script(deployment, [{"chunks": ["Hello ", "from ", "the ", "stream."], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}])
    events = list(gpt.responses.create(model=group, input="Say hi", instructions="Be brief.", max_output_tokens=50, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello from the stream."
    assert len(deltas) >= 2, "translated chunk by chunk, not as one piece"
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == "Hello from the stream."
    assert completed.usage.output_tokens == 4

    assert_translated_responses_request(mock.requests(deployment)[-1], deployment, protocol, stream=True)


# --------------------------------------------------------------------------
# A tool-call round trip across protocols
# --------------------------------------------------------------------------


def test_a_tool_call_round_trip_from_an_anthropic_client_through_an_openai_deployment(claude, mock):
    mock.script(
        "pt-local",
        [
            {"tool_call": WEATHER_CALL, "usage": {"prompt_tokens": 40, "completion_tokens": 9}},
            {"content": "It is 18 degrees and sunny in Paris."},
        ],
    )
    question = {"role": "user", "content": "Weather in Paris?"}
    first = claude.messages.create(
        model="tools-local",
        max_tokens=200,
        tools=[ANTHROPIC_WEATHER_TOOL],
        messages=[question],
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
    )
    assert first.stop_reason == "tool_use"
    [tool_use] = [block for block in first.content if block.type == "tool_use"]
    assert tool_use.id and (tool_use.name, tool_use.input) == ("get_weather", {"city": "Paris"})
    assert first.usage.output_tokens == 9

    sent = only(mock.requests("pt-local"))
    assert_openai_upstream(sent, "pt-local", key=E2E_KEY)
    # Sent through Envoy's router with the client's request: its Anthropic headers are
    # not for an OpenAI deployment.
    assert "anthropic-version" not in sent["headers"] and "anthropic-beta" not in sent["headers"]
    [tool] = sent["body"]["tools"]
    assert tool["type"] == "function"
    assert {k: tool["function"][k] for k in ("name", "description", "parameters")} == OPENAI_WEATHER_TOOL["function"]
    assert max_tokens_of(sent["body"]) == 200

    second = claude.messages.create(
        model="tools-local",
        max_tokens=200,
        tools=[ANTHROPIC_WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": [{"type": "tool_use", "id": tool_use.id, "name": tool_use.name, "input": tool_use.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 degrees, sunny"}]},
        ],
    )
    assert [block.text for block in second.content] == ["It is 18 degrees and sunny in Paris."]
    assert second.stop_reason == "end_turn"

    messages = mock.requests("pt-local")[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    [call] = messages[1]["tool_calls"]
    assert call["type"] == "function"
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("get_weather", {"city": "Paris"})
    # The result answers that call, as OpenAI's protocol says: a `tool` message with its id.
    assert messages[2]["tool_call_id"] == call["id"]
    assert text_of(messages[2]["content"]) == "18 degrees, sunny"


# --------------------------------------------------------------------------
# Errors in the client's protocol
# --------------------------------------------------------------------------


def test_all_deployments_rate_limited_is_an_anthropic_rate_limit_error(claude, mock):
    mock.script("pe-rl-anthropic", [{"error": "rate_limit", "retry_after": 1}])
    mock.script("pe-rl-gemini", [{"error": "rate_limit"}])
    with pytest.raises(anthropic.RateLimitError) as raised:
        claude.messages.create(model="err-ratelimited", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    error = raised.value
    assert error.status_code == 429
    assert int(error.response.headers["retry-after"]) >= 1
    body = error.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert [a["deployment"] for a in attempts_of(body)] == ["pe-rl-anthropic", "pe-rl-gemini"]
    assert deployments(mock, "pe-rl-") == ["pe-rl-anthropic", "pe-rl-gemini"]


def test_all_deployments_failing_is_an_anthropic_api_error(claude, mock):
    mock.script("pe-fail-anthropic", [{"error": "server"}])
    mock.script("pe-fail-local", [{"error": "server"}])
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude.messages.create(model="err-failing", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    body = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert [(a["deployment"], a["status"]) for a in attempts_of(body)] == [("pe-fail-anthropic", 500), ("pe-fail-local", 500)]
    assert deployments(mock, "pe-fail-") == ["pe-fail-anthropic", "pe-fail-local"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"model": "invalid", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "invalid", "max_tokens": 50, "messages": "hi"}, "messages"),
        ({"model": "invalid", "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "tool_use_id"),
    ],
    ids=["no-max-tokens", "messages-not-a-list", "tool-result-without-id"],
)
def test_a_messages_body_invalid_for_its_protocol_gets_an_anthropic_400_naming_the_field(proxy, mock, body, field):
    resp = httpx.post(
        f"{proxy.url}/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}, timeout=30
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert mock.requests("pi-local") == []


def test_a_responses_body_invalid_for_its_protocol_gets_an_openai_400_naming_the_field(gpt, mock):
    with pytest.raises(openai.BadRequestError) as raised:
        gpt.responses.create(model="invalid", input=42)  # type: ignore[arg-type]
    body = raised.value.body
    error = body.get("error", body)  # the SDK keeps the whole body or only its `error`
    assert raised.value.status_code == 400
    assert error["type"] == "invalid_request_error"
    assert error.get("param") == "input" or "input" in error["message"]
    assert mock.requests("pi-local") == []


def test_an_answer_that_is_not_valid_in_its_protocol_is_a_failure_and_falls_back(proxy, mock):
    # An anthropic deployment answering in OpenAI's shape, then a gemini one answering garbage:
    # neither is a success passed on to the client.
    mock.script("pgb-anthropic", [{"answer_protocol": "openai"}])
    mock.script("pgb-gemini", [{"garbage": True}])
    mock.script("pgb-local", [{"content": "a real answer"}])
    resp = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "garbage", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-deployment"] == "pgb-local"
    assert resp.json()["choices"][0]["message"]["content"] == "a real answer"
    assert deployments(mock, "pgb-") == ["pgb-anthropic", "pgb-gemini", "pgb-local"]


def test_a_gemini_refusal_that_arrives_as_a_200_follows_the_content_policy_chain(gpt, mock):
    # Gemini blocks a prompt with a 200 whose promptFeedback has a blockReason and no
    # candidates: for the chain that is a content-policy refusal, not an answer.
    mock.script("prf-gemini", [{"error": "content_policy"}])
    mock.script("prf-safe", [{"content": "a careful answer"}])
    completion = gpt.chat.completions.create(model="refusal-gemini", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "a careful answer"
    assert deployments(mock, "prf-") == ["prf-gemini", "prf-safe"]


# --------------------------------------------------------------------------
# /v1/models
# --------------------------------------------------------------------------


def test_models_lists_the_route_groups_for_both_sdks(proxy, mock, claude, gpt):
    config = yaml.safe_load(render_config("protocols.yaml", mock))
    groups = {entry["model_name"] for entry in config["model_list"]}
    assert {model.id for model in gpt.models.list()} == groups
    assert {model.id for model in claude.models.list()} == groups
    # Nothing upstream is asked: the groups are detour's own.
    ours = {entry["model_info"]["id"] for entry in config["model_list"]}
    assert not [r["path"] for r in mock.requests() if r["deployment"] in ours and r["endpoint"] == "models"]


# --------------------------------------------------------------------------
# A feature only one protocol can express
# --------------------------------------------------------------------------

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}


def test_an_anthropic_only_feature_skips_the_openai_deployment_and_goes_to_anthropic(claude, mock):
    mock.script("pf-anthropic", [{"content": "searched"}])
    raw = claude.messages.with_raw_response.create(
        model="anthropic-only", max_tokens=100, tools=[WEB_SEARCH], messages=[{"role": "user", "content": "news?"}]
    )
    assert [block.text for block in raw.parse().content] == ["searched"]
    assert raw.headers["x-detour-deployment"] == "pf-anthropic"
    assert raw.headers["x-detour-attempts"] == "1"  # a skip is not an attempt
    assert mock.requests("pf-openai") == []
    req = only(mock.requests("pf-anthropic"))
    assert_anthropic_upstream(req, "pf-anthropic")
    assert req["body"]["tools"] == [WEB_SEARCH]


def test_an_anthropic_only_feature_with_no_anthropic_deployment_records_why_it_was_skipped(claude, mock):
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.messages.create(
            model="openai-only", max_tokens=100, tools=[WEB_SEARCH], messages=[{"role": "user", "content": "news?"}]
        )
    # No deployment can express the request: the request is the problem, so a 400
    # (`untranslatable_request`), in Anthropic's error shape, with the reason per deployment.
    assert isinstance(raised.value, anthropic.BadRequestError)
    assert raised.value.status_code == 400
    body = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["code"] == "untranslatable_request"
    [attempt] = attempts_of(body)
    assert (attempt["deployment"], attempt["status"], attempt["reason"]) == ("pfo-openai", None, "untranslatable")
    assert "web_search" in attempt["detail"]
    assert mock.requests("pfo-openai") == []


# --------------------------------------------------------------------------
# Spend of translated answers
# --------------------------------------------------------------------------

INPUT, OUTPUT, CACHE_READ, CACHE_WRITE = nanos(0.000001), nanos(0.000002), nanos(0.0000001), nanos(0.00000125)


def test_spend_of_an_anthropic_answer_translated_for_a_chat_client_prices_cache_reads_and_writes(proxy, gpt, mock):
    # Anthropic reports input_tokens 500, cache_read_input_tokens 200,
    # cache_creation_input_tokens 300, output_tokens 100.
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 200}, "cache_creation_tokens": 300}
    mock.script("psp-anthropic", [{"content": "priced", "usage": usage}])
    before = spent(proxy, "spend-anthropic")
    completion = gpt.chat.completions.create(model="spend-anthropic", max_tokens=150, messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "priced"
    # The client sees the usage in its own protocol: prompt_tokens counts cached and written tokens.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1000, 100)
    assert completion.usage.prompt_tokens_details.cached_tokens == 200
    assert spent(proxy, "spend-anthropic") - before == 500 * INPUT + 200 * CACHE_READ + 300 * CACHE_WRITE + 100 * OUTPUT


def test_spend_of_a_gemini_stream_translated_for_an_anthropic_client(proxy, claude, mock):
    # Gemini reports promptTokenCount 1000 (cachedContentTokenCount 200 of them), candidatesTokenCount 100.
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 200}}
    mock.script("psp-gemini", [{"chunks": ["pri", "ced"], "usage": usage}])
    before = spent(proxy, "spend-gemini")
    with claude.messages.stream(model="spend-gemini", max_tokens=150, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "priced"
    # In Anthropic's words: input_tokens leaves out what was read from the cache.
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (800, 200, 100)
    assert_gemini_upstream(only(mock.requests("psp-gemini")), "psp-gemini", stream=True)
    assert spent(proxy, "spend-gemini") - before == 800 * INPUT + 200 * CACHE_READ + 100 * OUTPUT
