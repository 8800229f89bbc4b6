use std::time::Duration;

use adapters_cache::{MemoryReplyCache, ReplyCache};

const HOUR: Duration = Duration::from_secs(3600);
/// Room for any reply these tests store: only the entry count limits them.
const ROOMY: usize = 1 << 20;

#[tokio::test]
async fn stores_and_replaces_replies() {
    let cache = MemoryReplyCache::new(10, ROOMY);
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache.put("k", "first", HOUR).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("first"));
    cache.put("k", "second", HOUR).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("second"));
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let cache = MemoryReplyCache::new(10, ROOMY);
    cache
        .put("short", "gone soon", Duration::from_secs(1))
        .await
        .unwrap();
    cache.put("long", "stays", HOUR).await.unwrap();
    assert!(cache.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cache.get("short").await.unwrap(), None);
    assert_eq!(cache.get("long").await.unwrap().as_deref(), Some("stays"));
    assert_eq!(cache.len(), 1, "an expired entry is dropped when read");
}

#[tokio::test]
async fn the_least_recently_used_entry_is_evicted_when_full() {
    let cache = MemoryReplyCache::new(3, ROOMY);
    for key in ["a", "b", "c"] {
        cache.put(key, key, HOUR).await.unwrap();
    }
    // Reading "a" makes "b" the least recently used.
    assert!(cache.get("a").await.unwrap().is_some());
    cache.put("d", "d", HOUR).await.unwrap();
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get("b").await.unwrap(), None);
    for key in ["a", "c", "d"] {
        assert_eq!(cache.get(key).await.unwrap().as_deref(), Some(key));
    }
    // Many more entries never grow it past its bound.
    for n in 0..100 {
        cache.put(&format!("k{n}"), "v", HOUR).await.unwrap();
    }
    assert_eq!(cache.len(), 3);
    assert!(cache.get("k99").await.unwrap().is_some());
    assert!(cache.get("k96").await.unwrap().is_none());
}

#[tokio::test]
async fn zero_capacity_stores_nothing() {
    let cache = MemoryReplyCache::new(0, ROOMY);
    cache.put("k", "v", HOUR).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn the_least_recently_used_entries_are_evicted_to_stay_within_the_bytes() {
    // Keys of 2 bytes and replies of 10: room for three entries (the key counted twice).
    let entry = MemoryReplyCache::entry_bytes("k1", "0123456789");
    assert_eq!(entry, 14 + MemoryReplyCache::ENTRY_OVERHEAD_BYTES);
    let cache = MemoryReplyCache::new(100, 3 * entry + 4);
    for key in ["k1", "k2", "k3"] {
        cache.put(key, "0123456789", HOUR).await.unwrap();
    }
    assert_eq!(cache.bytes(), 3 * entry);
    assert!(cache.get("k1").await.unwrap().is_some());
    cache.put("k4", "0123456789", HOUR).await.unwrap();
    assert_eq!(
        cache.get("k2").await.unwrap(),
        None,
        "the least recently used"
    );
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.bytes(), 3 * entry);
    // A larger reply makes room for itself; one larger than the whole budget is not kept.
    let larger = "x".repeat(entry + 5);
    cache.put("k5", &larger, HOUR).await.unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.bytes(),
        entry + MemoryReplyCache::entry_bytes("k5", &larger)
    );
    cache.put("k6", &"x".repeat(3 * entry), HOUR).await.unwrap();
    assert_eq!(cache.get("k6").await.unwrap(), None);
    assert_eq!(cache.len(), 2);
    // Replacing or expiring an entry gives its bytes back.
    cache.put("k5", "short", HOUR).await.unwrap();
    assert_eq!(
        cache.bytes(),
        entry + MemoryReplyCache::entry_bytes("k5", "short")
    );
}
