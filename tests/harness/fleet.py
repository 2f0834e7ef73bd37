"""Fleet mode's extra processes for the end-to-end suite: a private `redis-server` and
`detour state` (the fleet ledger's HTTP JSON API), each on a free 127.0.0.1 port, started
here and stopped here by PID, with bounded waits (as the rest of the harness does)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import detour_binary, stop_process, wait_for


def free_port() -> int:
    """A port of 127.0.0.1 free right now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> Path | None:
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    return Path(found) if Path(found).exists() else None


class RedisServer:
    """A private redis-server. `durable` keeps its data across a crash and a restart on
    the same port (AOF, fsync on every write); otherwise nothing is written to disk."""

    def __init__(self, workdir: Path, durable: bool = False):
        self.workdir = workdir
        self.durable = durable
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "redis.log"

    def start(self) -> "RedisServer":
        exe = redis_binary()
        if exe is None:
            raise RuntimeError("redis-server not found: run scripts/bootstrap.sh or set REDIS_SERVER")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Same port on a restart: the state service and `detour serve` keep their URL.
        for attempt in range(20):
            port = self.port or free_port()
            cmd = [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
            if self.durable:
                cmd += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                cmd += ["--appendonly", "no"]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: self._pings(port), 10, "redis-server", self.proc, self.log)
            except RuntimeError:
                # Lost the port to someone else between the probe and the bind: next one.
                if self.port:
                    time.sleep(0.2)
                    if attempt < 19:
                        continue
                    raise
                continue
            self.port = port
            return self
        raise RuntimeError("redis-server: no port to listen on")

    def _pings(self, port: int) -> bool:
        try:
            return self.command("PING", port=port) == "PONG"
        except OSError:
            return False

    def command(self, *args: str, port: int | None = None):
        """One command over RESP (no client library needed); simple answers only."""
        return redis_command(port or self.port, *args)

    def hgetall(self, key: str) -> dict[str, str]:
        flat = self.command("HGETALL", key) or []
        return dict(zip(flat[0::2], flat[1::2]))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def crash(self) -> None:
        """SIGKILL, as a crash (with `durable`, every acknowledged write is on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)


def redis_command(port: int, *args, timeout: float = 2.0):
    """One command to the Redis on 127.0.0.1:`port` over RESP, its answer decoded."""
    words = [str(a).encode() for a in args]
    payload = f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n".encode() + w + b"\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return read_resp(s.makefile("rb"))


def read_resp(reader):
    line = reader.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = reader.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_resp(reader) for _ in range(n)]
    raise OSError(f"redis: unexpected answer {line!r}")


class DetourState:
    """`detour state` on one Redis: the fleet ledger's HTTP JSON API (the port from its
    `--ready-file`)."""

    def __init__(self, workdir: Path, redis_url: str, redis_timeout_ms: int = 500):
        self.workdir = workdir
        self.redis_url = redis_url
        self.redis_timeout_ms = redis_timeout_ms
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "DetourState":
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "state.ready"
        ready.unlink(missing_ok=True)
        self.log = self.workdir / "state.log"
        cmd = [
            str(detour_binary()), "state", "--redis", self.redis_url,
            "--listen", "127.0.0.1:0", "--ready-file", str(ready),
            "--redis-timeout-ms", str(self.redis_timeout_ms),
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        text = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "detour state ready", self.proc, self.log)
        self.port = int(json.loads(text)["listen"].rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def account(self, scope: str) -> dict:
        """`{"scope", "spent_nanos", "reserved_nanos"}` of a ledger scope key."""
        query = urllib.request.quote(scope, safe="")
        with urllib.request.urlopen(f"{self.url}/v1/account?scope={query}", timeout=5) as resp:
            return json.loads(resp.read())
