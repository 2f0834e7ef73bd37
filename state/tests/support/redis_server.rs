//! A private `redis-server` for tests: on a free 127.0.0.1 port, without persistence,
//! stopped by its PID; `SKIPPED` when the binary is absent. Shared by the state crate's
//! tests (through `support`) and the host's (`host/tests/serve_fleet.rs` includes this
//! file by path), so it needs nothing but std.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should fail the test loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "waiting for a real process needs a clock and a sleep"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own on a free 127.0.0.1 port, without persistence.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
    /// Its `requirepass`, if any.
    password: Option<String>,
    dir: PathBuf,
    /// What it is: a plain Redis, a one-node Redis Cluster, or a Sentinel watching a
    /// master (which it keeps alive as long as itself).
    kind: Kind,
}

enum Kind {
    Plain,
    Cluster,
    Sentinel { master: Box<RedisServer> },
}

/// Where `redis-server` is, if installed.
pub(crate) fn redis_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A free port on 127.0.0.1 (the OS's choice; released just before use).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts one, or prints why not and returns `None` when `redis-server` is absent
    /// (`scripts/bootstrap.sh` installs it; CI always has it).
    pub(crate) fn start() -> Option<RedisServer> {
        Self::start_with(None)
    }

    /// [`RedisServer::start`] with `requirepass password`.
    pub(crate) fn start_with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Option<RedisServer> {
        let Some(binary) = redis_binary() else {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
            return None;
        };
        Some(RedisServer::spawn(&binary, free_port(), password))
    }

    /// Starts one on `port` (used to bring Redis back on the same address).
    pub(crate) fn start_on(binary: &Path, port: u16) -> RedisServer {
        RedisServer::spawn(binary, port, None)
    }

    fn spawn(binary: &Path, port: u16, password: Option<&str>) -> RedisServer {
        Self::spawn_with(binary, port, password, &[], Kind::Plain)
    }

    fn spawn_with(
        binary: &Path,
        port: u16,
        password: Option<&str>,
        extra: &[&str],
        kind: Kind,
    ) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("detour-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = RedisServer {
            child: Some(child),
            port,
            password: password.map(str::to_string),
            dir,
            kind,
        };
        server.wait_ready();
        server
    }

    /// A one-node Redis Cluster owning every slot: the cluster protocol (MOVED-aware
    /// client, hash-tagged keys) on one process.
    pub(crate) fn start_cluster() -> Option<RedisServer> {
        let Some(binary) = redis_binary() else {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
            return None;
        };
        let server = Self::spawn_with(
            &binary,
            free_port(),
            None,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ],
            Kind::Cluster,
        );
        assert!(server
            .send("CLUSTER ADDSLOTSRANGE 0 16383")
            .starts_with("+OK"));
        server.wait_for("CLUSTER INFO", "cluster_state:ok");
        Some(server)
    }

    /// A Redis Sentinel on a free port watching a fresh master (as `mymaster`).
    pub(crate) fn start_sentinel() -> Option<RedisServer> {
        let master = Self::start()?;
        let binary = redis_binary()?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("detour-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sentinel = RedisServer {
            child: Some(child),
            port,
            password: None,
            dir,
            kind: Kind::Sentinel {
                master: Box::new(master),
            },
        };
        sentinel.wait_ready();
        sentinel.wait_for("SENTINEL get-master-addr-by-name mymaster", "127.0.0.1");
        Some(sentinel)
    }

    /// The URL `detour state` takes for it: `redis://` (with `:<password>@` when it has
    /// one), `redis+cluster://` or `redis+sentinel://…/mymaster/0`.
    pub(crate) fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        match &self.kind {
            Kind::Plain => format!("redis://{auth}127.0.0.1:{}/0", self.port),
            Kind::Cluster => format!("redis+cluster://{auth}127.0.0.1:{}", self.port),
            Kind::Sentinel { .. } => format!("redis+sentinel://127.0.0.1:{}/mymaster/0", self.port),
        }
    }

    /// Sends one inline command and returns what arrives within half a second.
    fn send(&self, command: &str) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream
            .write_all(format!("{command}\r\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        let mut reply = vec![0u8; 8192];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(reply.get(..n).unwrap_or_default()).into_owned()
    }

    /// Waits until `command`'s reply contains `expected`.
    fn wait_for(&self, command: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.send(command).contains(expected) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{command} on port {} never said {expected}", self.port);
    }

    /// Waits for `+PONG` (after `AUTH` when it has a password).
    fn wait_ready(&self) {
        let (hello, expected) = match &self.password {
            Some(password) => (format!("AUTH {password}\r\nPING\r\n"), "+OK\r\n+PONG\r\n"),
            None => ("PING\r\n".to_string(), "+PONG\r\n"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut reply = vec![0u8; expected.len()];
                if stream.write_all(hello.as_bytes()).is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && reply == expected.as_bytes()
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    /// Kills the server by its PID and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
