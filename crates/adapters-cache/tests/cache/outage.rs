use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_cache::{CacheError, CachedAssistant, RedisReplyCache, ReplyCache};
use domain::Assistant;

use crate::support::{context, drain, scope, with_counts, BrokenCache, CountingAssistant};

const HOUR: Duration = Duration::from_secs(3600);
/// Nothing listens there.
const CLOSED: &str = "redis://127.0.0.1:1";

/// Asks four times (whole, streamed, whole, streamed) through `store`; every call must succeed
/// from the inner assistant within `bound`.
async fn ask_through(store: Arc<dyn ReplyCache>, bound: Duration) {
    let inner = CountingAssistant::new();
    let assistant = CachedAssistant::new(inner.clone(), store, scope("m", "p"), HOUR);
    let question = context(&[], "anyone there?");
    for round in 1..=2 {
        let started = Instant::now();
        let reply = assistant.reply(&question).await.unwrap();
        assert!(
            reply.starts_with(&format!("reply {} to", 2 * round - 1)),
            "{reply}"
        );
        assert!(
            started.elapsed() < bound,
            "reply took {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let (pieces, error) = drain(assistant.reply_stream(&question).await.unwrap()).await;
        assert!(error.is_none());
        assert!(pieces
            .concat()
            .starts_with(&format!("reply {} to", 2 * round)));
        assert!(
            started.elapsed() < bound,
            "stream took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(inner.calls(), 4);
}

#[test]
fn an_unreachable_redis_only_costs_misses() {
    let ((), counts) = with_counts(|| async {
        let store = RedisReplyCache::lazy(CLOSED, "chat-test-outage".into()).unwrap();
        ask_through(Arc::new(store), Duration::from_millis(1500)).await;
    });
    assert_eq!(counts.get("assistant_cache_hits_total"), 0);
    assert_eq!(counts.get("assistant_cache_misses_total"), 4);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=get}"), 4);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=put}"), 4);
}

#[test]
fn a_failing_store_only_costs_misses() {
    let ((), counts) = with_counts(|| async {
        ask_through(Arc::new(BrokenCache::Failing), Duration::from_millis(500)).await;
    });
    assert_eq!(counts.get("assistant_cache_misses_total"), 4);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=get}"), 4);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=put}"), 4);
}

#[test]
fn a_slow_store_is_cut_short() {
    let ((), counts) = with_counts(|| async {
        let inner = CountingAssistant::new();
        let assistant = CachedAssistant::new(
            inner.clone(),
            Arc::new(BrokenCache::Slow),
            scope("m", "p"),
            HOUR,
        )
        .with_operation_timeout(Duration::from_millis(50));
        let started = Instant::now();
        assistant.reply(&context(&[], "hurry")).await.unwrap();
        let (_, error) = drain(
            assistant
                .reply_stream(&context(&[], "hurry"))
                .await
                .unwrap(),
        )
        .await;
        assert!(error.is_none());
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(inner.calls(), 2);
    });
    assert_eq!(counts.get("assistant_cache_errors_total{operation=get}"), 2);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=put}"), 2);
}

#[tokio::test]
async fn the_default_timeout_bounds_a_slow_store() {
    let inner = CountingAssistant::new();
    let assistant = CachedAssistant::new(
        inner.clone(),
        Arc::new(BrokenCache::Slow),
        scope("m", "p"),
        HOUR,
    );
    let started = Instant::now();
    assistant.reply(&context(&[], "hurry")).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500),
        "get and put waited: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn connecting_eagerly_to_an_unreachable_redis_fails_quickly() {
    let started = Instant::now();
    let result = RedisReplyCache::connect(CLOSED, "p".into()).await;
    assert!(
        matches!(result, Err(CacheError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_malformed_url_is_refused_without_echoing_it() {
    let error = RedisReplyCache::lazy("nonsense://user:s3cret@host", "p".into()).unwrap_err();
    assert!(matches!(error, CacheError::Config(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    let store = RedisReplyCache::lazy("redis://user:s3cret@127.0.0.1:1", "p".into()).unwrap();
    assert!(!format!("{store:?}").contains("s3cret"));
}
