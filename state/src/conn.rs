//! One Redis connection per process, re-established after a failure, with a time limit
//! on every call: the service answers 503 when Redis is down, it never hangs.
//!
//! A multiplexed connection pipelines every caller's commands over one socket, which is
//! what a stateless service in front of Redis wants. After an I/O error, a dropped
//! connection or a timeout the connection is discarded and the next call dials again, so
//! recovery needs no restart.
//!
//! Three kinds of endpoint, by URL scheme:
//! - `redis://[:password@]host:port/db`: one Redis (or Valkey, or a managed Redis);
//! - `redis+cluster://[:password@]host:port,host:port,…`: Redis Cluster, through the
//!   cluster client (every ledger key carries one hash tag, so a script's keys share a
//!   slot);
//! - `redis+sentinel://[:password@]host:port,host:port,…/master-name[/db]`: the master
//!   that Redis Sentinel names, asked again at every (re)dial, so a failover is followed.

use std::future::Future;
use std::time::Duration;

use detour_core::ledger::LedgerError;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};
use tokio::sync::Mutex;

/// Where Redis is.
enum Endpoint {
    Single(Client),
    Cluster(ClusterClient),
    Sentinel(Mutex<SentinelClient>),
}

impl std::fmt::Debug for Endpoint {
    // The URLs may carry a password: say the kind only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Endpoint::Single(_) => "Single",
            Endpoint::Cluster(_) => "Cluster",
            Endpoint::Sentinel(_) => "Sentinel",
        })
    }
}

/// A connection of either kind; scripts and commands run on it alike.
#[derive(Clone)]
pub enum Conn {
    /// One Redis (or Sentinel's master).
    Single(MultiplexedConnection),
    /// Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Conn::Single",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis endpoint and its (lazily dialled) connection.
#[derive(Debug)]
pub struct Redis {
    endpoint: Endpoint,
    conn: Mutex<Option<Conn>>,
    timeout: Duration,
}

/// Why a URL does not parse, without the URL (it may carry a password).
fn invalid(e: &RedisError) -> LedgerError {
    LedgerError::Invalid(format!("the redis url does not parse: {:?}", e.kind()))
}

/// `[:password@]host:port,host:port…` → (`:password@` or empty, the hosts).
fn split_nodes(rest: &str) -> (String, Vec<String>) {
    match rest.rsplit_once('@') {
        Some((auth, nodes)) => (
            format!("{auth}@"),
            nodes.split(',').map(str::to_string).collect(),
        ),
        None => (String::new(), rest.split(',').map(str::to_string).collect()),
    }
}

impl Redis {
    /// Parses `url` (see the module doc for the schemes); dials nothing yet.
    pub fn open(url: &str, timeout: Duration) -> Result<Redis, LedgerError> {
        let endpoint = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, nodes) = split_nodes(rest.trim_end_matches('/'));
            let nodes: Vec<String> = nodes
                .iter()
                .map(|node| format!("redis://{auth}{node}"))
                .collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(|e| invalid(&e))?;
            Endpoint::Cluster(client)
        } else if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, path) = rest.split_once('/').ok_or_else(|| {
                LedgerError::Invalid("a sentinel url names its master: …/master-name".into())
            })?;
            let (master, db) = match path.trim_end_matches('/').split_once('/') {
                Some((master, db)) => (master, db),
                None => (path.trim_end_matches('/'), "0"),
            };
            if master.is_empty() {
                return Err(LedgerError::Invalid(
                    "a sentinel url names its master: …/master-name".into(),
                ));
            }
            let (auth, sentinels) = split_nodes(hosts);
            let sentinels: Vec<String> = sentinels
                .iter()
                .map(|node| format!("redis://{node}"))
                .collect();
            // The master's password and database, as a single-Redis URL would carry them.
            let master_info = format!("redis://{auth}sentinel-master/{db}")
                .as_str()
                .into_connection_info()
                .map_err(|e| invalid(&e))?;
            let node_info = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(master_info.redis_settings().clone());
            let client = SentinelClient::build(
                sentinels,
                master.to_string(),
                Some(node_info),
                SentinelServerType::Master,
            )
            .map_err(|e| invalid(&e))?;
            Endpoint::Sentinel(Mutex::new(client))
        } else {
            Endpoint::Single(Client::open(url).map_err(|e| invalid(&e))?)
        };
        Ok(Redis {
            endpoint,
            conn: Mutex::new(None),
            timeout,
        })
    }

    /// The time limit of one call, dialling included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `op` on the connection within the time limit. Connection trouble becomes a
    /// transient [`LedgerError::Backend`] and drops the connection; an error Redis itself
    /// answered (a script error) is not transient.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, LedgerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.connection().await?;
            op(conn).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let transient = is_connection_trouble(&err);
                if transient {
                    self.forget().await;
                }
                Err(LedgerError::Backend {
                    message: format!("redis: {err}"),
                    transient,
                })
            }
            Err(_) => {
                self.forget().await;
                Err(LedgerError::Backend {
                    message: format!(
                        "redis did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                    transient: true,
                })
            }
        }
    }

    async fn connection(&self) -> RedisResult<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = match &self.endpoint {
            Endpoint::Single(client) => Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            Endpoint::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Endpoint::Sentinel(sentinel) => {
                // Asked at every dial: after a failover the next dial finds the new master.
                let master = sentinel.lock().await.async_get_client().await?;
                Conn::Single(
                    master
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }
}

fn is_connection_trouble(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}
