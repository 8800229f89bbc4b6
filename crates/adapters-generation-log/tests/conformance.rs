//! The shared GenerationLog contracts, in memory and on the real Redis.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_generation_log::{MemoryGenerationLog, RedisGenerationLog};
use domain::GenerationLog;
use redis::Commands;

mod memory {
    use super::*;

    testkit::generation_log_conformance!(async {
        Arc::new(MemoryGenerationLog::new(Duration::from_secs(60))) as Arc<dyn GenerationLog>
    });
}

/// Deletes every key under a test's prefix when the test ends.
struct RedisKeys {
    url: String,
    prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = match connection.scan_match(format!("{}:*", self.prefix)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

/// A log on the real Redis under a prefix of its own, or `None` (loudly) where Redis is absent
/// outside CI.
async fn redis_log() -> Option<(Arc<dyn GenerationLog>, RedisKeys)> {
    let url = std::env::var("CHAT_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("chat-test-{}-{nanos}", std::process::id());
    match RedisGenerationLog::connect(&url, prefix.clone(), Duration::from_secs(60)).await {
        Ok(log) => Some((
            Arc::new(log) as Arc<dyn GenerationLog>,
            RedisKeys { url, prefix },
        )),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Redis is required in CI (set CHAT_TEST_REDIS_URL): {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: Redis not reachable at {url}: {error}");
            None
        }
    }
}

mod redis_streams {
    use super::*;

    testkit::generation_log_conformance!(redis_log());
}
