//! The shared Assistant contracts hold for the decorator, whatever its store does.

use std::sync::Arc;
use std::time::Duration;

use adapters_cache::{CachedAssistant, MemoryReplyCache, RedisReplyCache, ReplyCache};

use crate::support::{scope, test_redis, BrokenCache, CountingAssistant};

fn over(store: Arc<dyn ReplyCache>) -> Arc<CachedAssistant> {
    Arc::new(CachedAssistant::new(
        CountingAssistant::new(),
        store,
        scope("m", "p"),
        Duration::from_secs(60),
    ))
}

mod memory {
    use super::*;

    testkit::assistant_conformance!(async { over(Arc::new(MemoryReplyCache::new(100, 1 << 20))) });
}

mod redis {
    use super::*;

    testkit::assistant_conformance!(async {
        test_redis("conformance").await.map(|redis| {
            let store: Arc<dyn ReplyCache> = Arc::new(redis.store.clone());
            (over(store), redis)
        })
    });
}

mod redis_down {
    use super::*;

    testkit::assistant_conformance!(async {
        over(Arc::new(
            RedisReplyCache::lazy("redis://127.0.0.1:1", "unused".into()).unwrap(),
        ))
    });
}

mod failing_store {
    use super::*;

    testkit::assistant_conformance!(async { over(Arc::new(BrokenCache::Failing)) });
}
