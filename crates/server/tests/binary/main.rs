//! Black-box tests of the built binary over real HTTP: start-up, configuration errors,
//! concurrency, crash durability, graceful shutdown, replicas on one PostgreSQL database and
//! trace export.

mod otlp;
mod outage;
mod replicas;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::fake_openai::{self, FakeProvider, Part, Reply};
use testkit::postgres::TestDatabase;
use testkit::process::ServerProcess;

const BINARY: &str = env!("CARGO_BIN_EXE_chat-server");

fn start(directory: &Path, variables: &[(&str, String)]) -> ServerProcess {
    ServerProcess::start(BINARY, directory, variables)
}

fn run_to_exit(directory: &Path, variables: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    testkit::process::run_to_exit(BINARY, directory, variables)
}

fn deterministic() -> Vec<(&'static str, String)> {
    vec![("CHAT__ASSISTANT__DUMMY__MODE", "deterministic".to_owned())]
}

/// Creates a conversation through the v1 API of a running binary and returns it.
async fn create_conversation(
    client: &reqwest::Client,
    server: &ServerProcess,
    title: Option<&str>,
) -> Value {
    let body = title.map_or_else(|| json!({}), |title| json!({ "title": title }));
    let response = client
        .post(server.url("/api/v1/conversations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn history(server: &ServerProcess) -> Vec<Value> {
    reqwest::get(server.url("/chat/history"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn starts_from_any_directory_with_built_in_defaults() {
    let directory = tempfile::tempdir().unwrap();
    let server = start(directory.path(), &[]);
    let response = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 200);
    // The default storage is chat.db in the working directory.
    assert!(directory.path().join("chat.db").exists());
}

/// A body of `message` with every character escaped as JSON allows at the longest, as Python's
/// `json.dumps` sends text that is not ASCII: an emoji, beyond the Basic Multilingual Plane, is
/// two escapes of 6 bytes.
fn escaped_message_body(characters: usize) -> String {
    format!(
        "{{\"message\":\"{}\"}}",
        "\\ud83d\\ude00".repeat(characters)
    )
}

#[tokio::test]
async fn by_default_the_longest_message_fits_in_a_body_even_with_every_character_escaped() {
    let directory = tempfile::tempdir().unwrap();
    let server = start(directory.path(), &[]);
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(server.url("/chat/message"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let longest = post(escaped_message_body(16_000)).await.unwrap();
    assert_eq!(longest.status(), 200);
    let stored = default_conversation_messages(&server).await;
    assert_eq!(
        stored[0]["content"].as_str().unwrap().chars().count(),
        16_000
    );
    let too_long = post(escaped_message_body(16_001)).await.unwrap();
    assert_eq!(too_long.status(), 413);
    let error: Value = too_long.json().await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("16000 characters"),
        "refused for its text, not its bytes: {error}"
    );
}

#[tokio::test]
async fn config_files_and_environment_override_the_defaults() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("settings");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("default.toml"),
        "[storage]\nurl = \"from-file.db\"\n",
    )
    .unwrap();
    std::fs::write(
        config.join("staging.toml"),
        "[limits]\nmax_message_chars = 5\n",
    )
    .unwrap();
    let server = start(
        directory.path(),
        &[
            ("CHAT_CONFIG_DIR", config.display().to_string()),
            ("CHAT_ENV", "staging".to_owned()),
        ],
    );
    assert!(directory.path().join("from-file.db").exists());
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "too long"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[test]
fn bad_configuration_stops_the_start_naming_the_key() {
    let directory = tempfile::tempdir().unwrap();
    for (variables, key) in [
        (vec![("CHAT__SERVER__PORT", "eighty")], "server.port"),
        (
            vec![("CHAT__STORAGE__BACKEND", "mongodb")],
            "storage.backend",
        ),
        (
            vec![
                ("CHAT__STORAGE__BACKEND", "postgres"),
                ("CHAT__STORAGE__URL", "chat.db"),
            ],
            "storage.url",
        ),
        (
            vec![("CHAT__STORAGE__URL", "postgres://db/chat")],
            "storage.url",
        ),
        (vec![("CHAT__LOG__FORMAT", "xml")], "log.format"),
        (
            vec![("CHAT__LIMITS__MAX_MESSAGE_CHARS", "0")],
            "limits.max_message_chars",
        ),
        (
            vec![("CHAT__CORS__ALLOWED_ORIGINS", "localhost:3000")],
            "cors.allowed_origins",
        ),
        (
            vec![("CHAT__TELEMETRY__OTLP_ENDPOINT", "otel-collector:4318")],
            "telemetry.otlp_endpoint",
        ),
        // actix-server panics above 512 workers, after the database was opened.
        (vec![("CHAT__SERVER__WORKERS", "513")], "server.workers"),
        (vec![("CHAT__LOG__LEVEL", "warning")], "log.level"),
        // One underscore after CHAT: the environment source would skip it silently.
        (vec![("CHAT_SERVER__PORT", "8001")], "CHAT_SERVER__PORT"),
        // A value and a misspelt key under it: read in no fixed order, they were refused on one
        // start and the misspelt one silently dropped on the next.
        (
            vec![
                ("CHAT__LIMITS__MAX_MESSAGE_CHARS", "10"),
                ("CHAT__LIMITS__MAX_MESSAGE_CHARS__TYPO", "5"),
            ],
            "CHAT__LIMITS__MAX_MESSAGE_CHARS__TYPO",
        ),
        // The same, in another case: the source matches names whatever their case.
        (
            vec![
                ("CHAT__LIMITS__MAX_MESSAGE_CHARS", "10"),
                ("chat__limits__max_message_chars__typo", "5"),
            ],
            "CHAT__LIMITS__MAX_MESSAGE_CHARS__TYPO",
        ),
        (
            vec![
                ("CHAT__SERVER__PORT", "8001"),
                ("chat__server__port", "8002"),
            ],
            "CHAT__SERVER__PORT` is set twice",
        ),
        // A mistyped configuration directory: the defaults are not what its operator wrote.
        (vec![("CHAT_CONFIG_DIR", "no-such-dir")], "CHAT_CONFIG_DIR"),
    ] {
        let (status, stderr) = run_to_exit(directory.path(), &variables);
        assert_eq!(status.code(), Some(2), "{variables:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{variables:?} should name {key}: {stderr}"
        );
    }
    assert!(
        !directory.path().join("chat.db").exists(),
        "nothing was created"
    );
}

/// `--help` and `--version` answer and exit; any other argument is refused. None starts a server
/// or creates a database, as `--help` used to.
#[test]
fn arguments_are_answered_or_refused_and_never_start_a_server() {
    let directory = tempfile::tempdir().unwrap();
    for (argument, code, says) in [
        ("--help", 0, "Usage: chat-server"),
        ("-h", 0, "Usage: chat-server"),
        ("--version", 0, "chat-server "),
        ("--port=9000", 2, "unexpected argument"),
    ] {
        let mut child = std::process::Command::new(BINARY)
            .arg(argument)
            .current_dir(directory.path())
            .env_clear()
            .env("CHAT__SERVER__PORT", "0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            panic!("{argument} started a server");
        }
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(code), "{argument}: {text}");
        assert!(text.contains(says), "{argument}: {text}");
    }
    assert!(
        !directory.path().join("chat.db").exists(),
        "no database was created"
    );
}

#[test]
fn a_start_that_fails_leaves_storage_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for (what, variables, reason) in [
        (
            "port taken",
            vec![("CHAT__SERVER__PORT", port.as_str())],
            "cannot listen",
        ),
        (
            "Redis down",
            vec![
                ("CHAT__SERVER__PORT", "0"),
                ("CHAT__CACHE__KIND", "redis"),
                ("CHAT__CACHE__URL", "redis://127.0.0.1:9"),
            ],
            "Redis",
        ),
    ] {
        let (status, stderr) = run_to_exit(directory.path(), &variables);
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains(reason), "{what}: {stderr}");
        assert!(
            !directory.path().join("chat.db").exists(),
            "{what}: the database was created before the start failed"
        );
    }
}

#[tokio::test]
async fn a_hundred_concurrent_posts_all_succeed_once_each() {
    let directory = tempfile::tempdir().unwrap();
    let server = start(directory.path(), &deterministic());
    let client = reqwest::Client::new();
    let sends = (0..100).map(|i| {
        let client = client.clone();
        let url = server.url("/chat/message");
        async move {
            let response = client
                .post(url)
                .json(&json!({"message": format!("parallel {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    futures::future::join_all(sends).await;
    let history = history(&server).await;
    assert_eq!(history.len(), 100);
    let mut seen = HashMap::new();
    for entry in &history {
        let user = entry["user"].as_str().unwrap();
        assert!(entry["AI"]
            .as_str()
            .unwrap()
            .ends_with(&format!("You said: {user}")));
        *seen.entry(user.to_owned()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|count| *count == 1));
}

/// Every message of the default conversation, oldest first, through the v1 pages.
async fn default_conversation_messages(server: &ServerProcess) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut before = String::new();
    loop {
        let page: Value = reqwest::get(server.url(&format!(
            "/api/v1/conversations/00000000-0000-7000-8000-000000000000/messages?limit=200{before}"
        )))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        pages.push(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(cursor) => before = format!("&before={cursor}"),
            None => break,
        }
    }
    pages.into_iter().rev().flatten().collect()
}

/// 400 clients post concurrently and keep posting; the server is killed with SIGKILL while they
/// do. After a restart every acknowledged exchange is there exactly once, with its own reply, and
/// no exchange is half written.
async fn acknowledged_exchanges_survive_kill_9(storage: Vec<(&'static str, String)>) {
    let directory = tempfile::tempdir().unwrap();
    let mut variables = deterministic();
    variables.extend(storage);
    let mut server = start(directory.path(), &variables);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let unexpected = Arc::new(Mutex::new(Vec::<u16>::new()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(400)
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for worker in 0..400 {
        let (client, url, acknowledged, unexpected) = (
            client.clone(),
            server.url("/chat/message"),
            Arc::clone(&acknowledged),
            Arc::clone(&unexpected),
        );
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let text = format!("durable {worker}-{i}");
                let sent = client
                    .post(&url)
                    .json(&json!({"message": text}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => {
                        if response.bytes().await.is_ok() {
                            acknowledged.lock().unwrap().push(text);
                        }
                    }
                    // Overload is an honest answer under this load; the client may retry.
                    Ok(response) if response.status() == 503 => {}
                    Ok(response) => unexpected.lock().unwrap().push(response.status().as_u16()),
                    // The server is gone.
                    Err(_) => break,
                }
            }
        }));
    }
    for _ in 0..200 {
        if acknowledged.lock().unwrap().len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_hard();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 100,
        "load ran: {}",
        acknowledged.len()
    );
    assert_eq!(
        *unexpected.lock().unwrap(),
        Vec::<u16>::new(),
        "only 200 or 503 before the kill"
    );

    let restarted = start(directory.path(), &variables);
    let history = history(&restarted).await;
    let mut stored = HashMap::new();
    for entry in &history {
        let user = entry["user"].as_str().unwrap().to_owned();
        assert!(entry["AI"]
            .as_str()
            .unwrap()
            .ends_with(&format!("You said: {user}")));
        *stored.entry(user).or_insert(0) += 1;
    }
    for text in &acknowledged {
        assert_eq!(
            stored.get(text),
            Some(&1),
            "{text} acknowledged but not stored once"
        );
    }
    let messages = default_conversation_messages(&restarted).await;
    assert_eq!(
        messages.len(),
        history.len() * 2,
        "no half-written exchange"
    );
    for (index, pair) in messages.chunks(2).enumerate() {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        assert_eq!(pair[0]["content"], history[index]["user"]);
    }
}

#[tokio::test]
async fn acknowledged_exchanges_survive_kill_9_on_sqlite() {
    acknowledged_exchanges_survive_kill_9(Vec::new()).await;
}

#[tokio::test]
async fn acknowledged_exchanges_survive_kill_9_on_postgres() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    acknowledged_exchanges_survive_kill_9(postgres(&database)).await;
}

fn postgres(database: &TestDatabase) -> Vec<(&'static str, String)> {
    vec![
        ("CHAT__STORAGE__BACKEND", "postgres".to_owned()),
        ("CHAT__STORAGE__URL", database.url().to_owned()),
    ]
}

/// A server whose dummy assistant writes a word every 60 ms: the server, a client, and a new
/// conversation's id and messages URL.
async fn slowly_streaming_server(
    directory: &Path,
) -> (ServerProcess, reqwest::Client, String, String) {
    let mut variables = deterministic();
    variables.push(("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", "60".to_owned()));
    let server = start(directory, &variables);
    let client = reqwest::Client::new();
    let conversation = create_conversation(&client, &server, None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let messages = server.url(&format!("/api/v1/conversations/{id}/messages"));
    (server, client, id, messages)
}

/// A provider that takes 1.5 s over a plain reply and streams twenty words, one every 60 ms.
async fn slow_provider() -> FakeProvider {
    FakeProvider::start(|_, request| {
        if request.body["stream"] == true {
            let mut parts = Vec::new();
            for word in 0..20 {
                parts.push(Part::Data(fake_openai::event(&format!("word{word} "))));
                parts.push(Part::Pause(Duration::from_millis(60)));
            }
            parts.push(Part::Data(fake_openai::done()));
            Reply::Stream(parts)
        } else {
            Reply::After(
                Duration::from_millis(1500),
                Box::new(Reply::completion("a slow reply")),
            )
        }
    })
    .await
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_and_streams_finish() {
    let directory = tempfile::tempdir().unwrap();
    let provider = slow_provider().await;
    let server_variables = vec![
        ("CHAT__ASSISTANT__KIND", "openai".to_owned()),
        ("CHAT__ASSISTANT__BASE_URL", provider.base_url.clone()),
        ("CHAT__ASSISTANT__MAX_RETRIES", "0".to_owned()),
    ];
    let mut server = start(directory.path(), &server_variables);
    let client = reqwest::Client::new();
    let conversation = create_conversation(&client, &server, None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let messages = server.url(&format!("/api/v1/conversations/{id}/messages"));
    let mut streams = Vec::new();
    for i in 0..8 {
        streams.push(stream_in_background(&client, &messages, &format!("stream {i}")).await);
    }
    let mut posts = Vec::new();
    for i in 0..8 {
        let request = client
            .post(server.url("/chat/message"))
            .json(&json!({"message": format!("post {i}")}));
        posts.push(tokio::spawn(async move {
            request.send().await.map(|r| r.status())
        }));
    }
    // Every request has reached the provider, which takes 1.5 s over each plain reply: all are
    // in flight when the signal comes.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while provider.requests().len() < 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "the requests never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        posts.iter().all(|post| !post.is_finished()),
        "the posts are still waiting for their replies"
    );
    server.terminate();
    for stream in streams {
        let body = stream.await.unwrap();
        assert!(body.contains("event: done"), "stream finished: {body}");
    }
    for post in posts {
        assert_eq!(post.await.unwrap().unwrap(), 200);
    }
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");

    // After a clean stop the database file alone holds everything: a copy of it without its
    // WAL, as an operator copying `chat.db` would make, has all sixteen exchanges.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        directory.path().join("chat.db"),
        copy.path().join("chat.db"),
    )
    .unwrap();
    let server = start(copy.path(), &server_variables);
    assert_eq!(history(&server).await.len(), 8, "eight posts");
    let streamed: Value =
        reqwest::get(server.url(&format!("/api/v1/conversations/{id}/messages?limit=50")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        streamed["items"].as_array().unwrap().len(),
        16,
        "eight streams, two messages each"
    );
}

/// A server with the given grace period, streaming a reply of a hundred words at 100 ms each
/// (ten seconds) for 0.3 s already: the server, the conversation id, the message sent and the
/// stream's whole body once it ends.
async fn streaming_a_long_reply(
    directory: &Path,
    grace_secs: u64,
) -> (
    ServerProcess,
    String,
    String,
    tokio::task::JoinHandle<String>,
) {
    let mut variables = deterministic();
    variables.push(("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", "100".to_owned()));
    variables.push(("CHAT__SERVER__SHUTDOWN_GRACE_SECS", grace_secs.to_string()));
    let server = start(directory, &variables);
    let client = reqwest::Client::new();
    let conversation = create_conversation(&client, &server, None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let messages = server.url(&format!("/api/v1/conversations/{id}/messages"));
    let words = vec!["word"; 100].join(" ");
    let stream = stream_in_background(&client, &messages, &words).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (server, id, words, stream)
}

/// The contents of a conversation's messages, as a restarted server on `directory` has them.
async fn stored_after_restart(directory: &Path, id: &str) -> Vec<String> {
    let server = start(directory, &deterministic());
    let stored: Value = reqwest::get(server.url(&format!("/api/v1/conversations/{id}/messages")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stored["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_reply_longer_than_the_grace_period_is_cut_short_and_stored_as_far_as_it_got() {
    let directory = tempfile::tempdir().unwrap();
    let (mut server, id, words, stream) = streaming_a_long_reply(directory.path(), 3).await;
    let signalled = std::time::Instant::now();
    server.terminate();

    // Ten seconds of reply left; the grace period is three.
    let body = stream.await.unwrap();
    let done = body
        .split("\n\n")
        .find(|frame| frame.contains("event: done"))
        .unwrap_or_else(|| panic!("the stream ends with done: {body}"));
    let data = done
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let exchange: Value = serde_json::from_str(data).unwrap();
    let cut_reply = exchange["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        cut_reply.split_whitespace().count() > 5,
        "some of it: {cut_reply}"
    );
    assert!(cut_reply.len() < words.len(), "not all of it: {cut_reply}");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "within the grace period and a little"
    );
    assert_eq!(
        stored_after_restart(directory.path(), &id).await,
        [words, cut_reply]
    );
}

#[tokio::test]
async fn a_streamed_send_still_waiting_for_its_first_words_when_cut_gets_shutting_down() {
    let directory = tempfile::tempdir().unwrap();
    // The provider takes the request, then says nothing for longer than the grace period.
    let provider = FakeProvider::start(|_, _| {
        Reply::Stream(vec![
            Part::Pause(Duration::from_secs(30)),
            Part::Data(fake_openai::event("too late")),
            Part::Data(fake_openai::done()),
        ])
    })
    .await;
    let variables = vec![
        ("CHAT__ASSISTANT__KIND", "openai".to_owned()),
        ("CHAT__ASSISTANT__BASE_URL", provider.base_url.clone()),
        ("CHAT__ASSISTANT__MAX_RETRIES", "0".to_owned()),
        ("CHAT__SERVER__SHUTDOWN_GRACE_SECS", "2".to_owned()),
    ];
    let mut server = start(directory.path(), &variables);
    let client = reqwest::Client::new();
    let conversation = create_conversation(&client, &server, None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let send = client
        .post(server.url(&format!("/api/v1/conversations/{id}/messages")))
        .header("accept", "text/event-stream")
        .json(&json!({ "content": "anyone there?" }))
        .send();
    let send = tokio::spawn(send);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while provider.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.terminate();
    let refused = send
        .await
        .unwrap()
        .expect("an answer, not a closed connection");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "shutting_down", "{body}");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(stored_after_restart(directory.path(), &id).await.is_empty());
}

/// A streamed reply, sent and left to run in the background; its whole body when it ends.
async fn stream_in_background(
    client: &reqwest::Client,
    messages: &str,
    content: &str,
) -> tokio::task::JoinHandle<String> {
    let response = client
        .post(messages)
        .header("accept", "text/event-stream")
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::spawn(async move { response.text().await.unwrap_or_default() })
}

#[tokio::test]
async fn ctrl_c_stops_as_gracefully_as_sigterm() {
    let directory = tempfile::tempdir().unwrap();
    let (mut server, client, _, messages) = slowly_streaming_server(directory.path()).await;
    let stream = stream_in_background(&client, &messages, "interrupted politely").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.interrupt();
    let body = stream.await.unwrap();
    assert!(body.contains("event: done"), "the stream finished: {body}");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// SIGTERM, then SIGINT 0.3 s later: the exit status and how long after the first signal it came
/// (at most `limit`).
async fn stopped_twice(
    mut server: ServerProcess,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let signalled = std::time::Instant::now();
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.interrupt();
    let status = tokio::task::spawn_blocking(move || server.wait(limit))
        .await
        .unwrap();
    (status, signalled.elapsed())
}

#[tokio::test]
async fn a_second_signal_stops_at_once_behind_a_hung_database() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let mut variables = postgres(&database);
    // Statements wait as long as the database does: nothing ends the blocked batch but the lock.
    variables.push(("CHAT__STORAGE__STATEMENT_TIMEOUT_SECS", "0".to_owned()));
    let server = start(directory.path(), &variables);
    let client = reqwest::Client::new();
    let lock = database.lock_table("messages").await;
    let stuck = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "behind the lock"}))
        .send();
    let stuck = tokio::spawn(stuck);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stuck.is_finished(), "the send waits behind the lock");

    let (status, stopped_after) = stopped_twice(server, Duration::from_secs(30)).await;
    drop(lock);
    assert!(status.success(), "exit status {status}");
    assert!(
        stopped_after < Duration::from_secs(8),
        "stopped without waiting for the database: {stopped_after:?}"
    );
    let answer = stuck.await.unwrap();
    assert!(
        !matches!(&answer, Ok(response) if response.status().is_success()),
        "the send was never acknowledged: {answer:?}"
    );
}

#[tokio::test]
async fn a_second_signal_stops_at_once_and_keeps_what_was_generated() {
    let directory = tempfile::tempdir().unwrap();
    let (server, id, words, _stream) = streaming_a_long_reply(directory.path(), 30).await;
    // Ten seconds of reply left and a grace period of thirty: the second signal ends both.
    let (status, stopped_after) = stopped_twice(server, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        stopped_after < Duration::from_secs(5),
        "stopped at once: {stopped_after:?}"
    );
    let stored = stored_after_restart(directory.path(), &id).await;
    assert_eq!(stored.len(), 2, "the message and its cut reply: {stored:?}");
    assert_eq!(stored[0], words);
    assert!(
        !stored[1].is_empty() && stored[1].len() < words.len(),
        "some of the reply: {}",
        stored[1]
    );
}
