use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::store::{CacheError, ReplyCache};

/// A [`ReplyCache`] in Redis, shared by every replica: `GET prefix:key` and
/// `SET prefix:key reply EX ttl` (ttl in whole seconds, rounded up, at least 1).
///
/// The connection is a [`ConnectionManager`]: one multiplexed connection, re-established in the
/// background after it breaks. A command issued while Redis is down fails (the caller turns that into
/// a miss); commands succeed again once Redis is back, without a restart.
#[derive(Clone)]
pub struct RedisReplyCache {
    connection: ConnectionManager,
    key_prefix: String,
}

impl fmt::Debug for RedisReplyCache {
    // The connection's own Debug shows the connection info, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplyCache")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplyCache {
    /// Connects now: `Err` if the URL is malformed or Redis cannot be reached (within about a
    /// second). For a server that must start whether or not Redis is up, use [`Self::lazy`].
    pub async fn connect(url: &str, key_prefix: String) -> Result<Self, CacheError> {
        let client = client(url)?;
        let connection = ConnectionManager::new_with_config(client, config())
            .await
            .map_err(unavailable)?;
        Ok(Self {
            connection,
            key_prefix,
        })
    }

    /// Does not connect until the first operation: `Err` only if the URL is malformed. While Redis is
    /// unreachable every operation fails (and [`crate::CachedAssistant`] treats it as a miss); the
    /// connection is made as soon as Redis answers. This is what the server should use.
    ///
    /// Must be called within a Tokio runtime (the connection manager spawns a task).
    pub fn lazy(url: &str, key_prefix: String) -> Result<Self, CacheError> {
        let client = client(url)?;
        let connection =
            ConnectionManager::new_lazy_with_config(client, config()).map_err(unavailable)?;
        Ok(Self {
            connection,
            key_prefix,
        })
    }

    /// The Redis key under which `key` is stored.
    pub fn redis_key(&self, key: &str) -> String {
        if self.key_prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}:{key}", self.key_prefix)
        }
    }
}

fn client(url: &str) -> Result<redis::Client, CacheError> {
    // The URL may hold a password: the message names the problem, never the URL.
    redis::Client::open(url)
        .map_err(|error| CacheError::Config(format!("invalid Redis URL ({:?})", error.kind())))
}

fn config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

fn unavailable(error: redis::RedisError) -> CacheError {
    CacheError::Unavailable(error.to_string())
}

#[async_trait]
impl ReplyCache for RedisReplyCache {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn put(&self, key: &str, reply: &str, ttl: Duration) -> Result<(), CacheError> {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(reply)
            .arg("EX")
            .arg(seconds.max(1))
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}
