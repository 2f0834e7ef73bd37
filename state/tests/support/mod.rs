//! What the state crate's tests share: a private `redis-server`, stopped by PID, and the
//! store adapters the conformance suite runs the in-memory ledger on.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use detour_core::store::{MemoryStore, Store, StoreError};
use detour_host::shared_data::SharedData;

/// A `redis-server` of our own on a free 127.0.0.1 port, without persistence.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
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
        let Some(binary) = redis_binary() else {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
            return None;
        };
        Some(RedisServer::start_on(&binary, free_port()))
    }

    /// Starts one on `port` (used to bring Redis back on the same address).
    pub(crate) fn start_on(binary: &Path, port: u16) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("detour-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
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

/// A [`MemoryStore`] shared by threads, locked per `get`/`set` (not per ledger call), so
/// CAS races between threads really happen.
#[derive(Clone, Default)]
pub(crate) struct Locked(pub(crate) Arc<Mutex<MemoryStore>>);

impl Store for Locked {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.0.lock().unwrap().get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.0.lock().unwrap().set(key, value, cas)
    }
}

/// `detour serve`'s shared data (`detour_host::shared_data::SharedData`, cpp-host's
/// semantics) as the core's [`Store`]: what the filter's `Store` sees on `detour serve`.
#[derive(Clone)]
pub(crate) struct ServeStore {
    pub(crate) data: Arc<SharedData>,
    pub(crate) vm_id: String,
}

impl Store for ServeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.data.get(&self.vm_id, key.as_bytes()))
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match self
            .data
            .set(&self.vm_id, key.as_bytes(), value, cas.unwrap_or(0))
        {
            Ok(()) => Ok(()),
            Err(detour_host::Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(other) => Err(StoreError::Backend {
                message: format!("shared data: {other:?}"),
                transient: false,
            }),
        }
    }
}

/// p50 and p99 of durations, in microseconds.
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_micros()
    };
    (at(0.50), at(0.99))
}
