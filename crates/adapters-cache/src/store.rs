use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

/// What a [`ReplyCache`] can fail with. The messages never contain cached text or credentials.
#[derive(Debug, Error)]
pub enum CacheError {
    /// The store's settings are unusable (a malformed URL, for instance).
    #[error("the reply cache is misconfigured: {0}")]
    Config(String),
    /// The store cannot be reached or refused the operation; retrying later may succeed.
    #[error("the reply cache is unavailable: {0}")]
    Unavailable(String),
}

/// Where replies are kept, by key. Keys are opaque strings made by [`crate::cache_key`].
#[async_trait]
pub trait ReplyCache: Send + Sync {
    /// The reply stored under `key`, or `None` if there is none or it has expired.
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError>;

    /// Stores `reply` under `key`, replacing any previous one; it MUST NOT be returned by `get`
    /// once `ttl` has passed.
    async fn put(&self, key: &str, reply: &str, ttl: Duration) -> Result<(), CacheError>;
}
