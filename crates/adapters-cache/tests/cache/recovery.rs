//! The server keeps running through a Redis outage and uses Redis again once it is back, with no
//! restart: a store made with `lazy` while Redis is down, then Redis started, stopped, restarted.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapters_cache::{RedisReplyCache, ReplyCache};

/// A throwaway redis-server on a free port, killed when dropped.
struct OwnRedis {
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Option<OwnRedis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(OwnRedis { child })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether one round trip through `store` works within a short time.
async fn works(store: &RedisReplyCache) -> bool {
    let round_trip = async {
        store.put("k", "v", Duration::from_secs(60)).await?;
        store.get("k").await
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), round_trip).await,
        Ok(Ok(Some(_)))
    )
}

async fn eventually_works(store: &RedisReplyCache) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if works(store).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_lazy_store_recovers_when_redis_comes_back() {
    let port = free_port();
    let store =
        RedisReplyCache::lazy(&format!("redis://127.0.0.1:{port}"), "recovery".into()).unwrap();
    assert!(!works(&store).await, "nothing listens yet");

    let Some(redis) = OwnRedis::start(port) else {
        testkit::cannot_run_without("redis-server", "no binary to test reconnection with");
        return;
    };
    assert!(eventually_works(&store).await, "connects once Redis is up");

    drop(redis);
    assert!(!works(&store).await, "fails while Redis is down");
    let _redis = OwnRedis::start(port).unwrap();
    assert!(eventually_works(&store).await, "reconnects after a restart");
}
