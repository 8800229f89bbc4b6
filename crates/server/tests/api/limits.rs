//! Limits on what a client controls: request rate, open streams, trusted proxies, and overload of
//! the storage writer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::Environment;
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Slow refill, so no token comes back while a test runs.
fn limited(burst: u32) -> crate::helpers::TestAppBuilder {
    TestApp::builder()
        .with("CHAT__RATE_LIMIT__PER_SECOND", "0.1")
        .with("CHAT__RATE_LIMIT__BURST", burst)
}

async fn get_from(app: &TestApp, path: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.expect("request sent")
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn rate_limiting_is_off_by_default() {
    let app = TestApp::spawn().await;
    for _ in 0..100 {
        assert_eq!(
            get_from(&app, "/api/v1/conversations", None).await.status(),
            200
        );
    }
}

#[tokio::test]
async fn a_burst_is_served_then_429_with_retry_after() {
    let app = limited(3).spawn().await;
    for _ in 0..3 {
        assert_eq!(
            get_from(&app, "/api/v1/conversations", None).await.status(),
            200
        );
    }
    let response = get_from(&app, "/api/v1/conversations", None).await;
    assert_eq!(response.status(), 429);
    let wait = retry_after(&response);
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    // The seed routes keep the seed error shape: no `code`.
    let response = app
        .post_json("/chat/message", &json!({"message": "hello"}))
        .await;
    assert_eq!(response.status(), 429);
    retry_after(&response);
    assert_seed_error_shape(&response.json().await.unwrap());
}

/// The original app's error body: `status` and `message`, and no `code`.
fn assert_seed_error_shape(body: &Value) {
    let keys: HashSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["status", "message"]), "{body}");
    assert_eq!(body["status"], "error");
}

#[tokio::test]
async fn only_the_api_is_limited_not_probes_metrics_docs_or_the_web_client() {
    let app = limited(1).spawn().await;
    assert_eq!(
        get_from(&app, "/api/v1/conversations", None).await.status(),
        200
    );
    assert_eq!(
        get_from(&app, "/api/v1/conversations", None).await.status(),
        429
    );
    for _ in 0..30 {
        for path in ["/healthz", "/readyz"] {
            assert_eq!(get_from(&app, path, None).await.status(), 200, "{path}");
        }
        for path in ["/metrics", "/", "/assets/index.js", "/openapi.json"] {
            assert_ne!(get_from(&app, path, None).await.status(), 429, "{path}");
        }
    }
    assert_eq!(get_from(&app, "/chat/history", None).await.status(), 429);
    // Percent-encoding reaches the same route, so it is limited the same.
    for path in ["/%61pi/v1/conversations", "/%63hat/history"] {
        assert_eq!(get_from(&app, path, None).await.status(), 429, "{path}");
    }
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    // Untrusted peer: every request is the peer's, whatever it claims.
    let app = limited(1).spawn().await;
    assert_eq!(
        get_from(&app, "/api/v1/conversations", Some("198.51.100.1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_from(&app, "/api/v1/conversations", Some("198.51.100.2"))
            .await
            .status(),
        429
    );
    assert_eq!(
        get_from(&app, "/api/v1/conversations", None).await.status(),
        429
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = limited(1)
        .with(
            "CHAT__RATE_LIMIT__TRUSTED_PROXIES",
            "127.0.0.0/8,10.0.0.0/8",
        )
        .spawn()
        .await;
    let path = "/api/v1/conversations";
    assert_eq!(
        get_from(&app, path, Some("198.51.100.1")).await.status(),
        200
    );
    assert_eq!(
        get_from(&app, path, Some("198.51.100.1")).await.status(),
        429
    );
    assert_eq!(
        get_from(&app, path, Some("198.51.100.2")).await.status(),
        200
    );
    // A client cannot escape its limit by prepending an address: the right-most untrusted hop
    // counts, past the trusted 10.0.0.7.
    assert_eq!(
        get_from(&app, path, Some("203.0.113.50, 198.51.100.1, 10.0.0.7"))
            .await
            .status(),
        429
    );
    // No header: the proxy itself is the client.
    assert_eq!(get_from(&app, path, None).await.status(), 200);
    assert_eq!(get_from(&app, path, None).await.status(), 429);
}

#[tokio::test]
async fn an_ipv6_client_is_limited_as_its_64_not_per_address() {
    let app = limited(1)
        .with("CHAT__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.0/8")
        .spawn()
        .await;
    let path = "/api/v1/conversations";
    let from = |client: &'static str| get_from(&app, path, Some(client));
    assert_eq!(from("2001:db8:1:2::1").await.status(), 200);
    assert_eq!(
        from("2001:db8:1:2:abcd::99").await.status(),
        429,
        "another address of the same /64 is the same client"
    );
    assert_eq!(from("2001:db8:1:3::1").await.status(), 200);
}

#[test]
fn bad_limit_settings_name_the_key() {
    let directory = tempfile::tempdir().unwrap();
    for (key, value, named) in [
        (
            "CHAT__RATE_LIMIT__TRUSTED_PROXIES",
            "10.0.0.0/99",
            "rate_limit.trusted_proxies",
        ),
        (
            "CHAT__RATE_LIMIT__TRUSTED_PROXIES",
            "proxy.local",
            "rate_limit.trusted_proxies",
        ),
        (
            "CHAT__RATE_LIMIT__PER_SECOND",
            "-1",
            "rate_limit.per_second",
        ),
        ("CHAT__RATE_LIMIT__BURST", "0", "rate_limit.burst"),
    ] {
        let mut variables = std::collections::HashMap::from([(key.to_owned(), value.to_owned())]);
        if key != "CHAT__RATE_LIMIT__PER_SECOND" {
            variables.insert("CHAT__RATE_LIMIT__PER_SECOND".to_owned(), "5".to_owned());
        }
        let error = server::Settings::load_from(
            directory.path(),
            None,
            Environment::default().source(Some(variables)),
        )
        .expect_err(key);
        assert!(error.to_string().contains(named), "{key}={value}: {error}");
    }
}

/// At most `max_streams` streams per client, and replies that take 100 ms a word.
fn slowly_streaming(max_streams: usize) -> crate::helpers::TestAppBuilder {
    TestApp::builder()
        .with("CHAT__LIMITS__MAX_STREAMS_PER_CLIENT", max_streams)
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 100)
}

/// Streams a reply of `words` words (the deterministic dummy echoes the text).
async fn open_stream_of(
    app: &TestApp,
    conversation: &str,
    forwarded_for: Option<&str>,
    words: usize,
) -> reqwest::Response {
    let content = vec!["word"; words].join(" ");
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{conversation}/messages")))
        .header("accept", "text/event-stream")
        .json(&json!({ "content": content }));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.expect("request sent")
}

/// A reply that streams for several seconds at the test's word delay.
async fn open_stream(
    app: &TestApp,
    conversation: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    open_stream_of(app, conversation, forwarded_for, 100).await
}

#[tokio::test]
async fn open_streams_per_client_are_limited_and_freed_when_a_stream_ends() {
    let app = slowly_streaming(2)
        .with("CHAT__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1")
        .spawn()
        .await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();

    let first = open_stream_of(&app, id, None, 3).await;
    assert_eq!(first.status(), 200);
    let second = open_stream(&app, id, None).await;
    assert_eq!(second.status(), 200);
    let refused = open_stream(&app, id, None).await;
    assert_eq!(refused.status(), 429);
    // Resuming always answers with a stream, so it counts whatever the request accepts.
    let resume = app
        .client
        .get(app.url(&format!("/api/v1/conversations/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resume.status(),
        429,
        "a resume without Accept is limited too"
    );
    retry_after(&refused);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["code"], "too_many_streams");

    // Another client is not affected, and neither are plain requests of this one.
    let other = open_stream(&app, id, Some("198.51.100.9")).await;
    assert_eq!(other.status(), 200);
    drop(other);
    app.send(id, "not streamed").await;
    // Nor are requests that cannot stream, whatever they accept.
    for path in [
        "/healthz".to_owned(),
        format!("/api/v1/conversations/{id}/messages"),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let seed = app
        .client
        .post(app.url("/chat/message"))
        .header("accept", "text/event-stream")
        .json(&json!({"message": "seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(seed.status(), 200);

    // Reading a stream to its end frees its slot.
    let text = first.text().await.unwrap();
    assert!(text.contains("event: done"), "{text}");
    let third = open_stream(&app, id, None).await;
    assert_eq!(third.status(), 200);
    assert_eq!(open_stream(&app, id, None).await.status(), 429);

    drop(second);
    drop(third);
}

/// Hanging up does not give the slot back while the reply runs on: otherwise a client could
/// start any number of replies by hanging up at once.
#[tokio::test]
async fn a_client_that_hangs_up_gets_its_slot_back_when_its_reply_ends() {
    let app = slowly_streaming(1).spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();

    let hung_up = Instant::now();
    drop(open_stream_of(&app, id, None, 12).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = open_stream(&app, id, None).await;
    assert_eq!(
        refused.status(),
        429,
        "the reply of the dropped stream still runs"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        let response = open_stream_of(&app, id, None, 3).await;
        if response.status() == 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        hung_up.elapsed() >= Duration::from_millis(800),
        "back only once the reply of twelve words ended ({:?})",
        hung_up.elapsed()
    );
    let text = reopened.text().await.unwrap();
    assert!(text.contains("event: done"), "{text}");
}

/// A tab reloaded or closed while the model thinks leaves a stream the server cannot tell is gone,
/// as nothing is written to it. At its limit, a client's streams are made to write before it is
/// refused, and those whose connection is closed give their slots back.
#[tokio::test]
async fn streams_gone_while_nothing_is_written_give_their_slots_back_before_a_refusal() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_STREAMS_PER_CLIENT", 3)
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 60_000)
        .spawn()
        .await;
    let id = app.new_conversation().await;
    let reply = open_stream_of(&app, &id, None, 3).await;
    assert_eq!(reply.status(), 200);
    let path = format!("/api/v1/conversations/{id}/stream");
    let follow = || {
        app.client
            .get(app.url(&path))
            .header("accept", "text/event-stream")
            .send()
    };
    let reloaded = [follow().await.unwrap(), follow().await.unwrap()];
    assert!(reloaded.iter().all(|tab| tab.status() == 200));
    drop(reloaded);

    let asked = Instant::now();
    let followed = follow().await.unwrap();
    assert_eq!(
        followed.status(),
        200,
        "refused for streams whose client is gone"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let another = follow().await.unwrap();
    assert_eq!(another.status(), 200);
    // Streams whose client is still there keep their slots.
    assert_eq!(follow().await.unwrap().status(), 429);
    drop((reply, followed, another));
}

#[tokio::test]
async fn a_head_of_a_reply_being_followed_holds_no_stream_slot() {
    let app = slowly_streaming(2).spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let reply = open_stream(&app, id, None).await;
    assert_eq!(reply.status(), 200);
    let path = format!("/api/v1/conversations/{id}/stream");
    let head = app.client.head(app.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    // The reply streams for seconds more; the HEAD's slot is free already.
    let follow = app
        .client
        .get(app.url(&path))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200, "the HEAD still holds a stream slot");
    drop(follow);
    drop(reply);
}

#[tokio::test]
async fn a_full_sqlite_writer_queue_answers_503_with_retry_after_at_once() {
    let app = TestApp::builder()
        .with("CHAT__STORAGE__WRITE_QUEUE_CAPACITY", 1)
        .with("CHAT__STORAGE__MAX_BATCH", 1)
        .with("CHAT__SERVER__WORKERS", 4)
        .spawn()
        .await;
    let sends = (0..200).map(|i| {
        let (client, url) = (app.client.clone(), app.url("/chat/message"));
        async move {
            let text = format!("queued {i}");
            let started = Instant::now();
            let response = client
                .post(url)
                .json(&json!({"message": text}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap();
            (text, status, retry, body, started.elapsed())
        }
    });
    let results = futures::future::join_all(sends).await;
    let mut acknowledged = HashSet::new();
    let mut overloaded = 0;
    for (text, status, retry, body, elapsed) in results {
        match status {
            200 => {
                acknowledged.insert(text);
            }
            503 => {
                overloaded += 1;
                assert!(retry, "503 without Retry-After");
                assert_eq!(body["status"], "error");
                assert!(body.get("code").is_none(), "seed shape: {body}");
                // Not queued behind the writer (200 writes one by one); roomy for a loaded CI.
                assert!(elapsed < Duration::from_secs(5), "503 took {elapsed:?}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(overloaded > 0, "the queue never filled");
    assert!(!acknowledged.is_empty(), "nothing got through");
    let stored: HashSet<String> = app.history_users().await.into_iter().collect();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged exchanges are stored"
    );
}

/// A refused seed send can be sent again; a streamed reply refused at its end would be text the
/// user has read and then lost: it waits for room instead.
#[tokio::test]
async fn a_streamed_reply_waits_out_a_full_writer_queue_where_plain_sends_are_refused() {
    let app = TestApp::builder()
        .with("CHAT__STORAGE__WRITE_QUEUE_CAPACITY", 1)
        .with("CHAT__STORAGE__MAX_BATCH", 1)
        .with("CHAT__SERVER__WORKERS", 4)
        .with("CHAT__LIMITS__MAX_STREAMS_PER_CLIENT", 64)
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 0)
        .spawn()
        .await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let flooding = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/chat/message"));
            let (flooding, refused) = (Arc::clone(&flooding), Arc::clone(&refused));
            tokio::spawn(async move {
                while flooding.load(Ordering::Relaxed) {
                    let response = client
                        .post(&url)
                        .json(&json!({"message": "flood"}))
                        .send()
                        .await
                        .unwrap();
                    if response.status() == 503 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut endings = Vec::new();
    for round in 0..4 {
        let streams = (0..8).map(|i| {
            let (client, url) = (
                app.client.clone(),
                app.url(&format!("/api/v1/conversations/{id}/messages")),
            );
            async move {
                let response = client
                    .post(url)
                    .header("accept", "text/event-stream")
                    .json(&json!({"content": format!("streamed {round}-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body = response.text().await.unwrap();
                let last = body
                    .lines()
                    .filter_map(|line| line.strip_prefix("event: "))
                    .next_back()
                    .unwrap_or_default()
                    .to_owned();
                (last, body)
            }
        });
        endings.extend(futures::future::join_all(streams).await);
    }
    flooding.store(false, Ordering::Relaxed);
    for flooder in flooders {
        flooder.await.unwrap();
    }
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the queue never filled"
    );
    for (last, body) in &endings {
        assert_eq!(last, "done", "every shown reply is stored: {body}");
    }
    assert_eq!(app.all_messages(&id, 100).await.len(), 64);
}

#[tokio::test]
async fn headers_over_the_limit_get_a_json_431() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_HEADER_BYTES", 2048)
        .spawn()
        .await;
    let padded = |path: &str, padding: usize| {
        app.client
            .get(app.url(path))
            .header("x-padding", "p".repeat(padding))
            .send()
    };
    let response = padded("/api/v1/conversations", 4096).await.unwrap();
    assert_eq!(response.status(), 431);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "headers_too_large");
    // The seed routes keep the original app's error shape.
    let seed = padded("/chat/history", 4096).await.unwrap();
    assert_eq!(seed.status(), 431);
    assert_seed_error_shape(&seed.json().await.unwrap());
    let fine = padded("/api/v1/conversations", 512).await.unwrap();
    assert_eq!(fine.status(), 200);
}

/// The framework's request timeout ends with the head; a body sent a byte at a time must not hold
/// the connection (or a stream slot) for ever.
#[tokio::test]
async fn a_body_slower_than_the_request_timeout_gets_408_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::builder()
        .with("CHAT__SERVER__CLIENT_REQUEST_TIMEOUT_SECS", 1)
        .spawn()
        .await;
    let authority = app.address.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(authority).await.unwrap();
    let started = Instant::now();
    connection
        .write_all(
            b"POST /chat/message HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 40\r\n\r\n{\"message\": ",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), connection.read_to_end(&mut answer))
        .await
        .expect("answered and closed well before the client would have finished")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#"{"status":"error","message":"The request body did not arrive"#),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(app.history().await.is_empty());
}

/// A follower that hangs up while the reply is silent (a model thinking) frees its stream slot
/// once a keep-alive comment cannot be written, not only at the reply's next word.
#[tokio::test]
async fn a_follower_gone_while_the_reply_is_silent_frees_its_slot_at_a_keep_alive() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_STREAMS_PER_CLIENT", 2)
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 8_000)
        .with("CHAT__SERVER__STREAM_KEEP_ALIVE_SECS", 1)
        .spawn()
        .await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let follow = || {
        app.client
            .get(app.url(&format!("/api/v1/conversations/{id}/stream")))
            .header("accept", "text/event-stream")
            .send()
    };

    let sender = open_stream_of(&app, id, None, 3).await;
    assert_eq!(sender.status(), 200);
    let follower = follow().await.unwrap();
    assert_eq!(follower.status(), 200);
    drop(follower);

    // The reply's next word is 8 s away; keep-alives come every second. Watched on the gauge: a
    // stream asked for now would have the client's streams probed at once.
    let started = Instant::now();
    while streams_open(&app).await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the slot was still taken after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(sender);
}

async fn streams_open(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_streams_open "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the open streams gauge")
}
