"""Bad input gets a clear JSON error, never a panic and never a hung request; the worker
keeps serving afterwards."""

import httpx
import pytest

from conftest import chat


def error_of(resp) -> dict:
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    return resp.json()["error"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b'{"model": "basic", "messages": [', 400, "invalid_request_body"),
        (b"\xff\xfe not utf-8", 400, "invalid_request_body"),
        (b"[1, 2, 3]", 400, "invalid_request_body"),
        (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', 400, "invalid_request_body"),
        (b'{"model": "basic", "messages": []}', 400, "invalid_request_body"),
        (b'{"model": "basic", "messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}', 400, "invalid_request_body"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model_required"),
        (b'{"model": "no-such-group", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
        (b'{"model": "basic", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', 400, "invalid_request_body"),
        (b'{"model": "basic", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "invalid_request_body"),
        (b'{"model": "basic", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_request_body"),
    ],
    ids=[
        "malformed-json", "not-utf8", "not-an-object", "model-not-a-string", "empty-messages", "client-base-url",
        "no-model", "unknown-group", "negative-max-tokens", "stream-not-a-bool", "deeply-nested",
    ],
)
def test_bad_requests_get_a_clear_error(client, body, status, code):
    resp = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert error_of(resp)["code"] == code
    # The worker is still serving.
    assert client.post("/v1/chat/completions", json=chat("basic")).status_code == 200


def test_unknown_stage_tag_is_a_clear_error(client):
    resp = client.post("/v1/chat/completions", json=chat(), headers={"x-detour-stage": "Lunch"})
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "unknown_stage"


def test_a_body_over_the_limit_is_refused(client):
    resp = client.post("/v1/chat/completions", json=chat("basic", "x" * 100_000))
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "request_too_large"


def test_a_request_without_a_body_is_refused(client):
    resp = client.post("/v1/chat/completions")
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "invalid_request_body"


def test_an_unrouted_path_is_a_clear_404(client):
    resp = client.post("/v1/audio/speech", json={"model": "basic"})
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "not_found"


def test_oversized_headers_are_refused_without_hanging(client):
    resp = client.post("/v1/chat/completions", json=chat("basic"), headers={"x-big": "a" * 200_000})
    assert resp.status_code == 431
    assert error_of(resp)["code"] == "request_header_fields_too_large"
    assert client.post("/v1/chat/completions", json=chat("basic")).status_code == 200


def test_a_100_mb_body_is_refused_early_and_clearly(client):
    # Streamed from a generator: the client never holds 100 MB, and detour answers as soon
    # as the body passes its limit (Envoy may close the connection on the rest).
    def body():
        yield b'{"model": "basic", "messages": [{"role": "user", "content": "'
        chunk = b"x" * (1024 * 1024)
        for _ in range(100):
            yield chunk
        yield b'"}]}'

    try:
        resp = client.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    except httpx.HTTPError:
        pytest.fail("the client should get detour's answer, not a broken connection")
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "request_too_large"
    assert client.post("/v1/chat/completions", json=chat("basic")).status_code == 200


def test_duplicate_headers_do_not_confuse_routing_or_leak(client, mock):
    headers = [
        ("x-detour-stage", "Build"),
        ("x-detour-stage", "Spec"),
        ("authorization", "Bearer one"),
        ("authorization", "Bearer two"),
    ]
    resp = client.post("/v1/chat/completions", json=chat("basic"), headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-detour-group"] == "basic"
    sent = mock.requests("basic-a")[-1]["headers"]
    assert "one" not in sent["authorization"] and "two" not in sent["authorization"]
