//! A reply cache in front of any [`domain::Assistant`]: [`CachedAssistant`] answers a question it has
//! already answered in exactly the same context from a [`ReplyCache`] instead of asking the model
//! again.
//!
//! The cache is an optimisation, never a dependency: a store that fails or is slow turns into a miss
//! (bounded by a short timeout), is logged at warn level and counted, and the request goes on to the
//! inner assistant.
//!
//! Stores: [`MemoryReplyCache`] (in-process, bounded, for one replica) and [`RedisReplyCache`]
//! (shared by every replica).

mod assistant;
mod key;
mod memory;
mod metrics;
mod redis;
mod store;

pub use assistant::{CachedAssistant, DEFAULT_OPERATION_TIMEOUT};
pub use key::{cache_key, CacheScope};
pub use memory::MemoryReplyCache;
pub use metrics::describe_metrics;
pub use redis::RedisReplyCache;
pub use store::{CacheError, ReplyCache};
