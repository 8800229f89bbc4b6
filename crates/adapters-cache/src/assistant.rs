use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::{is_blank_reply, Assistant, AssistantError, DeltaStream, ReplyContext};
use futures::stream::{self, StreamExt};

use crate::key::{cache_key, CacheScope};
use crate::metrics;
use crate::store::{CacheError, ReplyCache};

/// How long one cache operation may take before it counts as failed (a miss, for a lookup).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(250);

/// An [`Assistant`] that remembers replies: the same user text after the same history, for the same
/// model and system prompt, is answered from the [`ReplyCache`] without asking `inner`.
///
/// Only whole, successful, non-empty replies are stored; a stream that ends in an error stores
/// nothing. The cache never fails a request: a store error or a store slower than the operation
/// timeout is logged at warn level (without message contents), counted in
/// `assistant_cache_errors_total{operation}`, and the call goes on as on a miss.
#[derive(Clone)]
pub struct CachedAssistant {
    inner: Arc<dyn Assistant>,
    store: Store,
    scope: CacheScope,
    ttl: Duration,
}

impl fmt::Debug for CachedAssistant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAssistant")
            .field("scope", &self.scope)
            .field("ttl", &self.ttl)
            .field("operation_timeout", &self.store.timeout)
            .finish_non_exhaustive()
    }
}

impl CachedAssistant {
    /// Replies are kept for `ttl`; a zero `ttl` stores nothing (every call is a miss).
    /// `key_scope` must name what else decides a reply: the inner assistant's model and system prompt.
    pub fn new(
        inner: Arc<dyn Assistant>,
        store: Arc<dyn ReplyCache>,
        key_scope: CacheScope,
        ttl: Duration,
    ) -> Self {
        Self {
            inner,
            store: Store {
                cache: store,
                timeout: DEFAULT_OPERATION_TIMEOUT,
            },
            scope: key_scope,
            ttl,
        }
    }

    /// Bounds each cache operation by `timeout` instead of [`DEFAULT_OPERATION_TIMEOUT`].
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.store.timeout = timeout;
        self
    }
}

/// The store with its time limit, cheap to clone into a stream.
#[derive(Clone)]
struct Store {
    cache: Arc<dyn ReplyCache>,
    timeout: Duration,
}

impl Store {
    /// The cached reply, or `None` on a miss, an error or a timeout.
    async fn lookup(&self, key: &str) -> Option<String> {
        match self.bounded("get", self.cache.get(key)).await {
            Some(Some(reply)) if !is_blank_reply(&reply) => {
                metrics::hit();
                Some(reply)
            }
            _ => {
                metrics::miss();
                None
            }
        }
    }

    async fn store(&self, key: &str, reply: &str, ttl: Duration) {
        // A blank reply fails its request; cached, it would fail every repeat without asking.
        if is_blank_reply(reply) || ttl.is_zero() {
            return;
        }
        self.bounded("put", self.cache.put(key, reply, ttl)).await;
    }

    /// Runs one cache operation within the time limit; `None` (logged and counted) if it failed.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::warn!(operation, %error, "reply cache operation failed; going on without it");
                metrics::error(operation);
                None
            }
            Err(_) => {
                tracing::warn!(
                    operation,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "reply cache operation timed out; going on without it"
                );
                metrics::error(operation);
                None
            }
        }
    }
}

#[async_trait]
impl Assistant for CachedAssistant {
    fn context_messages(&self) -> usize {
        self.inner.context_messages()
    }

    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        let key = cache_key(&self.scope, context);
        if let Some(reply) = self.store.lookup(&key).await {
            return Ok(reply);
        }
        let reply = self.inner.reply(context).await?;
        self.store.store(&key, &reply, self.ttl).await;
        Ok(reply)
    }

    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        let key = cache_key(&self.scope, context);
        if let Some(reply) = self.store.lookup(&key).await {
            return Ok(stream::iter(domain::stream_pieces(&reply).into_iter().map(Ok)).boxed());
        }
        let inner = self.inner.reply_stream(context).await?;
        let relay = Relay {
            inner,
            reply: String::new(),
            store: self.store.clone(),
            key,
            ttl: self.ttl,
        };
        Ok(stream::unfold(Some(relay), |relay| async move {
            let mut relay = relay?;
            match relay.inner.next().await {
                Some(Ok(piece)) => {
                    relay.reply.push_str(&piece);
                    Some((Ok(piece), Some(relay)))
                }
                // The stream ended in failure: what came before is not a reply, store nothing.
                Some(Err(error)) => Some((Err(error), None)),
                None => {
                    relay.store.store(&relay.key, &relay.reply, relay.ttl).await;
                    None
                }
            }
        })
        .boxed())
    }
}

/// A miss being streamed: the pieces relayed so far, stored once the stream ends well.
struct Relay {
    inner: DeltaStream,
    reply: String,
    store: Store,
    key: String,
    ttl: Duration,
}
