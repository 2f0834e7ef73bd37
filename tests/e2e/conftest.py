"""Fixtures of the end-to-end suite: every scenario runs on both hosts, real Envoy and
`detour serve` (detour's own proxy-wasm host). For each host: one mock provider and one
proxy (two workers, the compiled filter, the rules config) per session, started and
stopped here. `DETOUR_E2E_HOSTS=serve` (or `envoy`) runs one host only."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import HOSTS, MockProvider, new_workdir, remove_workdir  # noqa: E402

E2E_KEY = "sk-detour-e2e-secret-7f3a"
ADMIN_TOKEN = "detour-admin-token-for-e2e-0001"
CONFIGS = Path(__file__).parent / "configs"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def selected_hosts() -> list[str]:
    wanted = os.environ.get("DETOUR_E2E_HOSTS", "")
    names = [n.strip() for n in wanted.split(",") if n.strip()] or sorted(HOSTS)
    unknown = [n for n in names if n not in HOSTS]
    if unknown:
        raise pytest.UsageError(f"DETOUR_E2E_HOSTS: unknown host(s) {unknown}; known: {sorted(HOSTS)}")
    return names


@pytest.fixture(scope="session", params=selected_hosts())
def host_name(request) -> str:
    """Which host this run of the scenarios is on: `envoy` or `serve`."""
    return request.param


@pytest.fixture(scope="session")
def host_class(host_name):
    """The harness class that starts the host (`EnvoyWithDetour` or `DetourServe`)."""
    return HOSTS[host_name]


@pytest.fixture(scope="session")
def workdir(host_name):
    path = new_workdir(f"{host_name}-")
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
def proxy(workdir, mock, host_class):
    """The host under test with the rules config (Envoy or `detour serve`)."""
    started = host_class(workdir / "rules", render_config("rules.yaml", mock), env={"DETOUR_E2E_KEY": E2E_KEY, "DETOUR_ADMIN_TOKEN": ADMIN_TOKEN})
    (workdir / "rules").mkdir()
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def envoy(proxy):
    """The name the scenarios use for the proxy: whichever host this run is on."""
    return proxy


@pytest.fixture
def client(proxy):
    """A plain HTTP client for the detour listener. Fresh connections per request, so
    requests spread over the proxy's workers."""
    with httpx.Client(base_url=proxy.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        yield c


def chat(model: str | None = None, content: str = "hello", **extra) -> dict:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        body["model"] = model
    return body
