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
        let dir = std::env::temp_dir().join(format!("detour-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir);
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
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>/0`, with `:<password>@` when it has one.
    pub(crate) fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
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
