#!/usr/bin/env python3
"""detour benchmarks: added latency, throughput, CPU and memory against bare Envoy and LiteLLM.

One run starts every process itself (loopback only, free ports, pinned with taskset),
sends the same request mix through each target in interleaved rounds, stops every
process by PID, and writes a JSON file plus a Markdown table.

Targets (each with the same model_list where it reads one):
  direct      nginx, the canned upstream itself (the baseline)
  envoy       Envoy 1.40 without detour: a plain route to the upstream cluster
  envoy+detour  Envoy 1.40 with target/detour.wasm, bootstrap from `detour envoy`
  serve       `detour serve` (target/release/detour) with the same wasm
  litellm     the LiteLLM proxy (.venv-litellm), same config file

Fleet-mode targets (not in the default set; each uses the config above plus prices and a
total budget, so like is compared with like):
  envoy+detour+budget      Envoy + detour, per-process budget of $1,000,000 (the baseline)
  envoy+detour+fleet       the same budget leased from the fleet ledger: `detour state` on
                           its own redis-server (sync_interval 1s, lease_ttl 60s): far from
                           the limit
  envoy+detour+fleet-near  the same, near the limit: before every measured point the ledger's
                           `spent` is set (HSET) so that the room left is what the point costs
                           / 0.95 (--near-fill; 2 % of the limit at 1,000 RPS): the point
                           ends ~5 % of that room short of the limit. Fixed-rate points only.
  serve+budget, serve+fleet  the same pair for `detour serve` (fleet.redis: in-process Redis)
  Runs with only these targets default to --scenarios json@200,json@1000 and add `direct`.
  Per point they record the ledger's Redis script calls (INFO commandstats) and, near the
  limit, the room set and the share of it spent. --prime S sends S s of unmeasured traffic
  before each point (a fleet process idle for 10 sync intervals has given its leases back).

Scenarios per target and round (order rotated every round so drift cancels out):
  json@200, json@1000   non-streaming chat (1 KiB prompt) at fixed rates
  sse@200,  sse@1000    the same with "stream": true (canned SSE upstream)
  json@max, sse@max     closed loop, N connections: maximum throughput
  fallback@200          primary answers 503, the router falls back to the secondary

Usage: bench/run.py [--quick] [--rounds N] [--duration S] [--targets a,b] [--scenarios a,b]
                    [--prime S] [--out DIR]
Needs: nginx, oha (or wrk), target/detour.wasm, target/release/detour, .venv (Envoy),
optionally .venv-litellm; redis-server for the fleet targets. scripts/bench.sh installs and
builds all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = 1024

# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except OSError:
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: exited with {proc.returncode}\n{tail}")
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what}: not ready after {timeout}s\n{tail}")


# Every target gets the same headers; LiteLLM checks this key, detour replaces it upstream.
MASTER_KEY = "sk-detour-bench-0123456789abcdef0123456789abcdef"
AUTH = f"Bearer {MASTER_KEY}"


def http_ok(url: str, data: bytes | None = None) -> bool:
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", "authorization": AUTH})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            resp.read()
            return 200 <= resp.status < 300
    except OSError:
        return False


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM by PID, then SIGKILL after a bounded wait."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def tree(pid: int) -> list[int]:
    """pid and all its descendants (LiteLLM and nginx have children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, from /proc/<pid>/stat (fields 14 and 15)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------------------- the upstream

CHAT_JSON = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the bench upstream"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 260, "completion_tokens": 6, "total_tokens": 266},
})


def sse_body() -> str:
    def chunk(delta, finish=None, usage=None, choices=True):
        obj = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
               "model": "bench-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage is not None:
            obj["usage"] = usage
        return "data: " + json.dumps(obj) + "\n\n"
    parts = [chunk({"role": "assistant", "content": ""})]
    for word in ["hello ", "from ", "the ", "bench ", "upstream"]:
        parts.append(chunk({"content": word}))
    parts.append(chunk({}, finish="stop"))
    parts.append(chunk(None, usage={"prompt_tokens": 260, "completion_tokens": 6, "total_tokens": 266}, choices=False))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


ERROR_503 = json.dumps({"error": {"message": "bench primary unavailable", "type": "server_error", "param": None, "code": None}})


def nginx_conf(workdir: Path, port: int) -> str:
    def q(s: str) -> str:  # nginx single-quoted string
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"""
worker_processes 1;
user root;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
  client_body_temp_path {workdir}/nginx-body;
  proxy_temp_path {workdir}/nginx-proxy;
  fastcgi_temp_path {workdir}/nginx-fcgi;
  uwsgi_temp_path {workdir}/nginx-uwsgi;
  scgi_temp_path {workdir}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /health {{ return 200 'ok'; }}
    location ~ ^/json/v1/chat/completions$ {{ default_type application/json; return 200 {q(CHAT_JSON)}; }}
    location ~ ^/sse/v1/chat/completions$ {{ default_type text/event-stream; add_header cache-control no-cache; return 200 {q(sse_body())}; }}
    location ~ ^/fail/v1/chat/completions$ {{ default_type application/json; return 503 {q(ERROR_503)}; }}
    location / {{ default_type application/json; return 404 '{{"error":{{"message":"unknown path","type":"invalid_request_error","param":null,"code":"unknown_url"}}}}'; }}
  }}
}}
"""


# Prices of the fleet targets' configs (dollars per token): the canned answer's usage (260
# prompt + 6 completion tokens) costs 284,000 nano-dollars; detour reserves an estimate of
# 261 prompt tokens (1,028 characters / 4 + 4 per message) + max_tokens 16: 325,000.
PRICE_IN, PRICE_OUT = 0.000001, 0.000004
COST_NANOS = round(260 * PRICE_IN * 1e9) + round(6 * PRICE_OUT * 1e9)


def router_config(upstream: int, priced: bool = False) -> str:
    """One file that detour (Envoy and serve) and LiteLLM both read."""
    base = f"http://127.0.0.1:{upstream}"
    # Plain decimals: YAML 1.1 readers (PyYAML, LiteLLM) take 1e-06 for a string.
    price = f", input_cost_per_token: {PRICE_IN:f}, output_cost_per_token: {PRICE_OUT:f}" if priced else ""
    return f"""\
model_list:
  - model_name: bench
    litellm_params: {{model: openai/bench-model, api_base: "{base}/json/v1", api_key: sk-bench{price}}}
  - model_name: bench-sse
    litellm_params: {{model: openai/bench-model, api_base: "{base}/sse/v1", api_key: sk-bench{price}}}
  - model_name: bench-fallback
    litellm_params: {{model: openai/bench-model, api_base: "{base}/fail/v1", api_key: sk-bench{price}}}
router_settings:
  num_retries: 0            # the fallback path: one 503, then straight to the secondary
  allowed_fails: 1000000000 # never open the primary's breaker: every request takes the 503 path
  disable_cooldowns: true
  request_timeout: 30
  fallbacks: [{{bench-fallback: [bench]}}]
"""


def budget_config(upstream: int, total_dollars: int, fleet: dict | None = None) -> str:
    """The fleet targets' config: the same routes with prices, a total budget, and the
    fleet section or none (the per-process baseline)."""
    text = router_config(upstream, priced=True) + f"detour:\n  budgets: {{total: {total_dollars}}}\n"
    if fleet:
        text += "  fleet:\n" + "".join(f"    {k}: {v}\n" for k, v in fleet.items())
    return text


def request_body(model: str, stream: bool) -> bytes:
    # A 1 KiB prompt: 1,024 characters of user content.
    prompt = ("The quick brown fox jumps over the lazy dog. " * 30)[:1024]
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------- targets


class Proc:
    name = "?"
    pinned = ""

    def __init__(self, workdir: Path, cores: dict):
        self.workdir = workdir
        self.cores = cores
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = workdir / f"{self.slug}.log"

    @property
    def slug(self) -> str:  # for file names: bench/profile.py names variants like envoy+detour#nolog
        return "".join(c if c.isalnum() or c in "-." else "_" for c in self.name)

    def taskset(self, role: str) -> list[str]:
        core = self.cores.get(role)
        return ["taskset", "-c", core] if core is not None and shutil.which("taskset") else []

    def spawn(self, cmd: list[str], env: dict | None = None, role: str = "proxy") -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.taskset(role) + cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})}, cwd=self.workdir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def path(self, kind: str) -> str:  # kind: json | sse | fallback
        return "/v1/chat/completions"

    def model(self, kind: str) -> str:
        return {"json": "bench", "sse": "bench-sse", "fallback": "bench-fallback"}[kind]

    def supports(self, kind: str) -> bool:
        return True

    def supports_point(self, kind: str, rate: int | None) -> bool:
        """Whether this target runs a scenario (the near-limit target: fixed rates only)."""
        return self.supports(kind) and not (rate is None and getattr(self, "ledger", None) is not None
                                            and self.ledger.near)

    def stop(self) -> None:
        stop(self.proc)


class Nginx(Proc):
    name = "direct"

    def start(self) -> "Nginx":
        self.port = free_port()
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_conf(self.workdir, self.port))
        self.spawn([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.workdir), "-c", str(conf)], role="upstream")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/health"), 20, "nginx", self.proc, self.log)
        return self

    def path(self, kind: str) -> str:
        return {"json": "/json/v1/chat/completions", "sse": "/sse/v1/chat/completions",
                "fallback": "/json/v1/chat/completions"}[kind]

    def supports(self, kind: str) -> bool:
        return kind != "fallback"

    def stop(self) -> None:
        # nginx: SIGTERM is a fast shutdown of master and workers; QUIT would wait for keepalives.
        stop(self.proc)


def envoy_bin() -> Path:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    found = sorted((ROOT / ".venv").glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise RuntimeError("Envoy not found: run scripts/bootstrap.sh or set ENVOY_BIN")
    return found[0]


class Envoy(Proc):
    name = "envoy+detour"
    with_filter = True

    def __init__(self, workdir, cores, config: Path, detour: Path, wasm: Path, concurrency: int,
                 extra_args: list[str] | None = None, name: str | None = None):
        if name:  # bench/profile.py runs variants side by side (log level, another wasm build)
            self.name = name
        super().__init__(workdir, cores)
        self.config, self.detour, self.wasm, self.concurrency = config, detour, wasm, concurrency
        self.extra_args = extra_args or []

    def bootstrap(self) -> Path:
        out = self.workdir / f"{self.slug}.bootstrap.yaml"
        subprocess.run([str(self.detour), "envoy", str(self.config), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                        "--wasm", str(self.wasm), "--concurrency-hint", str(self.concurrency), "--no-env", "-o", str(out)],
                       check=True, timeout=60, capture_output=True)
        if self.with_filter:
            return out
        # Bare Envoy: the same bootstrap, without the wasm filter, with a plain route to the cluster.
        import yaml  # PyYAML is in the repo's .venv
        doc = yaml.safe_load(out.read_text())
        cluster = doc["static_resources"]["clusters"][0]["name"]  # one api_base host:port: one cluster
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
        for vh in hcm["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                r["route"].pop("cluster_header", None)
                r["route"]["cluster"] = cluster
                r.pop("request_headers_to_remove", None)
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return out

    def start(self) -> "Envoy":
        bootstrap = self.bootstrap()
        admin_file = self.workdir / f"{self.slug}.admin"
        # Envoy's default log level (info): detour's per-request events are logged, as a user runs it.
        self.spawn([str(envoy_bin()), "-c", str(bootstrap), "--concurrency", str(self.concurrency),
                    "--use-dynamic-base-id", "--disable-hot-restart", "--admin-address-path", str(admin_file),
                    *self.extra_args])
        addr = wait_for(lambda: admin_file.exists() and admin_file.read_text().strip(), 60, self.name, self.proc, self.log)
        admin = int(addr.rsplit(":", 1)[1])
        wait_for(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), 60, self.name, self.proc, self.log)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/listeners?format=json", timeout=5) as resp:
            self.port = json.load(resp)["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        return self

    def path(self, kind: str) -> str:
        if self.with_filter:
            return "/v1/chat/completions"
        return {"json": "/json/v1/chat/completions", "sse": "/sse/v1/chat/completions",
                "fallback": "/json/v1/chat/completions"}[kind]

    def supports(self, kind: str) -> bool:
        return self.with_filter or kind != "fallback"


class BareEnvoy(Envoy):
    name = "envoy"
    with_filter = False


class Serve(Proc):
    name = "serve"

    def __init__(self, workdir, cores, config: Path, detour: Path, wasm: Path, workers: int,
                 name: str | None = None):
        if name:
            self.name = name
        super().__init__(workdir, cores)
        self.config, self.detour, self.wasm, self.workers = config, detour, wasm, workers

    def start(self) -> "Serve":
        ready = self.workdir / f"{self.slug}.ready"
        self.spawn([str(self.detour), "serve", "--config", str(self.config), "--listen", "127.0.0.1:0",
                    "--admin", "127.0.0.1:0", "--workers", str(self.workers), "--wasm", str(self.wasm),
                    "--ready-file", str(ready)])
        text = wait_for(lambda: ready.exists() and ready.read_text().strip(), 60, "detour serve", self.proc, self.log)
        self.port = int(json.loads(text)["listen"].rsplit(":", 1)[1])
        return self


class LiteLLM(Proc):
    name = "litellm"

    def __init__(self, workdir, cores, config: Path, venv: Path):
        super().__init__(workdir, cores)
        self.config, self.venv = config, venv

    def start(self) -> "LiteLLM":
        self.port = free_port()
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
               "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True", "LITELLM_MASTER_KEY": MASTER_KEY}
        self.spawn([str(self.venv / "bin" / "litellm"), "--config", str(self.config), "--host", "127.0.0.1",
                    "--port", str(self.port), "--num_workers", "1"], env=env)
        body = request_body("bench", False)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/v1/chat/completions", body), 180, "litellm",
                 self.proc, self.log)
        return self


# ---------------------------------------------------------------------------- fleet mode


# The RESP client and the binary lookup are the end-to-end harness's (tests/harness/fleet.py).
sys.path.insert(0, str(ROOT / "tests"))
from harness.fleet import redis_binary, redis_command  # noqa: E402


class RedisServer(Proc):
    """A private redis-server (no persistence), one per fleet target so that its
    commandstats count that target's ledger calls only."""

    def __init__(self, workdir: Path, cores: dict, tag: str):
        self.name = f"redis-{tag}"
        super().__init__(workdir, cores)

    def start(self) -> "RedisServer":
        exe = redis_binary()
        if exe is None:
            raise RuntimeError("redis-server not found (Debian: redis-server; or set REDIS_SERVER)")
        self.port = free_port()
        self.spawn([str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.workdir)], role="state")
        wait_for(lambda: self.command("PING") == "PONG", 20, self.name, self.proc, self.log)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args):
        return redis_command(self.port, *args, timeout=3)

    def commandstats(self) -> dict[str, int]:
        """Calls per command since the start: {"evalsha": n, ...}."""
        out = {}
        for line in (self.command("INFO", "commandstats") or "").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                fields = dict(kv.split("=", 1) for kv in rest.split(","))
                out[name] = int(fields.get("calls", 0))
        return out


class StateService(Proc):
    """`detour state` on one RedisServer: the fleet ledger's HTTP JSON API."""

    def __init__(self, workdir: Path, cores: dict, detour: Path, redis: RedisServer, tag: str):
        self.name = f"state-{tag}"
        super().__init__(workdir, cores)
        self.detour, self.redis = detour, redis

    def start(self) -> "StateService":
        ready = self.workdir / f"{self.slug}.ready"
        self.spawn([str(self.detour), "state", "--redis", self.redis.url, "--listen", "127.0.0.1:0",
                    "--ready-file", str(ready)], role="state")
        text = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, self.name, self.proc, self.log)
        self.port = int(json.loads(text)["listen"].rsplit(":", 1)[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# The far budget: $1,000,000, so a lease (5 % of the room) covers far more than the run.
FAR_DOLLARS = 1_000_000
# Near the limit: before each point the room left is set to the point's cost / NEAR_FILL.
NEAR_FILL = 0.95
NEAR_SHARE = 0.02  # ... which at 1,000 RPS is this share of the near budget's limit


class Ledger:
    """A fleet target's ledger in its own Redis: counts calls, and for the near-limit target
    sets the room left before each point."""

    def __init__(self, redis: RedisServer, limit_dollars: int, near: bool, namespace: str = "detour"):
        self.redis, self.near = redis, near
        self.last: tuple[dict, int] | None = None
        self._spent_set = 0
        self.limit_nanos = limit_dollars * 1_000_000_000
        now = dt.datetime.now(dt.timezone.utc)
        month = dt.datetime(now.year, now.month, 1, tzinfo=dt.timezone.utc)
        self.key = f"{{{namespace}}}:acct:budget/total/{int(month.timestamp() * 1000)}"

    def account(self) -> dict[str, int]:
        flat = self.redis.command("HGETALL", self.key) or []
        return {k: int(v) for k, v in zip(flat[0::2], flat[1::2])}

    def calls(self) -> dict[str, int]:
        return self.redis.commandstats()

    def set_room(self, room_nanos: int, settle_s: float = 20.0) -> dict:
        """Sets `spent` so that limit − spent − reserved = room. Waits first (bounded) until
        the process holds no lease (an idle process returns them after 10 sync intervals),
        so that its spend is reported and no lease of its own adds to the room."""
        deadline = time.monotonic() + settle_s
        acct = self.account()
        while acct.get("reserved", 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.25)
            acct = self.account()
        reserved = acct.get("reserved", 0)
        if settle_s > 0 and time.monotonic() > deadline - settle_s + 1:
            print(f"bench: near limit: waited {settle_s - (deadline - time.monotonic()):.1f} s for the leases to "
                  f"come back (reserved now {reserved})", flush=True)
        if self.last is not None and reserved == 0:
            # Everything the previous point spent has been reported by now: the ledger's view.
            result, spent_set = self.last
            result["ledger_spent_nanos"] = acct.get("spent", 0) - spent_set
        spent = self.limit_nanos - room_nanos - reserved
        if spent < 0:
            raise RuntimeError(f"near limit: room {room_nanos} does not fit the limit {self.limit_nanos}")
        self.redis.command("HSET", self.key, "spent", spent)
        self._spent_set = spent
        return {"room_nanos": room_nanos, "reserved_at_set_nanos": reserved}

    def point_done(self, result: dict) -> None:
        if self.near:
            self.last = (result, self._spent_set)


def near_limit_dollars(duration: float, prime: float, fill: float) -> int:
    """The near target's limit: a 1,000 RPS point's room (its cost / fill) is NEAR_SHARE of it."""
    room = 1000 * (duration + prime) * COST_NANOS / fill
    return max(1, round(room / NEAR_SHARE / 1e9))


# ---------------------------------------------------------------------------- load generation


class Oha:
    name = "oha"

    def __init__(self, exe: str, cores: dict):
        self.exe = exe
        self.cores = cores
        help_text = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
        self.json_flag = ["--output-format", "json"] if "--output-format" in help_text else ["--json"]
        self.version = version_of([exe, "--version"])

    def run(self, url: str, body: Path, duration: float, rate: int | None, conns: int) -> dict:
        cmd = (["taskset", "-c", self.cores["loadgen"]] if self.cores.get("loadgen") else []) + [
            self.exe, "--no-tui", *self.json_flag, "-z", f"{duration}s", "-c", str(conns), "-m", "POST",
            "-T", "application/json", "-H", f"authorization: {AUTH}", "-D", str(body), "-t", "30s", url]
        if rate:
            cmd[len(cmd) - 1:len(cmd) - 1] = ["-q", str(rate), "--latency-correction"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 90)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr[-2000:]}")
        data = json.loads(out.stdout)
        lat = data.get("latencyPercentiles", {})
        codes = data.get("statusCodeDistribution", {})
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        # Requests still in flight when -z ends are cut by oha itself: not the target's failures.
        errors = {k: v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k}
        total = sum(codes.values()) + sum(errors.values())
        return {"p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"),
                "rps": data["summary"].get("requestsPerSec"), "ok": ok, "total": total,
                "codes": codes, "errors": data.get("errorDistribution", {})}


# ---------------------------------------------------------------------------- the run


SCENARIOS = [  # (name, kind, rate or None for closed loop)
    ("json@200", "json", 200), ("json@1000", "json", 1000),
    ("sse@200", "sse", 200), ("sse@1000", "sse", 1000),
    ("json@max", "json", None), ("sse@max", "sse", None),
    ("fallback@200", "fallback", 200),
]

# Fleet mode against per-process mode, same budget: (fleet target, its per-process baseline).
FLEET_PAIRS = [("envoy+detour+fleet", "envoy+detour+budget"), ("envoy+detour+fleet-near", "envoy+detour+budget"),
               ("serve+fleet", "serve+budget")]
FLEET_TARGETS = ["envoy+detour+budget", "envoy+detour+fleet", "envoy+detour+fleet-near", "serve+budget", "serve+fleet"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per point (well under 3 minutes)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds per measured point")
    ap.add_argument("--targets", default="direct,envoy,envoy+detour,serve,litellm",
                    help="comma list; fleet mode: " + ",".join(FLEET_TARGETS))
    ap.add_argument("--scenarios", default=None,
                    help="comma list of " + ",".join(n for n, _, _ in SCENARIOS) + " (default: all; "
                         "json@200,json@1000 when only fleet targets are asked for)")
    ap.add_argument("--near-fill", type=float, default=NEAR_FILL,
                    help="envoy+detour+fleet-near: the room left before each point is the point's cost / this "
                         "(0.95: the point takes the budget to within ~5 %% of its limit)")
    ap.add_argument("--prime", type=float, default=0.0,
                    help="seconds of unmeasured traffic at the point's rate right before each measured point "
                         "(every target): a fleet target idle for 10 sync intervals has given its leases back, "
                         "so without it a point starts with requests waiting for a lease")
    ap.add_argument("--max-conns", type=int, default=32, help="connections for the closed-loop max-throughput points")
    ap.add_argument("--proxy-core", default="1")
    ap.add_argument("--loadgen-core", default="0", help="oha and the nginx upstream")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench"))
    ap.add_argument("--note", default="", help="free text recorded with the results (e.g. other load on the machine)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 5.0)
    ncpu = os.cpu_count() or 1
    cores = ({"proxy": args.proxy_core, "loadgen": args.loadgen_core, "upstream": args.loadgen_core,
              "state": args.loadgen_core} if ncpu >= 2 else {})

    oha = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
    if not Path(oha).exists():
        print("bench: oha not found: run scripts/bench.sh (cargo install oha --locked)", file=sys.stderr)
        return 2
    loadgen = Oha(oha, cores)
    detour = ROOT / "target" / "release" / "detour"
    wasm = ROOT / "target" / "detour.wasm"
    for need in (detour, wasm):
        if not need.exists():
            print(f"bench: {need} missing: run scripts/bench.sh", file=sys.stderr)
            return 2
    venv_litellm = Path(os.environ.get("LITELLM_VENV", ROOT / ".venv-litellm"))
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    fleet_run = any(t in FLEET_TARGETS for t in wanted)
    if fleet_run and "direct" not in wanted:
        wanted.insert(0, "direct")  # every "added" figure is over direct
        print("bench: added target direct (the baseline of every 'added' figure)", flush=True)
    if args.scenarios:
        chosen = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    elif all(t in FLEET_TARGETS or t == "direct" for t in wanted):
        chosen = ["json@200", "json@1000"]
    else:
        chosen = [n for n, _, _ in SCENARIOS]
    unknown = [x for x in chosen if x not in {n for n, _, _ in SCENARIOS}]
    if unknown:
        print(f"bench: unknown scenarios {unknown}", file=sys.stderr)
        return 2
    scenarios = [sc for sc in SCENARIOS if sc[0] in chosen]
    if not 0 < args.near_fill <= 1:
        print("bench: --near-fill must be in (0, 1]", file=sys.stderr)
        return 2
    near_dollars = near_limit_dollars(duration, args.prime, args.near_fill)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out_dir))
    upstream = Nginx(workdir, cores)
    procs: list[Proc] = []
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, list[dict]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    t0 = time.monotonic()
    load_start = loadavg()
    try:
        upstream.start()
        config = workdir / "config.yaml"
        config.write_text(router_config(upstream.port))
        def with_budget(name: str, host: str, fleet: str | None) -> Proc:
            """host: envoy | serve; fleet: None (per process), "far" or "near"."""
            dollars = near_dollars if fleet == "near" else FAR_DOLLARS
            tag = "".join(c if c.isalnum() else "-" for c in name)
            section = None
            if fleet:
                redis = RedisServer(workdir, cores, tag).start()
                procs.append(redis)
                section = {"sync_interval": "1s", "lease_ttl": "60s"}
                if host == "envoy":
                    state = StateService(workdir, cores, detour, redis, tag).start()
                    procs.append(state)
                    section = {"state": state.url, **section}
                else:
                    section = {"redis": redis.url, **section}
            cfg = workdir / f"config-{tag}.yaml"
            cfg.write_text(budget_config(upstream.port, dollars, section))
            cls = Envoy if host == "envoy" else Serve
            t = cls(workdir, cores, cfg, detour, wasm, 1, name=name).start()
            if fleet:
                t.ledger = Ledger(redis, dollars, near=fleet == "near")
                if fleet == "near":  # start near the limit, so the first lease is already small
                    t.ledger.set_room(round(1000 * (duration + args.prime) * COST_NANOS / args.near_fill), settle_s=0)
            return t

        makers = {
            "direct": lambda: upstream,
            "envoy": lambda: BareEnvoy(workdir, cores, config, detour, wasm, 1).start(),
            "envoy+detour": lambda: Envoy(workdir, cores, config, detour, wasm, 1).start(),
            "serve": lambda: Serve(workdir, cores, config, detour, wasm, 1).start(),
            "litellm": lambda: LiteLLM(workdir, cores, config, venv_litellm).start(),
            "envoy+detour+budget": lambda: with_budget("envoy+detour+budget", "envoy", None),
            "envoy+detour+fleet": lambda: with_budget("envoy+detour+fleet", "envoy", "far"),
            "envoy+detour+fleet-near": lambda: with_budget("envoy+detour+fleet-near", "envoy", "near"),
            "serve+budget": lambda: with_budget("serve+budget", "serve", None),
            "serve+fleet": lambda: with_budget("serve+fleet", "serve", "far"),
        }
        for name in wanted:
            if name not in makers:
                skipped[name] = "unknown target"
                continue
            if name == "litellm" and not (venv_litellm / "bin" / "litellm").exists():
                skipped[name] = f"{venv_litellm}/bin/litellm not installed"
                continue
            try:
                p = makers[name]()
                if p is not upstream:
                    procs.append(p)
                targets_started.append(p)
                print(f"bench: {name} ready on 127.0.0.1:{p.port} (pid {p.pid})", flush=True)
            except Exception as exc:  # noqa: BLE001 - a target that cannot start is reported, not fatal
                skipped[name] = f"did not start: {str(exc)[:300]}"
                print(f"bench: {name} skipped: {exc}", file=sys.stderr, flush=True)
        bodies = {}
        for t in targets_started:
            for kind in ("json", "sse", "fallback"):
                f = workdir / f"body-{t.model(kind)}.json"
                f.write_bytes(request_body(t.model(kind), kind == "sse"))
                bodies[(t.name, kind)] = f
        # Warm-up: connections, JIT, LiteLLM's first-request imports.
        kinds = {kind for _, kind, _ in scenarios}
        for t in targets_started:
            for kind in ("json", "sse", "fallback"):
                if t.supports(kind) and kind in kinds:
                    loadgen.run(f"http://127.0.0.1:{t.port}{t.path(kind)}", bodies[(t.name, kind)], 1.0, 100, 8)
        for rnd in range(rounds):
            order = targets_started[rnd % len(targets_started):] + targets_started[:rnd % len(targets_started)]
            for sname, kind, rate in scenarios:
                for t in order:
                    if not t.supports_point(kind, rate):
                        continue
                    conns = args.max_conns if rate is None else (16 if rate <= 200 else 32)
                    url = f"http://127.0.0.1:{t.port}{t.path(kind)}"
                    ledger: Ledger | None = getattr(t, "ledger", None)
                    near = {}
                    if ledger is not None and ledger.near:
                        near = ledger.set_room(round(rate * (duration + args.prime) * COST_NANOS / args.near_fill))
                    if args.prime > 0:
                        loadgen.run(url, bodies[(t.name, kind)], args.prime, rate, conns)
                    calls0 = ledger.calls() if ledger is not None else None
                    before = cpu_seconds(t.pid)
                    r = loadgen.run(url, bodies[(t.name, kind)], duration, rate, conns)
                    r["cpu_s"] = cpu_seconds(t.pid) - before
                    extra = ""
                    if ledger is not None:
                        calls1 = ledger.calls()
                        delta = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v != calls0.get(k, 0)}
                        r["redis_calls"] = delta
                        # One ledger call (lease or return) is one script: EVALSHA (EVAL when not cached).
                        r["ledger_calls"] = sum(v for k, v in delta.items() if k in ("evalsha", "eval", "fcall"))
                        extra = f" ledger={r['ledger_calls'] / duration:.1f}/s"
                        r.update(near)
                        if near:
                            # Spent in the whole point (prime + measured), priced as the canned usage.
                            r["cost_share_of_room"] = r["ok"] * COST_NANOS / near["room_nanos"]
                            extra += f" room used≈{r['cost_share_of_room']:.0%}(measured part)"
                        ledger.point_done(r)
                    results.setdefault(t.name, {}).setdefault(sname, []).append(r)
                    print(f"bench: round {rnd + 1}/{rounds} {sname:13s} {t.name:13s} p50={fmt_ms(r['p50'])} "
                          f"p99={fmt_ms(r['p99'])} rps={r['rps']:.0f} ok={r['ok']}/{r['total']}{extra}", flush=True)
                    time.sleep(0.5)
        memory = {t.name: {"VmHWM_kib": status_kib(t.pid, "VmHWM"), "VmRSS_kib": status_kib(t.pid, "VmRSS")}
                  for t in targets_started}
    finally:
        for p in reversed(procs):
            p.stop()
        upstream.stop()

    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{ncpu} cores, {platform.processor() or platform.machine()}, {cpu_model()}, "
                   f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB",
        "kernel": platform.release(),
        "versions": {
            "envoy": version_of([str(envoy_bin()), "--version"]),
            "nginx": version_of(["nginx", "-v"]),
            "oha": loadgen.version,
            "detour": version_of([str(detour), "--version"]),
            "litellm": version_of([str(venv_litellm / "bin" / "python"), "-c",
                                   "import importlib.metadata as m; print(m.version('litellm'))"]),
            "redis": version_of([str(redis_binary() or "redis-server"), "--version"]) if fleet_run else None,
        },
        "rounds": rounds, "duration_s": duration, "cores": cores, "max_conns": args.max_conns,
        "workers": "Envoy --concurrency 1, detour serve --workers 1, LiteLLM --num_workers 1",
        "fleet": {"far_dollars": FAR_DOLLARS, "near_dollars": near_dollars, "near_fill": args.near_fill,
                  "sync_interval": "1s", "lease_ttl": "60s", "cost_nanos": COST_NANOS,
                  "prices_per_token": [PRICE_IN, PRICE_OUT]} if fleet_run else None,
        "skipped": skipped, "note": args.note, "scenarios": [n for n, _, _ in scenarios], "prime_s": args.prime, "loadavg_start": load_start, "loadavg_end": loadavg(), "wall_s": round(time.monotonic() - t0, 1),
    }
    report = summarize(results, memory, meta)
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "raw": results, "memory": memory,
                                                      "summary": report["summary"]}, indent=1))
    (out_dir / "results.md").write_text(report["markdown"])
    print(report["markdown"])
    print(f"bench: wrote {out_dir}/results.json and results.md in {meta['wall_s']} s")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


targets_started: list[Proc] = []


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def fmt_ms(v) -> str:
    return "—" if v is None or v != v else f"{v * 1000:.3f}ms"


def summarize(results: dict, memory: dict, meta: dict) -> dict:
    """Per target: medians over rounds of (target − direct) per round, same scenario."""
    summary: dict[str, dict] = {}
    direct = results.get("direct", {})
    for name, scen in results.items():
        s: dict = {}
        for sname, runs in scen.items():
            entry = {"rps": statistics.median(r["rps"] for r in runs),
                     "ok_ratio": sum(r["ok"] for r in runs) / max(1, sum(r["total"] for r in runs))}
            for q in ("p50", "p90", "p99"):
                entry[q] = statistics.median(r[q] for r in runs if r[q] is not None) if any(r[q] is not None for r in runs) else None
                base_kind = "json@" + sname.split("@")[1] if sname.startswith("fallback") else sname
                base = direct.get(base_kind)
                if base and len(base) == len(runs):
                    entry["added_" + q] = statistics.median(r[q] - b[q] for r, b in zip(runs, base))
            ok = sum(r["ok"] for r in runs)
            entry["cpu_us_per_req"] = 1e6 * sum(r["cpu_s"] for r in runs) / ok if ok else None
            entry["not_2xx"] = sum(r["total"] - r["ok"] for r in runs)
            entry["total"] = sum(r["total"] for r in runs)
            if all("ledger_calls" in r for r in runs):
                entry["ledger_calls_per_s"] = statistics.median(r["ledger_calls"] for r in runs) / meta["duration_s"]
            if all("cost_share_of_room" in r for r in runs):
                entry["room_used"] = statistics.median(r["cost_share_of_room"] for r in runs)
                entry["room_nanos"] = statistics.median(r["room_nanos"] for r in runs)
            s[sname] = entry
        s["memory"] = memory.get(name, {})
        summary[name] = s

    def ms(v):
        return "—" if v is None else f"{v * 1000:.3f}"

    order = [n for n in ("direct", "envoy", "envoy+detour", "serve", "litellm", *FLEET_TARGETS) if n in summary]

    def paired(a: str, b: str, sname: str, q: str):
        ra, rb = results.get(a, {}).get(sname), results.get(b, {}).get(sname)
        if not ra or not rb or len(ra) != len(rb) or any(x[q] is None or y[q] is None for x, y in zip(ra, rb)):
            return None
        return statistics.median(x[q] - y[q] for x, y in zip(ra, rb))

    lines = [f"Run: {meta['date']}; {meta['machine']}; kernel {meta['kernel']}; rounds {meta['rounds']} × "
             f"{meta['duration_s']} s per point; pinning {meta['cores'] or 'none'}; {meta['workers']}.", ""]
    lines += [f"Load average (1/5/15 min) at start: {meta['loadavg_start']}; at end: {meta['loadavg_end']}.", ""]
    if meta.get("note"):
        lines += [f"Note: {meta['note']}", ""]
    if meta.get("fleet"):
        f = meta["fleet"]
        lines += [f"Fleet targets: prices ${f['prices_per_token'][0] * 1e6:g}/${f['prices_per_token'][1] * 1e6:g} per M "
                  f"tokens (a request costs ${f['cost_nanos'] / 1e9:.6f}); total budget ${f['far_dollars']:,} (far), "
                  f"${f['near_dollars']:,} for the near target, whose room is set before each point to the point's "
                  f"cost / {f['near_fill']:g}; sync_interval {f['sync_interval']}, lease_ttl {f['lease_ttl']}; "
                  f"{meta['prime_s']:g} s of unmeasured traffic before each point.", ""]
    for label, sname in (("non-streaming, 200 RPS", "json@200"), ("non-streaming, 1,000 RPS", "json@1000"),
                         ("SSE, 200 RPS", "sse@200"), ("SSE, 1,000 RPS", "sse@1000"),
                         ("fallback (primary 503 → secondary), 200 RPS", "fallback@200")):
        if not any(sname in summary[n] for n in order):
            continue
        lines += [f"**{label}** — latency in ms; 'added' is over direct nginx, same round", "",
                  "| target | p50 | p90 | p99 | added p50 | added p90 | added p99 | achieved RPS | 2xx | CPU µs/req |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for n in order:
            e = summary[n].get(sname)
            if not e:
                continue
            cpu_req = "—" if e.get("cpu_us_per_req") is None else f"{e['cpu_us_per_req']:.0f}"
            lines.append(f"| {n} | {ms(e['p50'])} | {ms(e['p90'])} | {ms(e['p99'])} | {ms(e.get('added_p50'))} | "
                         f"{ms(e.get('added_p90'))} | {ms(e.get('added_p99'))} | {e['rps']:.0f} | {e['ok_ratio']:.1%} | {cpu_req} |")
        lines.append("")
    fleet_pairs = [(f, b) for f, b in FLEET_PAIRS if f in summary and b in summary]
    for label, sname in (("non-streaming, 1,000 RPS", "json@1000"), ("non-streaming, 200 RPS", "json@200"),
                         ("SSE, 1,000 RPS", "sse@1000"), ("SSE, 200 RPS", "sse@200")):
        if not fleet_pairs or not any(sname in summary[f] for f, _ in fleet_pairs):
            continue
        lines += [f"**fleet mode against per-process mode, {label}** — ms; 'added' is over direct nginx, same "
                  "round; Δ is fleet − per-process with the same budget, paired per round; median over rounds", "",
                  "| target | added p50 | added p90 | added p99 | Δ p50 | Δ p90 | Δ p99 | ledger calls/s | 2xx | "
                  "not 2xx | near: room used |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        shown = []
        for f, b in fleet_pairs:
            for n, base in ((b, None), (f, b)):
                e = summary[n].get(sname)
                if not e or n in shown:
                    continue
                shown.append(n)
                d = {q: paired(n, base, sname, q) if base else None for q in ("p50", "p90", "p99")}
                calls = e.get("ledger_calls_per_s")
                room = "—" if e.get("room_used") is None else f"{e['room_used']:.0%} of ${e['room_nanos'] / 1e9:.2f}"
                lines.append(
                    f"| {n} | {ms(e.get('added_p50'))} | {ms(e.get('added_p90'))} | {ms(e.get('added_p99'))} | "
                    + " | ".join("—" if d[q] is None else f"{d[q] * 1000:+.3f}" for q in ("p50", "p90", "p99"))
                    + f" | {'—' if calls is None else f'{calls:.1f}'} | {e['ok_ratio']:.2%} | "
                    f"{e['not_2xx']} of {e['total']} | {room} |")
        lines.append("")
    if any("json@max" in summary[n] or "sse@max" in summary[n] for n in order):
        lines += [f"**maximum throughput** — closed loop, {meta['max_conns']} connections, requests/s", "",
                  "| target | non-streaming RPS | SSE RPS | CPU µs/req (non-streaming) | peak memory VmHWM (MiB) |",
                  "|---|---|---|---|---|"]
    for n in order:
        if not ("json@max" in summary[n] or "sse@max" in summary[n]):
            continue
        j, e = summary[n].get("json@max", {}), summary[n].get("sse@max", {})
        mem = summary[n]["memory"].get("VmHWM_kib")
        cpu_req = j.get("cpu_us_per_req")
        lines.append(f"| {n} | {j.get('rps', 0):.0f} | {e.get('rps', 0):.0f} | "
                     f"{'—' if cpu_req is None else f'{cpu_req:.0f}'} | {'—' if mem is None else f'{mem / 1024:.1f}'} |")
    if "envoy+detour" not in summary:
        if meta["skipped"]:
            lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items())]
        return {"summary": summary, "markdown": "\n".join(lines) + "\n"}
    lines += ["", "**against the targets** (paired per round, median over rounds)", "",
              "| target | goal | measured |", "|---|---|---|"]

    for q, goal in (("p50", 0.0001), ("p99", 0.001)):
        v = paired("envoy+detour", "envoy", "json@1000", q)
        lines.append(f"| Envoy+detour over bare Envoy, {q}, 1,000 RPS | ≤ {goal * 1000:g} ms | "
                     f"{'—' if v is None else f'{v * 1000:.3f} ms'} |")
    ed, ll, sv = (summary.get(n, {}).get("json@max", {}).get("rps") for n in ("envoy+detour", "litellm", "serve"))
    lines.append(f"| Envoy+detour max RPS ÷ LiteLLM max RPS | ≥ 20× | {f'{ed / ll:.0f}×' if ed and ll else '—'} |")
    if ed and sv:
        lines.append(f"| detour serve max RPS vs Envoy+detour | within 1.5× | serve = {sv / ed:.2f} × Envoy+detour |")
    v = paired("serve", "envoy+detour", "json@1000", "p50")
    if v is not None:
        lines.append(f"| detour serve p50 − Envoy+detour p50, 1,000 RPS | (within 1.5×) | {v * 1000:+.3f} ms |")
    me, mb = (summary.get(n, {}).get("memory", {}).get("VmHWM_kib") for n in ("envoy+detour", "envoy"))
    if me and mb:
        # Not per worker: V8, the compiled module and the main thread's VM are in it too;
        # `bench/profile.py memory` isolates the per-worker slope.
        lines.append(f"| filter memory with 1 worker (VmHWM Envoy+detour − bare Envoy; per process, includes V8, the "
                     f"compiled module and the main thread's VM; per worker: bench/profile.py memory) | < 10 MiB per "
                     f"worker | {(me - mb) / 1024:.1f} MiB |")
    if meta["skipped"]:
        lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items())]
    return {"summary": summary, "markdown": "\n".join(lines) + "\n"}


if __name__ == "__main__":
    sys.exit(main())
