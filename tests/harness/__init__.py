"""Start and stop the real things detour's end-to-end suites and demo run against.

- `MockProvider`: examples/mock-provider/mock_provider.py, on a free port of 127.0.0.1
  (OpenAI, Anthropic and Gemini protocols; see its README).
- `EnvoyWithDetour`: real Envoy 1.40 with the compiled filter, from a bootstrap rendered by
  `detour envoy` from the same config file the filter reads (what users get is what is
  tested). Listener and admin bind port 0; the ports are read back from Envoy's admin.
- `DetourServe`: the same filter on detour's own host (`detour serve`), same interface:
  the e2e suite runs every scenario on both. Ports are read from its `--ready-file`.

Every process is started here and stopped here, by its PID, with bounded waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MOCK_SCRIPT = ROOT / "examples" / "mock-provider" / "mock_provider.py"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{what}: not ready after {timeout}s\n{tail}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _http_json(method: str, url: str, payload=None, timeout: float = 10.0):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class MockProvider:
    """The scriptable mock provider (OpenAI, Anthropic, Gemini), one server for many deployments."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "MockProvider":
        port_file = self.workdir / "mock.port"
        self.log = self.workdir / "mock.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(MOCK_SCRIPT), "--port", "0", "--port-file", str(port_file), "--quiet"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        text = wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 15, "mock provider", self.proc, self.log)
        self.port = int(text)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base(self, deployment: str) -> str:
        """The api_base of a deployment played by this mock."""
        return f"{self.url}/{deployment}/v1"

    def script(self, deployment: str, steps: list, default: dict | None = None) -> None:
        body = {"deployment": deployment, "steps": steps}
        if default is not None:
            body["default"] = default
        _http_json("POST", f"{self.url}/__mock/script", body)

    def reset(self) -> None:
        _http_json("POST", f"{self.url}/__mock/reset", {})

    def requests(self, deployment: str | None = None) -> list[dict]:
        query = f"?deployment={deployment}" if deployment else ""
        return _http_json("GET", f"{self.url}/__mock/requests{query}")["requests"]

    def sequence(self) -> list[str]:
        """The deployments that received requests, in arrival order."""
        return [r["deployment"] for r in self.requests()]


def detour_binary() -> Path:
    """The `detour` CLI, built once (debug) with the workspace's cargo."""
    exe = ROOT / "target" / "debug" / "detour"
    if os.environ.get("DETOUR_SKIP_CARGO_BUILD") != "1":
        subprocess.run(["cargo", "build", "-q", "-p", "detour"], cwd=ROOT, check=True, timeout=900)
    if not exe.exists():
        raise RuntimeError(f"{exe} missing: build it with `cargo build -p detour`")
    return exe


def wasm_path() -> Path:
    path = Path(os.environ.get("DETOUR_WASM", ROOT / "target" / "detour.wasm"))
    if not path.exists():
        raise RuntimeError(f"{path} missing: build it with scripts/build-wasm.sh")
    return path


def envoy_binary() -> Path:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    found = sorted((ROOT / ".venv").glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise RuntimeError("Envoy not found: run scripts/bootstrap.sh or set ENVOY_BIN")
    return found[0]


class EnvoyWithDetour:
    """Real Envoy with the detour filter, configured from one config file."""

    name = "envoy"

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None, concurrency: int = 2):
        self.workdir = workdir
        self.config_text = config_text
        self.env = env or {}
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0

    def render(self) -> Path:
        config = self.workdir / "detour.yaml"
        config.write_text(self.config_text)
        bootstrap = self.workdir / "envoy.yaml"
        cmd = [
            str(detour_binary()), "envoy", str(config),
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--wasm", str(wasm_path()), "-o", str(bootstrap),
            # Key values are the filter's business inside Envoy; rendering needs only names.
            "--no-env",
        ]
        subprocess.run(cmd, check=True, timeout=60, env={**os.environ, **self.env})
        return bootstrap

    def start(self, wait_ready: bool = True) -> "EnvoyWithDetour":
        bootstrap = self.render()
        self.log = self.workdir / "envoy.log"
        admin_file = self.workdir / "admin.address"
        cmd = [
            str(envoy_binary()), "-c", str(bootstrap),
            "--concurrency", str(self.concurrency), "--use-dynamic-base-id",
            "--admin-address-path", str(admin_file),
            "-l", "warning", "--component-log-level", "wasm:info",
            "--disable-hot-restart",
        ]
        # stderr, not --log-path: Envoy flushes its log file only now and then, while the
        # tests read the filter's events right after each request.
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        if not wait_ready:
            return self
        address = wait_for(lambda: admin_file.exists() and admin_file.read_text().strip(), 60, "envoy admin", self.proc, self.log)
        self.admin_port = int(address.rsplit(":", 1)[1])
        wait_for(self._ready, 60, "envoy ready", self.proc, self.log)
        listeners = _http_json("GET", f"http://127.0.0.1:{self.admin_port}/listeners?format=json")
        self.port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict]:
        """The filter's `detour-event` JSON lines, in log order."""
        return [event for _, event in self.events_by_thread()]

    def events_by_thread(self) -> list[tuple[str, dict]]:
        """(Envoy thread id, event) for each `detour-event` line: which worker wrote it."""
        return _events_by_thread(self.log_text())

    def stats(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5) as resp:
            return resp.read().decode()


def new_workdir(prefix: str) -> Path:
    base = ROOT / "tests" / "e2e" / ".artifacts"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class DetourServe:
    """`detour serve` (detour's own proxy-wasm host) with the detour filter, configured
    from one config file: the same interface as `EnvoyWithDetour`."""

    name = "serve"

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None, concurrency: int = 2):
        self.workdir = workdir
        self.config_text = config_text
        self.env = env or {}
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0

    def start(self, wait_ready: bool = True) -> "DetourServe":
        config = self.workdir / "detour.yaml"
        config.write_text(self.config_text)
        self.log = self.workdir / "serve.log"
        self.events_file = self.workdir / "events.jsonl"
        ready_file = self.workdir / "serve.ready"
        ready_file.unlink(missing_ok=True)
        cmd = [
            str(detour_binary()), "serve", "--config", str(config),
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--workers", str(self.concurrency), "--wasm", str(wasm_path()),
            "--ready-file", str(ready_file),
            "--events", str(self.events_file),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        if not wait_ready:
            return self
        text = wait_for(lambda: ready_file.exists() and ready_file.read_text().strip(), 60, "detour serve ready", self.proc, self.log)
        ready = json.loads(text)
        self.port = int(ready["listen"].rsplit(":", 1)[1])
        self.admin_port = int(ready["admin"].rsplit(":", 1)[1])
        return self

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict]:
        """The filter's `detour-event` JSON lines, in log order."""
        return [event for _, event in self.events_by_thread()]

    def events_by_thread(self) -> list[tuple[str, dict]]:
        """(worker, event) for each `detour-event` line; serve's lines use Envoy's
        format, `[time][worker_N][level][component] ...`."""
        return _events_by_thread(self.log_text())

    def stats(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5) as resp:
            return resp.read().decode()


def _events_by_thread(text: str) -> list[tuple[str, dict]]:
    out = []
    for line in text.splitlines():
        marker = "detour-event "
        idx = line.find(marker)
        if idx < 0:
            continue
        # Envoy's default format (and serve's): [time][thread][level][component] ...
        fields = line.split("][")
        thread = fields[1] if len(fields) > 1 else ""
        try:
            out.append((thread, json.loads(line[idx + len(marker):])))
        except json.JSONDecodeError:
            pass
    return out


#: The hosts every end-to-end scenario runs on, by name.
HOSTS = {"envoy": EnvoyWithDetour, "serve": DetourServe}
