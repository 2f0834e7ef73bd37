"""Tests for mock_provider.py, run against a real subprocess over real sockets.

    python3 -m pytest examples/mock-provider -q

Only stdlib + pytest.  Timing is never asserted in milliseconds: delays are
used only to force ordering (e.g. SSE chunks arriving in separate reads).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("mock_provider.py")
STARTUP_TIMEOUT_S = 10
CHAT = "/v1/chat/completions"


# --------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------


class MockProcess:
    def __init__(self, proc: subprocess.Popen, port: int, port_file: Path):
        self.proc = proc
        self.port = port
        self.port_file = port_file


def start_mock(tmp_dir: Path) -> MockProcess:
    port_file = tmp_dir / "mock.port"
    stderr_file = tmp_dir / "mock.stderr"
    # stderr goes to a file, not a pipe nobody drains (a full pipe would block the server).
    with open(stderr_file, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", "0", "--port-file", str(port_file), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"mock exited early ({proc.returncode}): {stderr_file.read_text()}")
        if time.monotonic() > deadline:
            stop_mock(proc)
            raise RuntimeError("mock did not write its port file in time")
        time.sleep(0.02)
    return MockProcess(proc, int(port_file.read_text()), port_file)


def stop_mock(proc: subprocess.Popen) -> int:
    """Stops the process by PID: SIGTERM, bounded wait, SIGKILL as a last resort."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    m = start_mock(tmp_path_factory.mktemp("mock"))
    yield m
    stop_mock(m.proc)


@pytest.fixture(autouse=True)
def clean(request):
    """Each test starts with no scripts and no recordings."""
    if "mock" in request.fixturenames:
        m = request.getfixturevalue("mock")
        assert call(m.port, "POST", "/__mock/reset")[0] == 200


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------


def call(port, method, path, body=None, headers=None, timeout=5.0):
    """One request on a fresh connection -> (status, headers dict (lowercased), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def chat(port, deployment="dep-a", body=None, **kw):
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]} if body is None else body
    return call(port, "POST", f"/{deployment}{CHAT}", body, **kw)


def script(port, deployment, steps, default=None):
    spec = {"deployment": deployment, "steps": steps}
    if default is not None:
        spec["default"] = default
    status, _, data = call(port, "POST", "/__mock/script", spec)
    assert status == 200, data
    assert json.loads(data) == {"ok": True}


def recorded(port, deployment=None):
    path = "/__mock/requests" + (f"?deployment={deployment}" if deployment else "")
    status, _, data = call(port, "GET", path)
    assert status == 200
    return json.loads(data)["requests"]


def parse_sse(data: bytes) -> list:
    """SSE body -> list of decoded `data:` payloads ("[DONE]" kept as a string)."""
    text = data.decode()
    assert text.endswith("\n\n"), "SSE body must end with a blank line"
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def assert_openai_error(data: bytes, type_=None, code=None):
    obj = json.loads(data)
    assert set(obj) == {"error"}
    err = obj["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] is None
    if type_ is not None:
        assert err["type"] == type_
    assert err["code"] == code
    return err


# --------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------


def test_port_file_and_banner(mock):
    assert mock.port_file.read_text() == str(mock.port)
    assert mock.proc.stdout.readline().strip() == f"mock-provider listening on 127.0.0.1:{mock.port}"


def test_health(mock):
    status, _, data = call(mock.port, "GET", "/__mock/health")
    assert (status, json.loads(data)) == (200, {"ok": True})


def test_default_200_json(mock):
    status, headers, data = chat(mock.port, "dep-a")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(data)
    obj = json.loads(data)
    assert obj["object"] == "chat.completion"
    assert obj["id"] == "chatcmpl-mock-1"
    assert obj["model"] == "gpt-test"
    assert isinstance(obj["created"], int)
    assert obj["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hello from dep-a"}, "finish_reason": "stop"}
    ]
    assert obj["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_model_defaults_to_deployment_and_overrides(mock):
    script(mock.port, "dep-b", [{"content": "custom", "usage": {"completion_tokens": 99}, "finish_reason": "length"}])
    obj = json.loads(chat(mock.port, "dep-b", body={"messages": []})[2])
    assert obj["model"] == "dep-b"
    assert obj["choices"][0]["message"]["content"] == "custom"
    assert obj["choices"][0]["finish_reason"] == "length"
    assert obj["usage"] == {"prompt_tokens": 10, "completion_tokens": 99, "total_tokens": 15}


def test_chat_path_without_v1_and_models(mock):
    assert chat(mock.port, "dep-a")[0] == 200
    status, _, _ = call(mock.port, "POST", "/dep-a/chat/completions", {"model": "m"})
    assert status == 200
    status, _, data = call(mock.port, "GET", "/dep-a/v1/models")
    assert status == 200
    obj = json.loads(data)
    assert obj["object"] == "list"
    assert [(m["id"], m["object"]) for m in obj["data"]] == [("dep-a", "model")]


def test_unknown_path_is_404_openai_error(mock):
    status, _, data = call(mock.port, "POST", "/dep-a/v1/embeddingz", {"x": 1})
    assert status == 404
    assert_openai_error(data, "invalid_request_error", "unknown_url")
    assert call(mock.port, "GET", "/")[0] == 404


def test_non_json_body_is_400_and_recorded(mock):
    status, _, data = chat(mock.port, "dep-a", body=b"{not json")
    assert status == 400
    assert_openai_error(data, "invalid_request_error")
    [req] = recorded(mock.port)
    assert req["body"] is None
    assert req["raw_body"] == "{not json"


def test_keep_alive_reuses_connection(mock):
    """Envoy pools upstream connections: several responses (incl. SSE) on one socket."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        for stream in (False, True, False):
            conn.request("POST", f"/dep-a{CHAT}", body=json.dumps({"model": "m", "stream": stream}))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()
    assert len(recorded(mock.port)) == 3


def test_chunked_request_body(mock):
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        parts = iter([b'{"model": ', b'"chunky"}'])
        conn.request("POST", f"/dep-a{CHAT}", body=parts, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["model"] == "chunky"
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------


def content_of(data: bytes) -> str:
    return json.loads(data)["choices"][0]["message"]["content"]


def test_script_consumed_in_order_then_default(mock):
    script(mock.port, "dep-a", [{"content": "one"}, {"error": "server"}, {"content": "three"}], default={"content": "dflt"})
    results = [chat(mock.port, "dep-a") for _ in range(5)]
    assert [r[0] for r in results] == [200, 500, 200, 200, 200]
    assert [content_of(results[i][2]) for i in (0, 2, 3, 4)] == ["one", "three", "dflt", "dflt"]


def test_script_is_per_deployment_and_default_default_is_200(mock):
    script(mock.port, "dep-a", [{"error": "rate_limit"}])
    assert chat(mock.port, "dep-b")[0] == 200  # dep-b unaffected
    assert chat(mock.port, "dep-a")[0] == 429
    status, _, data = chat(mock.port, "dep-a")
    assert status == 200 and content_of(data) == "hello from dep-a"


def test_script_replaces_previous_script(mock):
    script(mock.port, "dep-a", [{"error": "server"}, {"error": "server"}])
    script(mock.port, "dep-a", [{"content": "new"}])
    assert content_of(chat(mock.port, "dep-a")[2]) == "new"


@pytest.mark.parametrize(
    "spec",
    [
        {"deployment": "dep-a", "steps": [{"error": "nope"}]},
        {"deployment": "dep-a", "steps": [{"stauts": 500}]},
        {"deployment": "dep-a", "steps": [{"drop": "sideways"}]},
        {"deployment": "dep-a", "steps": [{"delay_ms": "soon"}]},
        {"deployment": "dep-a", "steps": "not a list"},
        {"deployment": "a/b", "steps": []},
        {"steps": []},
    ],
)
def test_invalid_script_rejected(mock, spec):
    status, _, data = call(mock.port, "POST", "/__mock/script", spec)
    assert status == 400
    assert json.loads(data)["ok"] is False


ERROR_CASES = [
    ("rate_limit", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("server", 500, "server_error", None),
    ("unavailable", 503, None, None),
    ("overloaded", 529, None, None),
    ("context_length", 400, "invalid_request_error", "context_length_exceeded"),
    ("content_policy", 400, "invalid_request_error", "content_policy_violation"),
    ("bad_request", 400, "invalid_request_error", None),
    ("auth", 401, "authentication_error", "invalid_api_key"),
    ("not_found", 404, None, "model_not_found"),
]


@pytest.mark.parametrize("kind,status,type_,code", ERROR_CASES)
def test_error_kinds(mock, kind, status, type_, code):
    script(mock.port, "dep-a", [{"error": kind}])
    got_status, headers, data = chat(mock.port, "dep-a")
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert_openai_error(data, type_, code)


def test_error_messages(mock):
    kinds = ["context_length", "content_policy", "bad_request", "overloaded"]
    script(mock.port, "dep-a", [{"error": k} for k in kinds])
    messages = [json.loads(chat(mock.port, "dep-a")[2])["error"]["message"] for _ in kinds]
    assert messages == [
        "This model's maximum context length is 8192 tokens. However, your messages resulted in "
        "9000 tokens. Please reduce the length of the messages.",
        "Your request was rejected as a result of our safety system.",
        "Invalid value for 'temperature'",
        "Overloaded",
    ]


def test_error_status_override(mock):
    script(mock.port, "dep-a", [{"error": "rate_limit", "status": 503}])
    status, _, data = chat(mock.port, "dep-a")
    assert status == 503
    assert_openai_error(data, "rate_limit_error", "rate_limit_exceeded")


def test_bare_error_status_gets_openai_error_body(mock):
    script(mock.port, "dep-a", [{"status": 502}])
    status, _, data = chat(mock.port, "dep-a")
    assert status == 502
    assert_openai_error(data, "server_error")


def test_retry_after_and_extra_headers(mock):
    script(
        mock.port,
        "dep-a",
        [
            {"error": "rate_limit", "retry_after": 7},
            {"error": "unavailable", "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT", "headers": {"X-Extra": "yes"}},
        ],
    )
    _, headers, _ = chat(mock.port, "dep-a")
    assert headers["retry-after"] == "7"
    _, headers, _ = chat(mock.port, "dep-a")
    assert headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert headers["x-extra"] == "yes"


def test_json_and_text_bodies(mock):
    script(
        mock.port,
        "dep-a",
        [
            {"status": 418, "json": {"teapot": True}},
            {"body": "plain words"},
            {"body": "<b>x</b>", "headers": {"Content-Type": "text/html"}},
        ],
    )
    status, headers, data = chat(mock.port, "dep-a")
    assert (status, headers["content-type"], json.loads(data)) == (418, "application/json", {"teapot": True})
    status, headers, data = chat(mock.port, "dep-a")
    assert (status, data) == (200, b"plain words")
    assert headers["content-type"].startswith("text/plain")
    _, headers, data = chat(mock.port, "dep-a")
    assert (headers["content-type"], data) == ("text/html", b"<b>x</b>")


def test_delay_ms_then_answers(mock):
    script(mock.port, "dep-a", [{"delay_ms": 200, "content": "late"}])
    status, _, data = chat(mock.port, "dep-a")
    assert status == 200 and content_of(data) == "late"


def test_garbage(mock):
    script(mock.port, "dep-a", [{"garbage": True}, {"garbage": True, "status": 500}])
    status, headers, data = chat(mock.port, "dep-a")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(data) > 0
    with pytest.raises(ValueError):
        json.loads(data)
    assert chat(mock.port, "dep-a")[0] == 500


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------


def stream_body(**extra):
    return {"model": "gpt-test", "messages": [], "stream": True, **extra}


def test_sse_framing_without_usage(mock):
    status, headers, data = chat(mock.port, "dep-a", body=stream_body())
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["cache-control"] == "no-cache"
    assert "content-length" not in headers
    events = parse_sse(data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-test" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert pieces == ["hello ", "from ", "dep-a"]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]


def test_sse_with_usage_custom_chunks_and_finish_reason(mock):
    script(mock.port, "dep-a", [{"chunks": ["a", "b"], "finish_reason": "length", "usage": {"total_tokens": 42}}])
    body = stream_body(stream_options={"include_usage": True})
    events = parse_sse(chat(mock.port, "dep-a", body=body)[2])
    assert events[-1] == "[DONE]"
    role, a, b, finish, usage = events[:-1]
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert [a["choices"][0]["delta"]["content"], b["choices"][0]["delta"]["content"]] == ["a", "b"]
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 42}
    # Like OpenAI: with include_usage the other chunks carry "usage": null.
    assert all(e["usage"] is None for e in (role, a, b, finish))


def test_sse_error_step_is_not_streamed(mock):
    script(mock.port, "dep-a", [{"error": "rate_limit"}])
    status, headers, data = chat(mock.port, "dep-a", body=stream_body())
    assert status == 429
    assert headers["content-type"] == "application/json"
    assert_openai_error(data, "rate_limit_error", "rate_limit_exceeded")


def read_raw_stream(port: int, body: dict) -> list[bytes]:
    """Sends a request on a raw socket and returns every recv() result until EOF."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /dep-a{CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reads = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + payload)
        while data := sock.recv(65536):
            reads.append(data)
    return reads


def test_sse_chunks_arrive_incrementally(mock):
    pieces = ["alpha", "beta", "gamma"]
    script(mock.port, "dep-a", [{"chunks": pieces, "chunk_delay_ms": 150}])
    reads = read_raw_stream(mock.port, stream_body())

    def read_index(marker: bytes) -> int:
        hits = [i for i, r in enumerate(reads) if marker in r]
        assert len(hits) == 1, (marker, reads)
        return hits[0]

    piece_reads = [read_index(json.dumps(p).encode()) for p in pieces]
    # Each piece arrived in its own read, in order, and the stream was not
    # finished when the first piece arrived.
    assert piece_reads == sorted(set(piece_reads))
    assert read_index(b"[DONE]") >= piece_reads[-1] > piece_reads[0]
    assert b"[DONE]" not in reads[piece_reads[0]]
    assert b"".join(reads).endswith(b"0\r\n\r\n")


# --------------------------------------------------------------------------
# Connection-level failures
# --------------------------------------------------------------------------


def test_drop_before_headers(mock):
    script(mock.port, "dep-a", [{"drop": "before_headers"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        chat(mock.port, "dep-a")
    assert len(recorded(mock.port, "dep-a")) == 1  # recorded even though dropped
    assert chat(mock.port, "dep-a")[0] == 200


def test_drop_mid_body_json(mock):
    script(mock.port, "dep-a", [{"drop": "mid_body"}])
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("POST", f"/dep-a{CHAT}", body=json.dumps({"model": "m"}))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_drop_mid_body_stream(mock):
    script(mock.port, "dep-a", [{"drop": "mid_body", "chunks": ["first", "second"]}])
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("POST", f"/dep-a{CHAT}", body=json.dumps(stream_body()))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == "text/event-stream"
        with pytest.raises(http.client.IncompleteRead) as exc:
            resp.read()
        partial = exc.value.partial
        assert b'"first"' in partial
        assert b'"second"' not in partial and b"[DONE]" not in partial
    finally:
        conn.close()


def test_hang_times_out_client_then_server_still_serves(mock):
    script(mock.port, "dep-a", [{"hang": True, "hang_ms": 2000}])
    with pytest.raises(TimeoutError):
        chat(mock.port, "dep-a", timeout=0.5)
    # The hanging handler does not block other connections.
    status, _, data = chat(mock.port, "dep-a")
    assert status == 200 and content_of(data) == "hello from dep-a"
    assert [r["seq"] for r in recorded(mock.port)] == [1, 2]


def test_hang_ends_by_closing_without_answer(mock):
    script(mock.port, "dep-a", [{"hang": True, "hang_ms": 200}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        chat(mock.port, "dep-a", timeout=10)


# --------------------------------------------------------------------------
# Recording and reset
# --------------------------------------------------------------------------


def test_recording(mock):
    chat(mock.port, "dep-a", body={"model": "m1", "n": 1}, headers={"X-Custom-Header": "Value-1"})
    chat(mock.port, "dep-b", body={"model": "m2"})
    call(mock.port, "GET", "/dep-a/v1/models?x=1")
    reqs = recorded(mock.port)
    assert [(r["seq"], r["deployment"], r["method"], r["path"]) for r in reqs] == [
        (1, "dep-a", "POST", f"/dep-a{CHAT}"),
        (2, "dep-b", "POST", f"/dep-b{CHAT}"),
        (3, "dep-a", "GET", "/dep-a/v1/models?x=1"),
    ]
    first = reqs[0]
    assert first["headers"]["x-custom-header"] == "Value-1"
    assert all(name == name.lower() for r in reqs for name in r["headers"])
    assert first["body"] == {"model": "m1", "n": 1}
    assert json.loads(first["raw_body"]) == first["body"]
    assert reqs[2]["body"] is None
    assert isinstance(first["time"], float) and first["time"] <= reqs[1]["time"]
    assert [r["seq"] for r in recorded(mock.port, "dep-a")] == [1, 3]
    # The control API itself is not recorded.
    assert len(recorded(mock.port)) == 3


def test_recording_is_thread_safe(mock):
    def worker(i):
        for j in range(5):
            chat(mock.port, f"dep-{i}", body={"model": "m", "j": j})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    reqs = recorded(mock.port)
    assert [r["seq"] for r in reqs] == list(range(1, 41))
    for i in range(8):
        assert [r["body"]["j"] for r in reqs if r["deployment"] == f"dep-{i}"] == list(range(5))


def test_reset_clears_scripts_and_recordings(mock):
    script(mock.port, "dep-a", [{"error": "server"}], default={"error": "server"})
    assert chat(mock.port, "dep-a")[0] == 500
    assert call(mock.port, "POST", "/__mock/reset")[0] == 200
    assert recorded(mock.port) == []
    status, _, data = chat(mock.port, "dep-a")
    assert status == 200
    assert json.loads(data)["id"] == "chatcmpl-mock-1"
    assert [r["seq"] for r in recorded(mock.port)] == [1]


# --------------------------------------------------------------------------
# Shutdown (own process: it is terminated by the test)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_during_hang(tmp_path, sig):
    m = start_mock(tmp_path)
    try:
        script(m.port, "dep-a", [{"hang": True}])  # default hang_ms: 30 s
        errors = []

        def hanging_client():
            try:
                chat(m.port, "dep-a", timeout=20)
            except Exception as exc:  # noqa: BLE001 - any failure is the expected outcome
                errors.append(exc)

        client = threading.Thread(target=hanging_client)
        client.start()
        deadline = time.monotonic() + 5
        while not recorded(m.port):
            assert time.monotonic() < deadline, "hanging request never arrived"
            time.sleep(0.02)

        os.kill(m.proc.pid, sig)
        assert m.proc.wait(timeout=5) == 0
        client.join(timeout=5)
        assert not client.is_alive()
        assert errors, "the hanging client must not get a response"
        # The port is closed once the process is gone.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", m.port), timeout=1).close()
    finally:
        stop_mock(m.proc)


# --------------------------------------------------------------------------
# Anthropic Messages
# --------------------------------------------------------------------------

MESSAGES = "/v1/messages"
GEMINI_MODEL = "gemini-3-pro-preview"


def messages_body(**extra):
    return {"model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **extra}


def messages(port, deployment="dep-a", body=None, path=MESSAGES, **kw):
    return call(port, "POST", f"/{deployment}{path}", messages_body() if body is None else body, **kw)


def gemini_body():
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def generate(port, deployment="dep-a", stream=False, sse=True, body=None, **kw):
    method = "streamGenerateContent" + ("?alt=sse" if sse else "") if stream else "generateContent"
    path = f"/{deployment}/v1beta/models/{GEMINI_MODEL}:{method}"
    return call(port, "POST", path, gemini_body() if body is None else body, **kw)


def parse_named_sse(data: bytes) -> list[tuple[str | None, dict]]:
    """SSE with `event:` lines -> [(event name, decoded data)]."""
    text = data.decode().replace("\r\n", "\n")
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n")[:-1]:
        name, payload = None, None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                payload = json.loads(value)
        out.append((name, payload))
    return out


def assert_anthropic_error(data: bytes, type_: str) -> dict:
    obj = json.loads(data)
    assert obj["type"] == "error"
    assert set(obj["error"]) == {"type", "message"}
    assert obj["error"]["type"] == type_
    assert obj["error"]["message"]
    return obj["error"]


def assert_gemini_error(data: bytes, code: int, status: str) -> dict:
    obj = json.loads(data)
    assert set(obj) == {"error"}
    err = obj["error"]
    assert (err["code"], err["status"]) == (code, status)
    assert err["message"]
    return err


def test_anthropic_default_message(mock):
    for path in (MESSAGES, "/messages"):
        status, headers, data = messages(mock.port, path=path)
        assert status == 200
        assert headers["content-type"] == "application/json"
        obj = json.loads(data)
        assert obj["type"] == "message" and obj["role"] == "assistant"
        assert obj["id"].startswith("msg_")
        assert obj["model"] == "claude-test"
        assert obj["content"] == [{"type": "text", "text": "hello from dep-a"}]
        assert (obj["stop_reason"], obj["stop_sequence"]) == ("end_turn", None)
        assert obj["usage"] == {
            "input_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
        }
    assert [(r["protocol"], r["endpoint"]) for r in recorded(mock.port)] == [("anthropic", "messages")] * 2


def test_anthropic_usage_is_mapped_from_openai_form(mock):
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30}, "cache_creation_tokens": 10}
    script(mock.port, "dep-a", [{"usage": usage, "finish_reason": "length", "content": "cut"}])
    obj = json.loads(messages(mock.port)[2])
    assert obj["usage"] == {
        "input_tokens": 60,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 30,
        "output_tokens": 20,
    }
    assert obj["stop_reason"] == "max_tokens"
    assert obj["content"] == [{"type": "text", "text": "cut"}]


def test_anthropic_tool_call(mock):
    script(mock.port, "dep-a", [{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    obj = json.loads(messages(mock.port)[2])
    [block] = obj["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
    assert obj["stop_reason"] == "tool_use"


ANTHROPIC_ERROR_CASES = [
    ("rate_limit", 429, "rate_limit_error"),
    ("server", 500, "api_error"),
    ("unavailable", 503, "api_error"),
    ("overloaded", 529, "overloaded_error"),
    ("context_length", 400, "invalid_request_error"),
    ("content_policy", 400, "invalid_request_error"),
    ("bad_request", 400, "invalid_request_error"),
    ("auth", 401, "authentication_error"),
    ("not_found", 404, "not_found_error"),
]


@pytest.mark.parametrize("kind,status,type_", ANTHROPIC_ERROR_CASES)
def test_anthropic_error_kinds(mock, kind, status, type_):
    script(mock.port, "dep-a", [{"error": kind, "retry_after": 3}])
    got, headers, data = messages(mock.port, body=messages_body(stream=True))
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "3"
    assert_anthropic_error(data, type_)


def test_anthropic_error_messages_and_bare_status(mock):
    script(mock.port, "dep-a", [{"error": "context_length"}, {"error": "not_found"}, {"status": 403}, {"error": "server", "message": "custom"}])
    assert assert_anthropic_error(messages(mock.port)[2], "invalid_request_error")["message"] == (
        "prompt is too long: 210000 tokens > 200000 maximum"
    )
    assert assert_anthropic_error(messages(mock.port)[2], "not_found_error")["message"] == "model: claude-test"
    status, _, data = messages(mock.port)
    assert status == 403
    assert_anthropic_error(data, "permission_error")
    assert assert_anthropic_error(messages(mock.port)[2], "api_error")["message"] == "custom"


def test_anthropic_invalid_bodies_are_refused_without_a_step(mock):
    script(mock.port, "dep-a", [{"content": "kept"}])
    status, _, data = messages(mock.port, body={"model": "m", "messages": []})
    assert status == 400
    assert "max_tokens" in assert_anthropic_error(data, "invalid_request_error")["message"]
    status, _, data = messages(mock.port, body=messages_body(stream_options={"include_usage": True}))
    assert status == 400
    assert assert_anthropic_error(data, "invalid_request_error")["message"] == "stream_options: Extra inputs are not permitted"
    status, _, data = messages(mock.port, body=b"{nope")
    assert status == 400
    assert_anthropic_error(data, "invalid_request_error")
    assert json.loads(messages(mock.port)[2])["content"][0]["text"] == "kept"


def test_anthropic_stream_grammar(mock):
    usage = {"prompt_tokens": 50, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 20}}
    script(mock.port, "dep-a", [{"chunks": ["Hel", "lo"], "usage": usage}])
    status, headers, data = messages(mock.port, body=messages_body(stream=True))
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    events = parse_named_sse(data)
    assert all(name == payload["type"] for name, payload in events)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == "claude-test"
    assert (start["usage"]["input_tokens"], start["usage"]["cache_read_input_tokens"]) == (30, 20)
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert [e[1]["delta"] for e in events[3:5]] == [{"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}]
    delta = events[6][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {"output_tokens": 7}


def test_anthropic_stream_tool_call(mock):
    script(mock.port, "dep-a", [{"content": "Checking.", "tool_call": {"name": "lookup", "arguments": {"q": "detour", "n": 3}}}])
    events = parse_named_sse(messages(mock.port, body=messages_body(stream=True))[2])
    starts = [p["content_block"] for n, p in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert (starts[1]["name"], starts[1]["input"]) == ("lookup", {})
    partial = "".join(
        p["delta"]["partial_json"] for n, p in events if n == "content_block_delta" and p["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"q": "detour", "n": 3}
    assert len([1 for n, p in events if n == "content_block_delta" and p["index"] == 1]) > 2  # argument deltas
    assert [p["delta"]["stop_reason"] for n, p in events if n == "message_delta"] == ["tool_use"]


def test_anthropic_stream_drop_mid_body(mock):
    script(mock.port, "dep-a", [{"drop": "mid_body", "chunks": ["first", "second"]}])
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("POST", f"/dep-a{MESSAGES}", body=json.dumps(messages_body(stream=True)))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as exc:
            resp.read()
        partial = exc.value.partial
        assert b'"first"' in partial and b'"second"' not in partial
        assert b"message_stop" not in partial
    finally:
        conn.close()


def test_anthropic_models_list(mock):
    status, _, data = call(mock.port, "GET", "/dep-a/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert status == 200
    obj = json.loads(data)
    assert [(m["id"], m["type"]) for m in obj["data"]] == [("dep-a", "model")]
    assert obj["has_more"] is False


def test_anthropic_sdk_parses_the_mock(mock):
    anthropic = pytest.importorskip("anthropic")
    sdk = anthropic.Anthropic(base_url=f"http://127.0.0.1:{mock.port}/dep-a", api_key="k", max_retries=0)
    script(mock.port, "dep-a", [{"chunks": ["a", "b"]}, {"error": "overloaded"}])
    with sdk.messages.stream(model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "ab"
        final = stream.get_final_message()
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 5)
    with pytest.raises(anthropic.InternalServerError) as exc:
        sdk.messages.create(model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 529


# --------------------------------------------------------------------------
# Gemini generateContent
# --------------------------------------------------------------------------


def test_gemini_default_response(mock):
    status, headers, data = generate(mock.port, headers={"x-goog-api-key": "g-key"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    obj = json.loads(data)
    [candidate] = obj["candidates"]
    assert candidate["content"] == {"parts": [{"text": "hello from dep-a"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    usage = obj["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (10, 5, 15)
    assert "cachedContentTokenCount" not in usage
    assert obj["modelVersion"] == GEMINI_MODEL and obj["responseId"]
    [req] = recorded(mock.port)
    assert (req["protocol"], req["endpoint"], req["query"]) == ("gemini", "generate", "")
    assert req["headers"]["x-goog-api-key"] == "g-key"
    assert req["path"] == f"/dep-a/v1beta/models/{GEMINI_MODEL}:generateContent"


def test_gemini_usage_finish_and_tool_call(mock):
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30}}
    script(
        mock.port,
        "dep-a",
        [
            {"usage": usage, "finish_reason": "length"},
            {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"finish_reason": "content_filter", "content": ""},
        ],
    )
    obj = json.loads(generate(mock.port)[2])
    assert obj["candidates"][0]["finishReason"] == "MAX_TOKENS"
    meta = obj["usageMetadata"]
    assert (meta["promptTokenCount"], meta["candidatesTokenCount"], meta["totalTokenCount"], meta["cachedContentTokenCount"]) == (100, 20, 120, 30)
    obj = json.loads(generate(mock.port)[2])
    [part] = obj["candidates"][0]["content"]["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert obj["candidates"][0]["finishReason"] == "STOP"
    assert json.loads(generate(mock.port)[2])["candidates"][0]["finishReason"] == "SAFETY"


GEMINI_ERROR_CASES = [
    ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
    ("server", 500, "INTERNAL"),
    ("unavailable", 503, "UNAVAILABLE"),
    ("overloaded", 503, "UNAVAILABLE"),
    ("context_length", 400, "INVALID_ARGUMENT"),
    ("bad_request", 400, "INVALID_ARGUMENT"),
    ("auth", 400, "INVALID_ARGUMENT"),
    ("not_found", 404, "NOT_FOUND"),
]


@pytest.mark.parametrize("kind,status,name", GEMINI_ERROR_CASES)
def test_gemini_error_kinds(mock, kind, status, name):
    script(mock.port, "dep-a", [{"error": kind}, {"error": kind}])
    for stream in (False, True):
        got, headers, data = generate(mock.port, stream=stream)
        assert got == status
        assert headers["content-type"] == "application/json"
        assert_gemini_error(data, status, name)


def test_gemini_error_messages_and_overrides(mock):
    script(mock.port, "dep-a", [{"error": "context_length"}, {"error": "rate_limit", "status": 503, "retry_after": 9}, {"status": 504}])
    assert assert_gemini_error(generate(mock.port)[2], 400, "INVALID_ARGUMENT")["message"] == (
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    )
    status, headers, data = generate(mock.port)
    assert status == 503 and headers["retry-after"] == "9"
    assert_gemini_error(data, 503, "RESOURCE_EXHAUSTED")
    status, _, data = generate(mock.port)
    assert_gemini_error(data, 504, "DEADLINE_EXCEEDED")


def test_gemini_content_policy_is_a_blocked_prompt(mock):
    script(mock.port, "dep-a", [{"error": "content_policy"}, {"error": "content_policy"}])
    status, _, data = generate(mock.port)
    assert status == 200
    obj = json.loads(data)
    assert "candidates" not in obj and obj["promptFeedback"]["blockReason"] == "SAFETY"
    status, headers, data = generate(mock.port, stream=True)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    [(_, chunk)] = parse_named_sse(data)
    assert chunk["promptFeedback"]["blockReason"] == "SAFETY"


def test_gemini_invalid_body_is_refused_without_a_step(mock):
    script(mock.port, "dep-a", [{"content": "kept"}])
    status, _, data = generate(mock.port, body={"generationConfig": {}})
    assert status == 400
    assert "contents" in assert_gemini_error(data, 400, "INVALID_ARGUMENT")["message"]
    status, _, data = generate(mock.port, body={**gemini_body(), "stream": True})
    assert status == 400
    assert '"stream"' in assert_gemini_error(data, 400, "INVALID_ARGUMENT")["message"]
    assert json.loads(generate(mock.port)[2])["candidates"][0]["content"]["parts"] == [{"text": "kept"}]


def test_gemini_sse_stream(mock):
    usage = {"prompt_tokens": 40, "completion_tokens": 6, "prompt_tokens_details": {"cached_tokens": 8}}
    script(mock.port, "dep-a", [{"chunks": ["He", "llo"], "usage": usage, "tool_call": {"name": "f", "arguments": {"x": 1}}}])
    status, headers, data = generate(mock.port, stream=True)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert b"\r\n\r\n" in data  # Google frames its SSE with CRLF
    chunks = [payload for name, payload in parse_named_sse(data)]
    assert all(name is None for name, _ in parse_named_sse(data))
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "Hello"
    assert [p["functionCall"] for p in parts if "functionCall" in p] == [{"name": "f", "args": {"x": 1}}]
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, None, "STOP"]
    final = chunks[-1]["usageMetadata"]
    assert (final["promptTokenCount"], final["candidatesTokenCount"], final["cachedContentTokenCount"]) == (40, 6, 8)
    [req] = recorded(mock.port)
    assert req["query"] == "alt=sse" and req["path"].endswith(":streamGenerateContent?alt=sse")


def test_gemini_stream_without_alt_sse_is_a_json_array(mock):
    script(mock.port, "dep-a", [{"chunks": ["a", "b"]}])
    status, headers, data = generate(mock.port, stream=True, sse=False)
    assert status == 200 and headers["content-type"] == "application/json"
    chunks = json.loads(data)
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["a", "b", ""]


def test_gemini_stream_drop_and_delay(mock):
    script(mock.port, "dep-a", [{"drop": "mid_body", "chunks": ["first", "second"], "chunk_delay_ms": 50}])
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("POST", f"/dep-a/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse", body=json.dumps(gemini_body()))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as exc:
            resp.read()
        assert b'"first"' in exc.value.partial and b"finishReason" not in exc.value.partial
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Across protocols
# --------------------------------------------------------------------------


def test_openai_tool_call(mock):
    script(mock.port, "dep-a", [{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}, {"tool_call": {"name": "f", "arguments": {"long": "x" * 20}}}])
    obj = json.loads(chat(mock.port)[2])
    message = obj["choices"][0]["message"]
    assert message["content"] is None
    [call_] = message["tool_calls"]
    assert call_["type"] == "function" and call_["id"]
    assert (call_["function"]["name"], json.loads(call_["function"]["arguments"])) == ("get_weather", {"city": "Paris"})
    assert obj["choices"][0]["finish_reason"] == "tool_calls"
    events = parse_sse(chat(mock.port, body=stream_body())[2])[:-1]
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["function"] == {"name": "f", "arguments": ""} and deltas[0]["id"]
    assert len(deltas) > 2
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"long": "x" * 20}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_usage_hides_cache_creation(mock):
    script(mock.port, "dep-a", [{"usage": {"prompt_tokens": 9, "cache_creation_tokens": 4}}])
    assert json.loads(chat(mock.port)[2])["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 15}


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
def test_garbage_in_every_protocol(mock, protocol):
    send = {"openai": lambda **kw: chat(mock.port, **kw), "anthropic": lambda **kw: messages(mock.port, **kw), "gemini": lambda **kw: generate(mock.port, **kw)}[protocol]
    script(mock.port, "dep-a", [{"garbage": True}, {"garbage": "sse"}])
    status, _, data = send()
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(data)
    status, headers, data = send()
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert b"garbage" in data


def test_answer_protocol_renders_another_protocols_shape(mock):
    script(mock.port, "dep-a", [{"answer_protocol": "openai"}, {"answer_protocol": "openai"}, {"answer_protocol": "anthropic"}])
    obj = json.loads(messages(mock.port)[2])
    assert obj["object"] == "chat.completion"
    events = parse_sse(messages(mock.port, body=messages_body(stream=True))[2])
    assert events[-1] == "[DONE]"
    assert json.loads(generate(mock.port)[2])["type"] == "message"


def test_hang_and_delay_in_every_protocol(mock):
    script(mock.port, "dep-a", [{"hang": True, "hang_ms": 2000}, {"delay_ms": 100, "content": "late"}, {"hang": True, "hang_ms": 2000}])
    with pytest.raises(TimeoutError):
        messages(mock.port, timeout=0.5)
    assert json.loads(messages(mock.port)[2])["content"][0]["text"] == "late"
    with pytest.raises(TimeoutError):
        generate(mock.port, timeout=0.5)
    assert [r["protocol"] for r in recorded(mock.port)] == ["anthropic", "anthropic", "gemini"]


def test_drop_before_headers_in_every_protocol(mock):
    script(mock.port, "dep-a", [{"drop": "before_headers"}, {"drop": "before_headers"}])
    for send in (messages, generate):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            send(mock.port)


def test_headers_are_recorded_for_every_protocol(mock):
    messages(mock.port, headers={"x-api-key": "a-key", "anthropic-version": "2023-06-01"})
    generate(mock.port, headers={"x-goog-api-key": "g-key"})
    chat(mock.port, headers={"Authorization": "Bearer o-key"})
    reqs = recorded(mock.port)
    assert reqs[0]["headers"]["x-api-key"] == "a-key" and reqs[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert reqs[1]["headers"]["x-goog-api-key"] == "g-key"
    assert reqs[2]["headers"]["authorization"] == "Bearer o-key"
    assert [r["protocol"] for r in reqs] == ["anthropic", "gemini", "openai"]


@pytest.mark.parametrize(
    "step",
    [
        {"tool_call": {"arguments": {}}},
        {"tool_call": {"name": "f", "arguments": "{}"}},
        {"tool_call": {"name": "f", "extra": 1}},
        {"answer_protocol": "soap"},
        {"garbage": "yes"},
    ],
)
def test_invalid_new_step_fields_rejected(mock, step):
    status, _, data = call(mock.port, "POST", "/__mock/script", {"deployment": "dep-a", "steps": [step]})
    assert status == 400 and json.loads(data)["ok"] is False
