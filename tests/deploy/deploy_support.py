"""Helpers of the deployment checks: the repository's paths, the manifests in envoy/,
scripts/render-deploy.sh, and processes started and stopped here by PID with bounded
waits; and the fixtures for the binaries (detour, Envoy, the filter), which the test
modules import. (No conftest.py here: tests/e2e's test modules import their own
`conftest` by that name, and pytest loads every conftest of a run before collecting.)

Waiting for and stopping processes is tests/harness's (one implementation for every
suite); the rest is particular to these checks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import stop_process as stop  # noqa: E402  (re-exported to the test modules)
from harness import wait_for  # noqa: E402,F401
ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
SEED = "examples/configs/seed.yaml"
SCHEMAS = Path(__file__).parent / "schemas"

# Placeholder values for the provider keys and the admin token (at least 16 characters).
FAKE_SECRET = "sk-detour-deploy-test-0123456789"


def manifest_files() -> list[Path]:
    return sorted(ENVOY_DIR.glob("kubernetes/*.yaml")) + sorted(ENVOY_DIR.glob("istio/*.yaml"))


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(kind: str, name: str, directory: str) -> dict:
    for path in sorted((ENVOY_DIR / directory).glob("*.yaml")):
        for doc in load_docs(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in envoy/{directory}/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


@pytest.fixture(scope="session")
def detour_bin() -> Path:
    """The `detour` command, built (debug) from the working tree."""
    exe = ROOT / "target" / "debug" / "detour"
    if os.environ.get("DETOUR_SKIP_CARGO_BUILD") != "1":
        subprocess.run(["cargo", "build", "-q", "-p", "detour"], cwd=ROOT, check=True, timeout=900)
    assert exe.is_file(), f"{exe} missing: cargo build -p detour"
    return exe


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    env = os.environ.get("ENVOY_BIN")
    if env:
        assert Path(env).is_file(), f"ENVOY_BIN={env} is not a file"
        return Path(env)
    found = sorted((ROOT / ".venv").glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        pytest.skip("Envoy not found: run scripts/bootstrap.sh or set ENVOY_BIN")
    return found[0]


@pytest.fixture(scope="session")
def wasm() -> Path:
    path = Path(os.environ.get("DETOUR_WASM", ROOT / "target" / "detour.wasm"))
    if not path.is_file():
        pytest.skip(f"{path} missing: build it with scripts/build-wasm.sh")
    return path


def render_deploy(detour_bin: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """scripts/render-deploy.sh into `out`, with the detour binary given."""
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "render-deploy.sh"), *args, "--out", str(out)],
        cwd=ROOT, env={**os.environ, "DETOUR_BIN": str(detour_bin)},
        capture_output=True, text=True, timeout=300,
    )


class EnvoyProcess:
    """Envoy started from a bootstrap file with extra arguments; stopped by PID."""

    def __init__(self, envoy_bin: Path, workdir: Path, args: list[str], env: dict[str, str]):
        self.log = workdir / "envoy.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(envoy_bin), *args], stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **env})

    def wait_ready(self, url: str, timeout: float = 60) -> None:
        def ready():
            try:
                return http("GET", url, timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(ready, timeout, f"envoy ready at {url}", self.proc, self.log)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)
