"""Fixtures of the end-to-end suite: one mock provider and one Envoy (concurrency 2, the
compiled filter, the rules config) per test session, started and stopped here."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import EnvoyWithDetour, MockProvider, new_workdir, remove_workdir  # noqa: E402

E2E_KEY = "sk-detour-e2e-secret-7f3a"
CONFIGS = Path(__file__).parent / "configs"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def workdir():
    path = new_workdir("session-")
    yield path
    remove_workdir(path)


@pytest.fixture(scope="session")
def mock(workdir):
    provider = MockProvider(workdir).start()
    yield provider
    provider.stop()


def render_config(name: str, mock: MockProvider) -> str:
    text = (CONFIGS / name).read_text()
    return text.replace("${MOCK}", mock.url).replace("${CLOSED}", f"http://127.0.0.1:{closed_port()}")


@pytest.fixture(scope="session")
def envoy(workdir, mock):
    proxy = EnvoyWithDetour(workdir / "rules", render_config("rules.yaml", mock), env={"DETOUR_E2E_KEY": E2E_KEY})
    (workdir / "rules").mkdir()
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def client(envoy):
    """A plain HTTP client for the detour listener. Fresh connections per request, so
    requests spread over Envoy's workers."""
    with httpx.Client(base_url=envoy.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        yield c


def chat(model: str | None = None, content: str = "hello", **extra) -> dict:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        body["model"] = model
    return body
