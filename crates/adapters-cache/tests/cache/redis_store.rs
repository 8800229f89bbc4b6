use std::sync::Arc;
use std::time::Duration;

use adapters_cache::{CachedAssistant, RedisReplyCache, ReplyCache};
use domain::{Assistant, Role};

use crate::support::{context, drain, keys_under, redis_url, scope, test_redis, CountingAssistant};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn stores_replies_under_the_prefix_with_a_ttl() {
    let Some(redis) = test_redis("store").await else {
        return;
    };
    assert_eq!(redis.store.get("k").await.unwrap(), None);
    redis.store.put("k", "a reply ✓", HOUR).await.unwrap();
    assert_eq!(
        redis.store.get("k").await.unwrap().as_deref(),
        Some("a reply ✓")
    );
    redis.store.put("k", "replaced", HOUR).await.unwrap();
    assert_eq!(
        redis.store.get("k").await.unwrap().as_deref(),
        Some("replaced")
    );
    assert_eq!(redis.keys().await, vec![format!("{}:k", redis.prefix)]);

    // The key carries the ttl, so Redis drops it by itself.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}:k", redis.prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");

    // Another prefix sees nothing of this one.
    let other = RedisReplyCache::connect(&redis_url(), format!("{}-other", redis.prefix))
        .await
        .unwrap();
    assert_eq!(other.get("k").await.unwrap(), None);
    // Dropping the test's handle deletes its keys.
    let prefix = redis.prefix.clone();
    drop(redis);
    assert!(keys_under(&prefix).await.is_empty());
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let Some(redis) = test_redis("expiry").await else {
        return;
    };
    redis
        .store
        .put("short", "gone soon", Duration::from_secs(1))
        .await
        .unwrap();
    // A ttl under a second is rounded up, never to 0 (which Redis refuses).
    redis
        .store
        .put("tiny", "gone soon", Duration::from_millis(10))
        .await
        .unwrap();
    assert!(redis.store.get("short").await.unwrap().is_some());
    assert!(redis.store.get("tiny").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(redis.store.get("short").await.unwrap(), None);
    assert_eq!(redis.store.get("tiny").await.unwrap(), None);
}

/// Two replicas with their own assistant share one Redis: what one learnt, the other serves.
#[tokio::test]
async fn replicas_share_cached_replies() {
    let Some(redis) = test_redis("replicas").await else {
        return;
    };
    let first_inner = CountingAssistant::new();
    let second_inner = CountingAssistant::new();
    let store = Arc::new(redis.store.clone());
    let first = CachedAssistant::new(first_inner.clone(), store.clone(), scope("m", "p"), HOUR);
    let second = CachedAssistant::new(second_inner.clone(), store, scope("m", "p"), HOUR);
    let question = context(
        &[(Role::User, "hi"), (Role::Assistant, "hello")],
        "and now?",
    );

    let (pieces, error) = drain(first.reply_stream(&question).await.unwrap()).await;
    assert!(error.is_none());
    assert_eq!(second.reply(&question).await.unwrap(), pieces.concat());
    let (again, _) = drain(second.reply_stream(&question).await.unwrap()).await;
    assert_eq!(again.concat(), pieces.concat());
    assert_eq!((first_inner.calls(), second_inner.calls()), (1, 0));

    // A different model on the same Redis does not see it.
    let other_model = CachedAssistant::new(
        second_inner.clone(),
        Arc::new(redis.store.clone()),
        scope("m2", "p"),
        Duration::from_secs(1),
    );
    other_model.reply(&question).await.unwrap();
    assert_eq!(second_inner.calls(), 1);
    assert_eq!(redis.keys().await.len(), 2);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    other_model.reply(&question).await.unwrap();
    assert_eq!(second_inner.calls(), 2, "expired in Redis");
}
