#!/usr/bin/env python3
"""Scriptable mock LLM provider for detour's e2e tests and demo: OpenAI Chat Completions,
Anthropic Messages and Gemini generateContent, streaming included.

One process plays many upstream "deployments", selected by the first path
segment (``/dep-a/v1/chat/completions`` is deployment ``dep-a``).  Each
deployment answers in whichever protocol it is called in:

- OpenAI:    ``POST /<dep>/v1/chat/completions`` (or ``/<dep>/chat/completions``)
- Anthropic: ``POST /<dep>/v1/messages`` (or ``/<dep>/messages``)
- Gemini:    ``POST /<dep>/v1beta/models/<model>:generateContent`` and
             ``:streamGenerateContent?alt=sse``

Each deployment has a script of steps (status, error kind, delay, SSE streaming,
dropped connection, hang, tool call, ...) set through the control API under
``/__mock/``; a step is rendered in the protocol of the request it answers.
Every request is recorded so tests can assert on exactly what the filter sent
upstream.

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
MESSAGES_PATHS = ("/v1/messages", "/messages")
# /v1beta/models/<model>:generateContent (also /v1/ and /v1alpha/, as Google serves them).
GEMINI_RE = re.compile(r"/(v1beta|v1|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)")
GEMINI_MODELS_PATHS = ("/v1beta/models", "/v1/models")

OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"
PROTOCOLS = (OPENAI, ANTHROPIC, GEMINI)

# An idle keep-alive connection is closed after this long, so no handler
# thread blocks forever.  Generous so Envoy's pooled upstream connections are
# rarely closed under it (which would race with reuse).
IDLE_TIMEOUT_S = 120.0
DEFAULT_HANG_MS = 30_000
MAX_BODY_BYTES = 64 * 1024 * 1024

DEFAULT_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
# A usage key the mock reads but OpenAI has no field for: the part of prompt_tokens
# written to the prompt cache (Anthropic's cache_creation_input_tokens).
CACHE_CREATION_KEY = "cache_creation_tokens"

# Not valid JSON, not valid UTF-8, and contains a NUL: whatever parses it must cope.
GARBAGE_BODY = b"<html>garbage\x00\xff</html>"
# `garbage: "sse"`: a well-framed event stream whose events mean nothing in any protocol.
GARBAGE_SSE_EVENTS = (b"data: <html>garbage</html>\n\n", b"event: nonsense\ndata: {not json\n\n")

ANTHROPIC_VERSION = "2023-06-01"
# What Gemini 3 attaches to a functionCall part (detour must carry or ignore it).
GEMINI_THOUGHT_SIGNATURE = "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ=="

# OpenAI: kind -> (default status, type, code, message).  "{model}" is filled in.
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

# Anthropic: kind -> (default status, error.type, message), as api.anthropic.com answers.
ANTHROPIC_ERROR_KINDS = {
    "rate_limit": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit "
        "(https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. "
        "Please reduce the prompt length or the maximum tokens requested, or try again later.",
    ),
    "server": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "context_length": (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    "content_policy": (400, "invalid_request_error", "Output blocked by content filtering policy"),
    "bad_request": (400, "invalid_request_error", "temperature: Input should be less than or equal to 1"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "not_found": (404, "not_found_error", "model: {model}"),
}

# Gemini: kind -> (default status, error.status, message), as generativelanguage.googleapis.com
# answers. `content_policy` is not an error there: see GEMINI_BLOCKED.
GEMINI_ERROR_KINDS = {
    "rate_limit": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    ),
    "server": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "context_length": (
        400,
        "INVALID_ARGUMENT",
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
    ),
    "bad_request": (
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
    ),
    # Google answers a wrong key with 400, not 401, and says so in `details`.
    "auth": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    "not_found": (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    ),
}
# Gemini refuses a prompt with a 200 that has no candidates and says why.
GEMINI_BLOCKED = "content_policy"

ANTHROPIC_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
GEMINI_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# finish_reason is scripted in OpenAI's words; each protocol says it in its own.
ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}

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
        "tool_call",
        "answer_protocol",
    }
)


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def error_body(message: str, type_: str, code: str | None = None) -> dict:
    """An OpenAI-shaped error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_error_body(message: str, type_: str, request_id: str | None = None) -> dict:
    """An Anthropic-shaped error object."""
    body = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def gemini_error_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    """A Google-API-shaped error object."""
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def generic_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def anthropic_error_type(status: int) -> str:
    return ANTHROPIC_STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def gemini_status_name(status: int) -> str:
    return GEMINI_STATUS_NAMES.get(status, "UNKNOWN" if status >= 500 else "FAILED_PRECONDITION")


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
    if "garbage" in step and step["garbage"] not in (True, False, "sse"):
        return f"{where}: garbage must be true, false or \"sse\""
    if "tool_call" in step:
        call = step["tool_call"]
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"]):
            return f"{where}: tool_call must be an object with a non-empty string name"
        if set(call) - {"name", "arguments", "id"}:
            return f"{where}: tool_call takes only name, arguments and id"
        if not isinstance(call.get("arguments", {}), dict):
            return f"{where}: tool_call.arguments must be an object"
        if "id" in call and not (isinstance(call["id"], str) and call["id"]):
            return f"{where}: tool_call.id must be a non-empty string"
    if "answer_protocol" in step and step["answer_protocol"] not in PROTOCOLS:
        return f"{where}: answer_protocol must be one of {list(PROTOCOLS)}"
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


def split_json(text: str, parts: int = 3) -> list[str]:
    """Cuts a JSON text into `parts` pieces anywhere (as providers stream tool arguments)."""
    if len(text) <= parts:
        return [text] if text else []
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def parse_json(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def sse(obj, event: str | None = None, crlf: bool = False) -> bytes:
    """One SSE event: `data: <json>` (after `event: <name>` when given)."""
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"{head}data: {data}{nl}{nl}".encode()


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


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a deployment path asks for."""

    protocol: str  # "openai", "anthropic" or "gemini"
    endpoint: str  # "chat", "messages", "generate" or "models"
    method: str  # the HTTP method the endpoint takes
    stream: bool = False  # Gemini: streamGenerateContent
    path_model: str | None = None  # Gemini: the model named in the path


def route_for(rest: str, headers) -> Route | None:
    """The endpoint for a path after `/<deployment>`, or None when there is none."""
    if rest in CHAT_PATHS:
        return Route(OPENAI, "chat", "POST")
    if rest in MESSAGES_PATHS:
        return Route(ANTHROPIC, "messages", "POST")
    match = GEMINI_RE.fullmatch(rest)
    if match:
        return Route(GEMINI, "generate", "POST", match.group(3) == "streamGenerateContent", match.group(2))
    if rest in GEMINI_MODELS_PATHS and ("x-goog-api-key" in headers or rest.startswith("/v1beta")):
        return Route(GEMINI, "models", "GET")
    if rest in MODELS_PATHS:
        # GET /v1/models is both OpenAI's and Anthropic's; Anthropic clients send their version.
        return Route(ANTHROPIC if "anthropic-version" in headers else OPENAI, "models", "GET")
    return None


# Top-level request fields each native API takes; anything else it refuses with a 400, so a
# translation that leaks another protocol's fields (stream_options, n, …) fails here too.
ANTHROPIC_REQUEST_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "container", "mcp_servers", "context_management", "output_config", "output_format",
        "inference_geo", "cache_control", "diagnostics", "speed", "user_profile_id", "workspace_id",
    }
)  # fmt: skip
GEMINI_REQUEST_FIELDS = frozenset(
    {
        "model", "contents", "tools", "toolConfig", "tool_config", "safetySettings",
        "safety_settings", "systemInstruction", "system_instruction", "generationConfig",
        "generation_config", "cachedContent", "cached_content", "labels",
    }
)  # fmt: skip


def protocol_problem(route: Route, body: dict) -> str | None:
    """A request body the provider itself would refuse (detour translated it wrongly)."""
    if route.endpoint == "messages":
        for field, kind in (("model", str), ("messages", list), ("max_tokens", int)):
            if field not in body:
                return f"{field}: Field required"
            if not isinstance(body[field], kind) or isinstance(body[field], bool):
                return f"{field}: Input should be a valid {'integer' if kind is int else kind.__name__}"
        for field in sorted(set(body) - ANTHROPIC_REQUEST_FIELDS):
            return f"{field}: Extra inputs are not permitted"
    if route.endpoint == "generate":
        for field in sorted(set(body) - GEMINI_REQUEST_FIELDS):
            return f'Invalid JSON payload received. Unknown name "{field}": Cannot find field.'
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified\n"
    return None


@dataclass
class RequestContext:
    """What a scripted step needs to know about the request it answers."""

    seq: int
    deployment: str
    endpoint: str  # "chat", "messages", "generate" or "models"
    body: dict | None
    protocol: str = OPENAI
    gemini_stream: bool = False
    path_model: str | None = None
    sse: bool = True  # Gemini streams: ?alt=sse (else a JSON array)

    @property
    def model(self) -> str:
        if self.path_model:
            return self.path_model
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) and model else self.deployment

    @property
    def stream(self) -> bool:
        if self.endpoint == "generate":
            return self.gemini_stream
        return self.endpoint in ("chat", "messages") and (self.body or {}).get("stream") is True

    @property
    def include_usage(self) -> bool:
        options = (self.body or {}).get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


@dataclass
class Answer:
    """A successful answer, before a protocol renders it."""

    seq: int
    deployment: str
    model: str
    text: str
    pieces: list
    tool_call: dict | None  # {"id", "name", "arguments" (object)}
    finish: str  # in OpenAI's words ("stop", "length", "tool_calls", …)
    finish_explicit: bool
    usage: dict  # OpenAI form, plus cache_creation_tokens
    explicit: frozenset  # the usage keys the step itself gave

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.tool_call["arguments"]) if self.tool_call else ""

    def counts(self) -> tuple[int, int, int, int]:
        """(prompt, completion, cached, cache-creation) token counts."""

        def count(value) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        details = self.usage.get("prompt_tokens_details")
        cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return (
            count(self.usage.get("prompt_tokens")),
            count(self.usage.get("completion_tokens")),
            cached,
            count(self.usage.get(CACHE_CREATION_KEY)),
        )


def make_answer(step: dict, ctx: RequestContext) -> Answer:
    call = step.get("tool_call")
    tool_call = None
    if call:
        tool_call = {
            "id": call.get("id") or f"call_mock_{ctx.seq}",
            "name": call["name"],
            "arguments": call.get("arguments", {}),
        }
    # With a tool call the answer has no text unless the step gives some.
    text = str(step.get("content", "" if tool_call else f"hello from {ctx.deployment}"))
    pieces = list(step["chunks"]) if "chunks" in step else split_words(text)
    finish = step.get("finish_reason") or ("tool_calls" if tool_call else "stop")
    return Answer(
        seq=ctx.seq,
        deployment=ctx.deployment,
        model=ctx.model,
        text=text,
        pieces=pieces,
        tool_call=tool_call,
        finish=str(finish),
        finish_explicit="finish_reason" in step,
        usage={**DEFAULT_USAGE, **(step.get("usage") or {})},
        explicit=frozenset(step.get("usage") or {}),
    )


# --------------------------------------------------------------------------
# OpenAI Chat Completions
# --------------------------------------------------------------------------


def openai_usage(answer: Answer) -> dict:
    return {k: v for k, v in answer.usage.items() if k != CACHE_CREATION_KEY}


def openai_tool_calls(answer: Answer) -> list:
    call = answer.tool_call
    return [{"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": answer.arguments_json}}]


def openai_completion(answer: Answer) -> dict:
    message = {"role": "assistant", "content": answer.text if (answer.text or not answer.tool_call) else None}
    if answer.tool_call:
        message["tool_calls"] = openai_tool_calls(answer)
    return {
        "id": f"chatcmpl-mock-{answer.seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish}],
        "usage": openai_usage(answer),
    }


def openai_stream(answer: Answer, include_usage: bool) -> list:
    """(kind, bytes) events: kind "piece" for content, "head"/"tail" otherwise."""
    created = int(time.time())

    def event(choices: list, usage=None) -> bytes:
        chunk = {
            "id": f"chatcmpl-mock-{answer.seq}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "choices": choices,
        }
        # Like OpenAI: with include_usage every chunk carries "usage",
        # null except on the final usage-only chunk.
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def choice(delta: dict, finish_reason=None) -> list:
        return [{"index": 0, "delta": delta, "finish_reason": finish_reason}]

    events = [("head", event(choice({"role": "assistant", "content": ""})))]
    events += [("piece", event(choice({"content": piece}))) for piece in answer.pieces]
    if answer.tool_call:
        call = answer.tool_call
        start = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": ""}}
        events.append(("head", event(choice({"tool_calls": [start]}))))
        for piece in split_json(answer.arguments_json):
            events.append(("piece", event(choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))))
    events.append(("tail", event(choice({}, answer.finish))))
    if include_usage:
        events.append(("tail", event([], openai_usage(answer))))
    events.append(("tail", b"data: [DONE]\n\n"))
    return events


# --------------------------------------------------------------------------
# Anthropic Messages
# --------------------------------------------------------------------------


def anthropic_usage(answer: Answer) -> dict:
    """Messages usage: input_tokens excludes cache reads and writes (OpenAI's prompt_tokens
    includes them). Anthropic's own field names given in the step's usage win."""
    prompt, completion, cached, created = answer.counts()
    usage = {
        "input_tokens": max(prompt - cached - created, 0),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": cached,
        "output_tokens": completion,
    }
    for key in usage:
        if key in answer.explicit:
            usage[key] = answer.usage[key]
    return usage


def anthropic_stop(answer: Answer) -> str:
    return ANTHROPIC_STOP.get(answer.finish, answer.finish)


def anthropic_blocks(answer: Answer) -> list:
    blocks = [{"type": "text", "text": answer.text}] if answer.text else []
    if answer.tool_call:
        call = answer.tool_call
        blocks.append({"type": "tool_use", "id": anthropic_tool_id(call), "name": call["name"], "input": call["arguments"]})
    return blocks


def anthropic_tool_id(call: dict) -> str:
    return call["id"] if call["id"].startswith("toolu_") else "toolu_" + call["id"].removeprefix("call_")


def anthropic_message(answer: Answer) -> dict:
    return {
        "id": f"msg_mock_{answer.seq}",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": anthropic_blocks(answer),
        "stop_reason": anthropic_stop(answer),
        "stop_sequence": None,
        "usage": anthropic_usage(answer),
    }


def anthropic_stream(answer: Answer) -> list:
    """Messages SSE: message_start, per block start/deltas/stop, message_delta, message_stop."""
    usage = anthropic_usage(answer)
    # message_start carries the input side of the usage (and a token or so of output, as
    # Anthropic sends it); message_delta the final output count.
    start = {**anthropic_message(answer), "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [("head", sse({"type": "message_start", "message": start}, "message_start"))]
    index = 0
    if answer.pieces or not answer.tool_call:
        block = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        events.append(("head", sse(block, "content_block_start")))
        events.append(("head", sse({"type": "ping"}, "ping")))
        for piece in answer.pieces:
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
            events.append(("piece", sse(delta, "content_block_delta")))
        events.append(("tail", sse({"type": "content_block_stop", "index": index}, "content_block_stop")))
        index += 1
    if answer.tool_call:
        call = answer.tool_call
        block = {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "tool_use", "id": anthropic_tool_id(call), "name": call["name"], "input": {}},
        }
        events.append(("head", sse(block, "content_block_start")))
        events.append(("head", sse({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}, "content_block_delta")))
        for piece in split_json(answer.arguments_json):
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}
            events.append(("piece", sse(delta, "content_block_delta")))
        events.append(("tail", sse({"type": "content_block_stop", "index": index}, "content_block_stop")))
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": anthropic_stop(answer), "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    events.append(("tail", sse(final, "message_delta")))
    events.append(("tail", sse({"type": "message_stop"}, "message_stop")))
    return events


# --------------------------------------------------------------------------
# Gemini generateContent
# --------------------------------------------------------------------------


def gemini_usage(answer: Answer, final: bool = True) -> dict:
    """usageMetadata: promptTokenCount includes cached tokens (cachedContentTokenCount).
    Chunks before the last carry the prompt side only; Gemini's own field names given in
    the step's usage win on the last."""
    prompt, completion, cached, _ = answer.counts()
    usage = {"promptTokenCount": prompt}
    if final:
        usage["candidatesTokenCount"] = completion
        usage["totalTokenCount"] = answer.usage["total_tokens"] if "total_tokens" in answer.explicit else prompt + completion
    else:
        usage["totalTokenCount"] = prompt
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if final:
        for key in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount", "cachedContentTokenCount", "thoughtsTokenCount"):
            if key in answer.explicit:
                usage[key] = answer.usage[key]
    return usage


def gemini_finish(answer: Answer) -> str:
    return GEMINI_FINISH.get(answer.finish, answer.finish)


def gemini_call_part(answer: Answer) -> dict:
    call = answer.tool_call
    return {"functionCall": {"name": call["name"], "args": call["arguments"]}, "thoughtSignature": GEMINI_THOUGHT_SIGNATURE}


def gemini_chunk(answer: Answer, parts: list, finish: str | None, final_usage: bool) -> dict:
    candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": gemini_usage(answer, final_usage),
        "modelVersion": answer.model,
        "responseId": f"mock-response-{answer.seq}",
    }


def gemini_response(answer: Answer) -> dict:
    parts = [{"text": answer.text}] if answer.text or not answer.tool_call else []
    if answer.tool_call:
        parts.append(gemini_call_part(answer))
    return gemini_chunk(answer, parts, gemini_finish(answer), True)


def gemini_blocked(answer: Answer) -> dict:
    """A prompt Gemini refuses: 200, no candidates, promptFeedback.blockReason."""
    prompt = answer.counts()[0]
    return {
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}],
        },
        "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
        "modelVersion": answer.model,
        "responseId": f"mock-response-{answer.seq}",
    }


def gemini_stream_chunks(answer: Answer) -> list:
    """(kind, chunk object) of a streamed answer; the last chunk has finishReason and usage."""
    chunks = [("piece", gemini_chunk(answer, [{"text": piece}], None, False)) for piece in answer.pieces]
    if answer.tool_call:
        chunks.append(("piece", gemini_chunk(answer, [gemini_call_part(answer)], None, False)))
    chunks.append(("tail", gemini_chunk(answer, [{"text": ""}], gemini_finish(answer), True)))
    return chunks


def gemini_stream(answer: Answer) -> list:
    # Google frames its SSE with CRLF line endings.
    return [(kind, sse(chunk, crlf=True)) for kind, chunk in gemini_stream_chunks(answer)]


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

        headers = self._lowercased_headers()
        route = route_for(rest, headers)
        body = parse_json(raw)
        # Recorded before any scripted behaviour, so dropped/hung requests show up too.
        seq = self.state.record(
            {
                "deployment": deployment,
                "protocol": route.protocol if route else None,
                "endpoint": route.endpoint if route else None,
                "method": self.command,
                "path": self.path,
                "query": url.query,
                "headers": headers,
                "body": body,
                "raw_body": raw.decode("utf-8", errors="replace"),
                "time": time.time(),
            }
        )

        if route is None:
            msg = f"Unknown request URL: {self.command} {url.path}. Please check the URL for typos."
            self._send_json(404, error_body(msg, "invalid_request_error", "unknown_url"))
            return
        ctx = RequestContext(
            seq,
            deployment,
            route.endpoint,
            body if isinstance(body, dict) else None,
            protocol=route.protocol,
            gemini_stream=route.stream,
            path_model=route.path_model,
            sse=parse_qs(url.query).get("alt", [""])[0] == "sse",
        )
        if self.command != route.method:
            msg = f"Method {self.command} not allowed for {url.path}; use {route.method}."
            self._send_error(405, msg, ctx, code="method_not_allowed")
            return
        if route.method == "POST":
            if not isinstance(body, dict):
                self._send_error(400, "We could not parse the JSON body of your request.", ctx)
                return
            problem = protocol_problem(route, body)
            if problem:
                self._send_error(400, problem, ctx)
                return

        self._perform(self.state.next_step(deployment), ctx)

    def _lowercased_headers(self) -> dict:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _send_error(self, status: int, message: str, ctx: RequestContext, code: str | None = None) -> None:
        """A request the mock refuses before any step, in the request's protocol."""
        if ctx.protocol == ANTHROPIC:
            self._send_json(status, anthropic_error_body(message, anthropic_error_type(status), f"req_mock_{ctx.seq}"))
        elif ctx.protocol == GEMINI:
            self._send_json(status, gemini_error_body(status, gemini_status_name(status), message))
        else:
            self._send_json(status, error_body(message, "invalid_request_error", code))

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
        headers = dict(step.get("headers") or {})
        if "retry_after" in step:
            headers["Retry-After"] = format_retry_after(step["retry_after"])
        if ctx.protocol == ANTHROPIC:
            headers.setdefault("request-id", f"req_mock_{ctx.seq}")

        if step.get("garbage") == "sse":
            self._stream(step, [("piece", e) for e in GARBAGE_SSE_EVENTS], status or 200, headers)
            return
        custom_body = any(k in step for k in ("error", "garbage", "json", "body"))
        blocked = ctx.protocol == GEMINI and step.get("error") == GEMINI_BLOCKED and ctx.endpoint == "generate"
        if blocked and ctx.stream and ctx.sse and status is None:
            # Gemini streams its prompt refusal as one ordinary chunk.
            events = [("tail", sse(gemini_blocked(make_answer(step, ctx)), crlf=True))]
            self._stream(step, events, 200, headers)
            return
        streamed = ctx.stream and (ctx.protocol != GEMINI or ctx.sse)
        if streamed and not custom_body and (status is None or 200 <= status < 300):
            self._stream(step, self._stream_events(step, ctx), status or 200, headers)
            return

        status, content_type, payload = self._build_response(step, ctx)
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
            return self._error_response(step, ctx)
        if "json" in step:
            return status or 200, "application/json", json.dumps(step["json"]).encode()
        if "body" in step:
            return status or 200, "text/plain; charset=utf-8", str(step["body"]).encode()
        status = status or 200
        if not 200 <= status < 300:
            message = step.get("message", f"mock error (HTTP {status})")
            if ctx.protocol == ANTHROPIC:
                obj = anthropic_error_body(message, anthropic_error_type(status), f"req_mock_{ctx.seq}")
            elif ctx.protocol == GEMINI:
                obj = gemini_error_body(status, gemini_status_name(status), message)
            else:
                obj = error_body(message, generic_error_type(status))
            return status, "application/json", json.dumps(obj).encode()
        if ctx.endpoint == "models":
            obj = self._models(ctx)
        else:
            answer = make_answer(step, ctx)
            protocol = step.get("answer_protocol", ctx.protocol)
            if protocol == ANTHROPIC:
                obj = anthropic_message(answer)
            elif protocol == GEMINI:
                obj = gemini_response(answer)
                if ctx.protocol == GEMINI and ctx.stream:
                    # streamGenerateContent without alt=sse: a JSON array of chunks.
                    obj = [chunk for _, chunk in gemini_stream_chunks(answer)]
            else:
                obj = openai_completion(answer)
        return status, "application/json", json.dumps(obj).encode()

    def _error_response(self, step: dict, ctx: RequestContext) -> tuple[int, str, bytes]:
        kind = step["error"]
        status = step.get("status")
        if ctx.protocol == ANTHROPIC:
            default_status, type_, message = ANTHROPIC_ERROR_KINDS[kind]
            message = step.get("message", message.replace("{model}", ctx.model))
            obj = anthropic_error_body(message, type_, f"req_mock_{ctx.seq}")
        elif ctx.protocol == GEMINI and kind == GEMINI_BLOCKED:
            default_status, obj = 200, gemini_blocked(make_answer(step, ctx))
        elif ctx.protocol == GEMINI:
            default_status, status_name, message = GEMINI_ERROR_KINDS[kind]
            message = step.get("message", message.replace("{model}", ctx.model))
            details = None
            if kind == "auth":
                details = [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ]
            obj = gemini_error_body(status or default_status, status_name, message, details)
        else:
            default_status, type_, code, message = ERROR_KINDS[kind]
            message = step.get("message", message.replace("{model}", ctx.model))
            obj = error_body(message, type_, code)
        return status or default_status, "application/json", json.dumps(obj).encode()

    def _models(self, ctx: RequestContext) -> dict:
        if ctx.protocol == ANTHROPIC:
            model = {"type": "model", "id": ctx.deployment, "display_name": ctx.deployment, "created_at": "2025-01-01T00:00:00Z"}
            return {"data": [model], "has_more": False, "first_id": ctx.deployment, "last_id": ctx.deployment}
        if ctx.protocol == GEMINI:
            model = {
                "name": f"models/{ctx.deployment}",
                "displayName": ctx.deployment,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            return {"models": [model]}
        return {"object": "list", "data": [{"id": ctx.deployment, "object": "model", "owned_by": "mock"}]}

    def _stream_events(self, step: dict, ctx: RequestContext) -> list:
        answer = make_answer(step, ctx)
        protocol = step.get("answer_protocol", ctx.protocol)
        if protocol == ANTHROPIC:
            return anthropic_stream(answer)
        if protocol == GEMINI:
            return gemini_stream(answer)
        return openai_stream(answer, ctx.include_usage)

    def _stream(self, step: dict, events: list, status: int, headers: dict) -> None:
        """Sends (kind, bytes) SSE events over chunked transfer encoding, one HTTP chunk each.

        `chunk_delay_ms` comes before each "piece" event; `drop: mid_body` closes the
        connection after the first piece (or before the first "tail" event when there is
        no piece), so the client never sees the stream's end.
        """
        headers = {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache", **headers}
        self._send_head(status, "text/event-stream", headers)
        drop = step.get("drop") == "mid_body"
        for kind, data in events:
            if kind == "piece" and not self.state.pause(step.get("chunk_delay_ms", 0)):
                self._abort()
            if kind == "tail" and drop:
                self._abort()  # no piece at all: drop before the end of the stream
            self._write_chunk(data)
            if kind == "piece" and drop:
                self._abort()  # no end of the stream, no terminating chunk
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
