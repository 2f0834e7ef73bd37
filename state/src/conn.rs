//! One Redis connection per process, re-established after a failure, with a time limit
//! on every call: the service answers 503 when Redis is down, it never hangs.
//!
//! A multiplexed connection pipelines every caller's commands over one socket, which is
//! what a stateless service in front of Redis wants. After an I/O error, a dropped
//! connection or a timeout the connection is discarded and the next call dials again, so
//! recovery needs no restart.

use std::future::Future;
use std::time::Duration;

use detour_core::ledger::LedgerError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use tokio::sync::Mutex;

/// A Redis endpoint and its (lazily dialled) connection.
#[derive(Debug)]
pub struct Redis {
    client: Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
}

impl Redis {
    /// Parses `url` (`redis://host:port/db`); dials nothing yet.
    pub fn open(url: &str, timeout: Duration) -> Result<Redis, LedgerError> {
        let client = Client::open(url)
            // The URL may carry a password: name the problem, never the URL.
            .map_err(|e| {
                LedgerError::Invalid(format!("the redis url does not parse: {:?}", e.kind()))
            })?;
        Ok(Redis {
            client,
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
        F: FnOnce(MultiplexedConnection) -> Fut,
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

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
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
