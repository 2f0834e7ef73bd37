#!/usr/bin/env python3
"""Scriptable OpenAI-compatible mock LLM provider for detour's e2e tests and demo.

One process plays many upstream "deployments", selected by the first path
segment (``/dep-a/v1/chat/completions`` is deployment ``dep-a``).  Each
deployment has a script of steps (status, error kind, delay, SSE streaming,
dropped connection, hang, ...) set through the control API under ``/__mock/``,
and every request it receives is recorded so tests can assert on exactly what
the filter sent upstream.

Standard library only: test harnesses start it with a plain ``python3``.

    python3 mock_provider.py [--port 0] [--port-file PATH] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
CONTROL_PREFIX = "/__mock"
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MODELS_PATHS = ("/v1/models", "/models")

# An idle keep-alive connection is closed after this long, so no handler
# thread blocks forever.  Generous so Envoy's pooled upstream connections are
# rarely closed under it (which would race with reuse).
IDLE_TIMEOUT_S = 120.0
DEFAULT_HANG_MS = 30_000
MAX_BODY_BYTES = 64 * 1024 * 1024

DEFAULT_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}

# Not valid JSON, not valid UTF-8, and contains a NUL: whatever parses it must cope.
GARBAGE_BODY = b"<html>garbage\x00\xff</html>"

# kind -> (default status, type, code, message).  "{model}" is filled in.
ERROR_KINDS = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    "server": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "unavailable": (
        503,
        "server_error",
        None,
        "The server is temporarily unavailable. Please try again later.",
    ),
    "overloaded": (529, "overloaded_error", None, "Overloaded"),
    "context_length": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
    ),
    "content_policy": (
        400,
        "invalid_request_error",
        "content_policy_violation",
        "Your request was rejected as a result of our safety system.",
    ),
    "bad_request": (400, "invalid_request_error", None, "Invalid value for 'temperature'"),
    "auth": (401, "authentication_error", "invalid_api_key", "Incorrect API key provided."),
    "not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
}

DROP_MODES = ("before_headers", "mid_body")

STEP_FIELDS = frozenset(
    {
        "status",
        "headers",
        "retry_after",
        "delay_ms",
        "json",
        "body",
        "error",
        "message",
        "garbage",
        "drop",
        "hang",
        "hang_ms",
        "content",
        "usage",
        "chunks",
        "chunk_delay_ms",
        "finish_reason",
    }
)


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def error_body(message: str, type_: str, code: str | None = None) -> dict:
    """An OpenAI-shaped error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def generic_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def validate_step(step, where: str) -> str | None:
    """Returns a problem description, or None if the step is usable.

    Strict on purpose: a typo in a test script should fail loudly at
    /__mock/script time, not silently turn into a 200.
    """
    if not isinstance(step, dict):
        return f"{where}: a step must be a JSON object"
    unknown = sorted(set(step) - STEP_FIELDS)
    if unknown:
        return f"{where}: unknown field(s) {unknown}"
    if "error" in step and step["error"] not in ERROR_KINDS:
        return f"{where}: unknown error kind {step['error']!r} (known: {sorted(ERROR_KINDS)})"
    if "drop" in step and step["drop"] not in DROP_MODES:
        return f"{where}: drop must be one of {list(DROP_MODES)}"
    if "status" in step and not (isinstance(step["status"], int) and 100 <= step["status"] <= 999):
        return f"{where}: status must be an integer 100..999"
    if "headers" in step and not isinstance(step["headers"], dict):
        return f"{where}: headers must be an object"
    for field in ("delay_ms", "hang_ms", "chunk_delay_ms"):
        value = step.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            return f"{where}: {field} must be a non-negative number of milliseconds"
    if "usage" in step and not isinstance(step["usage"], dict):
        return f"{where}: usage must be an object"
    if "chunks" in step and not (
        isinstance(step["chunks"], list) and all(isinstance(c, str) for c in step["chunks"])
    ):
        return f"{where}: chunks must be a list of strings"
    return None


def validate_script(spec) -> str | None:
    """Checks a /__mock/script body; returns a problem description or None."""
    if not isinstance(spec, dict):
        return "body must be a JSON object"
    if not isinstance(spec.get("deployment"), str) or not re.fullmatch(r"[^/?#\s]+", spec["deployment"]):
        return "deployment must be a non-empty path segment"
    steps = spec.get("steps", [])
    if not isinstance(steps, list):
        return "steps must be a list"
    for i, step in enumerate(steps):
        problem = validate_step(step, f"steps[{i}]")
        if problem:
            return problem
    if spec.get("default") is not None:
        return validate_step(spec["default"], "default")
    return None


def format_retry_after(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def split_words(content: str) -> list[str]:
    """Splits text into word pieces that keep their whitespace ("a b" -> ["a ", "b"])."""
    pieces = re.findall(r"\s*\S+\s*", content)
    return pieces or ([content] if content else [])


def parse_json(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


# --------------------------------------------------------------------------
# Server state (the only mutable shared state)
# --------------------------------------------------------------------------


class MockState:
    """Scripts and recordings, shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, tuple[deque, dict]] = {}
        self._requests: list[dict] = []
        self._seq = 0
        # Set on SIGTERM/SIGINT; every wait in a handler watches it so that
        # hanging or delayed handlers end promptly on shutdown.
        self.stopping = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self._seq = 0

    def set_script(self, deployment: str, steps: list, default: dict | None) -> None:
        with self._lock:
            self._scripts[deployment] = (deque(steps), default or {})

    def next_step(self, deployment: str) -> dict:
        with self._lock:
            steps, default = self._scripts.get(deployment, (None, {}))
            return steps.popleft() if steps else default

    def record(self, entry: dict) -> int:
        with self._lock:
            self._seq += 1
            self._requests.append({"seq": self._seq, **entry})
            return self._seq

    def requests(self, deployment: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self._requests if deployment is None or r["deployment"] == deployment]

    def pause(self, ms) -> bool:
        """Sleeps ms milliseconds; False if shutdown started meanwhile."""
        if ms and ms > 0:
            return not self.stopping.wait(ms / 1000.0)
        return not self.stopping.is_set()


@dataclass
class RequestContext:
    """What a scripted step needs to know about the request it answers."""

    seq: int
    deployment: str
    endpoint: str  # "chat" or "models"
    body: dict | None

    @property
    def model(self) -> str:
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) and model else self.deployment

    @property
    def stream(self) -> bool:
        return self.endpoint == "chat" and (self.body or {}).get("stream") is True

    @property
    def include_usage(self) -> bool:
        options = (self.body or {}).get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


class Aborted(Exception):
    """The connection was deliberately torn down; write nothing more."""


# --------------------------------------------------------------------------
# HTTP handling
# --------------------------------------------------------------------------


class MockServer(ThreadingHTTPServer):
    daemon_threads = True  # never join handler threads (a hang must not block exit)
    request_queue_size = 128

    def __init__(self, address, state: MockState, quiet: bool) -> None:
        self.state = state
        self.quiet = quiet
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detour-mock-provider/1"
    timeout = IDLE_TIMEOUT_S

    server: MockServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format, *args) -> None:  # noqa: A002 (stdlib signature)
        if not self.server.quiet:
            super().log_message(format, *args)

    @property
    def state(self) -> MockState:
        return self.server.state

    # ---- request plumbing -------------------------------------------------

    def _dispatch(self) -> None:
        try:
            try:
                raw = self._read_body()
            except ValueError as exc:
                self.close_connection = True
                self._send_json(400, error_body(f"Malformed request body: {exc}", "invalid_request_error"))
                return
            url = urlsplit(self.path)
            if url.path == CONTROL_PREFIX or url.path.startswith(CONTROL_PREFIX + "/"):
                self._control(url, raw)
            else:
                self._deployment(url, raw)
        except Aborted:
            self.close_connection = True
        except OSError:
            # Client went away (broken pipe, reset, timeout): nothing to answer.
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked_body()
        length = self.headers.get("content-length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise ValueError("invalid content-length") from None
        if n < 0 or n > MAX_BODY_BYTES:
            raise ValueError("content-length out of range")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ValueError("body shorter than content-length")
        return data

    def _read_chunked_body(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("invalid chunk size") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("chunked body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk data
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def _abort(self) -> None:
        """Tears the connection down without a response (or mid-response)."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()
        raise Aborted()

    # ---- response writers -------------------------------------------------

    def _send_head(self, status: int, content_type: str | None, headers: dict) -> None:
        """Status line and headers; `headers` wins over the default content type."""
        self.send_response(status)
        lowered = {k.lower() for k in headers}
        if content_type and "content-type" not in lowered:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()

    def _send_bytes(self, status: int, payload: bytes, content_type: str | None, headers: dict | None = None) -> None:
        headers = dict(headers or {})
        headers["Content-Length"] = str(len(payload))
        self._send_head(status, content_type, headers)
        self.wfile.write(payload)

    def _send_json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def _write_chunk(self, data: bytes) -> None:
        # One sendall per HTTP chunk (wfile is unbuffered), so each SSE event
        # reaches the client as soon as it is produced.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # ---- control API ------------------------------------------------------

    def _control(self, url, raw: bytes) -> None:
        route = (self.command, url.path[len(CONTROL_PREFIX) :])
        if route == ("GET", "/health"):
            self._send_json(200, {"ok": True})
        elif route == ("POST", "/reset"):
            self.state.reset()
            self._send_json(200, {"ok": True})
        elif route == ("GET", "/requests"):
            deployment = parse_qs(url.query).get("deployment", [None])[0]
            self._send_json(200, {"requests": self.state.requests(deployment)})
        elif route == ("POST", "/script"):
            self._set_script(raw)
        else:
            self._send_json(404, {"ok": False, "error": f"unknown control route {self.command} {url.path}"})

    def _set_script(self, raw: bytes) -> None:
        spec = parse_json(raw)
        problem = validate_script(spec)
        if problem:
            self._send_json(400, {"ok": False, "error": problem})
            return
        self.state.set_script(spec["deployment"], spec.get("steps", []), spec.get("default"))
        self._send_json(200, {"ok": True})

    # ---- deployments ------------------------------------------------------

    def _deployment(self, url, raw: bytes) -> None:
        deployment, _, rest = url.path.lstrip("/").partition("/")
        rest = "/" + rest
        if not deployment:
            self._send_json(404, error_body("No deployment in path.", "invalid_request_error", "unknown_url"))
            return

        body = parse_json(raw)
        # Recorded before any scripted behaviour, so dropped/hung requests show up too.
        seq = self.state.record(
            {
                "deployment": deployment,
                "method": self.command,
                "path": self.path,
                "headers": self._lowercased_headers(),
                "body": body,
                "raw_body": raw.decode("utf-8", errors="replace"),
                "time": time.time(),
            }
        )

        if rest in CHAT_PATHS:
            endpoint, method = "chat", "POST"
        elif rest in MODELS_PATHS:
            endpoint, method = "models", "GET"
        else:
            msg = f"Unknown request URL: {self.command} {url.path}. Please check the URL for typos."
            self._send_json(404, error_body(msg, "invalid_request_error", "unknown_url"))
            return
        if self.command != method:
            msg = f"Method {self.command} not allowed for {url.path}; use {method}."
            self._send_json(405, error_body(msg, "invalid_request_error", "method_not_allowed"))
            return
        if endpoint == "chat" and not isinstance(body, dict):
            msg = "We could not parse the JSON body of your request."
            self._send_json(400, error_body(msg, "invalid_request_error"))
            return

        self._perform(self.state.next_step(deployment), RequestContext(seq, deployment, endpoint, body))

    def _lowercased_headers(self) -> dict:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    # ---- scripted behaviour -----------------------------------------------

    def _perform(self, step: dict, ctx: RequestContext) -> None:
        if not self.state.pause(step.get("delay_ms", 0)):
            self._abort()
        if step.get("drop") == "before_headers":
            self._abort()
        if step.get("hang"):
            self.state.pause(step.get("hang_ms", DEFAULT_HANG_MS))
            self._abort()

        status = step.get("status")
        custom_body = any(k in step for k in ("error", "garbage", "json", "body"))
        if ctx.stream and not custom_body and (status is None or 200 <= status < 300):
            self._stream(step, ctx, status or 200)
            return

        status, content_type, payload = self._build_response(step, ctx)
        headers = dict(step.get("headers") or {})
        if "retry_after" in step:
            headers["Retry-After"] = format_retry_after(step["retry_after"])

        if step.get("drop") == "mid_body":
            # Announce the full length, deliver half, then close: the client
            # must see an incomplete body.
            headers["Content-Length"] = str(len(payload))
            self._send_head(status, content_type, headers)
            self.wfile.write(payload[: len(payload) // 2])
            self._abort()
        self._send_bytes(status, payload, content_type, headers)

    def _build_response(self, step: dict, ctx: RequestContext) -> tuple[int, str, bytes]:
        """(status, content type, body) of a non-streamed answer."""
        status = step.get("status")
        if step.get("garbage"):
            return status or 200, "application/json", GARBAGE_BODY
        if "error" in step:
            default_status, type_, code, message = ERROR_KINDS[step["error"]]
            message = step.get("message", message.replace("{model}", ctx.model))
            return status or default_status, "application/json", json.dumps(error_body(message, type_, code)).encode()
        if "json" in step:
            return status or 200, "application/json", json.dumps(step["json"]).encode()
        if "body" in step:
            return status or 200, "text/plain; charset=utf-8", str(step["body"]).encode()
        status = status or 200
        if not 200 <= status < 300:
            message = step.get("message", f"mock error (HTTP {status})")
            return status, "application/json", json.dumps(error_body(message, generic_error_type(status))).encode()
        if ctx.endpoint == "models":
            obj = {"object": "list", "data": [{"id": ctx.deployment, "object": "model", "owned_by": "mock"}]}
        else:
            obj = self._completion(step, ctx)
        return status, "application/json", json.dumps(obj).encode()

    def _completion(self, step: dict, ctx: RequestContext) -> dict:
        return {
            "id": f"chatcmpl-mock-{ctx.seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._content(step, ctx)},
                    "finish_reason": step.get("finish_reason", "stop"),
                }
            ],
            "usage": self._usage(step),
        }

    @staticmethod
    def _content(step: dict, ctx: RequestContext) -> str:
        return str(step.get("content", f"hello from {ctx.deployment}"))

    @staticmethod
    def _usage(step: dict) -> dict:
        return {**DEFAULT_USAGE, **(step.get("usage") or {})}

    def _stream(self, step: dict, ctx: RequestContext, status: int) -> None:
        """Answers as OpenAI-style SSE over chunked transfer encoding."""
        headers = {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache", **(step.get("headers") or {})}
        if "retry_after" in step:
            headers["Retry-After"] = format_retry_after(step["retry_after"])
        self._send_head(status, "text/event-stream", headers)

        created = int(time.time())

        def event(choices: list, usage=None) -> None:
            chunk = {
                "id": f"chatcmpl-mock-{ctx.seq}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": ctx.model,
                "choices": choices,
            }
            # Like OpenAI: with include_usage every chunk carries "usage",
            # null except on the final usage-only chunk.
            if ctx.include_usage:
                chunk["usage"] = usage
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        def choice(delta: dict, finish_reason=None) -> list:
            return [{"index": 0, "delta": delta, "finish_reason": finish_reason}]

        event(choice({"role": "assistant", "content": ""}))
        pieces = step["chunks"] if "chunks" in step else split_words(self._content(step, ctx))
        for piece in pieces:
            if not self.state.pause(step.get("chunk_delay_ms", 0)):
                self._abort()
            event(choice({"content": piece}))
            if step.get("drop") == "mid_body":
                self._abort()  # no finish, no [DONE], no terminating chunk
        if step.get("drop") == "mid_body":
            self._abort()  # empty content: drop right after the role chunk
        event(choice({}, step.get("finish_reason", "stop")))
        if ctx.include_usage:
            event([], self._usage(step))
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def write_port_file(path: str, port: int) -> None:
    """Atomically writes the port (temp file + rename: readers never see it half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mock-port-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0: any free port)")
    parser.add_argument("--port-file", help="write the bound port to this file")
    parser.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    state = MockState()

    # The handler only sets an Event; the main thread never holds its lock
    # (it only polls is_set()), so this cannot deadlock inside the handler.
    def on_signal(signum, frame):
        state.stopping.set()

    # Installed before the port is published, so a harness may signal us as
    # soon as it has read the port file.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = MockServer((HOST, args.port), state, quiet=args.quiet)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"mock-provider listening on {HOST}:{port}", flush=True)

    # serve_forever runs in a thread because shutdown() must be called from
    # a thread other than the one serving.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    while not state.stopping.is_set():
        time.sleep(0.1)
    server.shutdown()
    server.server_close()
    serving.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
