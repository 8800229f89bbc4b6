//! Storage outages against the built binary: requests get 503 JSON quickly, `/readyz` says 503,
//! `/healthz` stays 200, and service comes back by itself when storage does. And secrets or
//! message contents never reach the logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::postgres::TestDatabase;
use testkit::process::ServerProcess;

use super::{create_conversation, deterministic, postgres, start, BINARY};

/// Longest an answer may take while storage is down.
const QUICK: Duration = Duration::from_secs(5);

/// Sends a request, returning its status, `Retry-After`, JSON body and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON body");
    (status, retry_after, body, started.elapsed())
}

/// Every write route, the seed send and a v1 read answer 503 JSON with `Retry-After`, quickly;
/// readiness fails and liveness holds. Returns the slowest answer.
async fn assert_outage(server: &ServerProcess, conversation: &str) -> Duration {
    let client = reqwest::Client::new();
    let messages = server.url(&format!("/api/v1/conversations/{conversation}/messages"));
    let mut slowest = Duration::ZERO;
    let product = [
        (
            "POST conversations",
            client
                .post(server.url("/api/v1/conversations"))
                .json(&json!({})),
        ),
        (
            "POST messages",
            client.post(&messages).json(&json!({"content": "during"})),
        ),
    ];
    for (what, request) in product {
        let (status, retry_after, body, elapsed) = timed(request).await;
        assert_eq!(status, 503, "{what}: {body}");
        assert!(retry_after.is_some(), "{what}: Retry-After");
        assert_eq!(body["code"], "storage_unavailable", "{what}: {body}");
        assert!(elapsed < QUICK, "{what} took {elapsed:?}");
        slowest = slowest.max(elapsed);
    }
    let seed = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "during"}));
    let (status, retry_after, body, elapsed) = timed(seed).await;
    assert_eq!(status, 503, "seed send: {body}");
    assert!(retry_after.is_some(), "seed send: Retry-After");
    assert_eq!(
        body,
        json!({"status": "error", "message": "Storage is unavailable; try again shortly."})
    );
    assert!(elapsed < QUICK, "seed send took {elapsed:?}");
    slowest = slowest.max(elapsed);

    let (status, _, body, elapsed) = timed(client.get(server.url("/readyz"))).await;
    assert_eq!(status, 503, "readyz: {body}");
    assert!(elapsed < QUICK, "readyz took {elapsed:?}");
    slowest = slowest.max(elapsed);
    let (status, _, _, elapsed) = timed(client.get(server.url("/healthz"))).await;
    assert_eq!(status, 200, "healthz");
    assert!(elapsed < Duration::from_secs(1), "healthz took {elapsed:?}");
    slowest
}

/// Readiness returns and a send succeeds within `limit`, with no restart.
async fn assert_recovers(server: &ServerProcess, conversation: &str, limit: Duration) -> Duration {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200;
        if ready {
            break;
        }
        assert!(started.elapsed() < limit, "not ready again after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(server.url(&format!("/api/v1/conversations/{conversation}/messages")))
        .json(&json!({"content": "after the outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "a send after recovery");
    let response = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "after the outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a seed send after recovery");
    started.elapsed()
}

/// The id of a new conversation on `server`.
async fn new_conversation_id(server: &ServerProcess) -> String {
    let conversation = create_conversation(&reqwest::Client::new(), server, None).await;
    conversation["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_postgres_outage_gets_quick_503s_and_recovers_without_restart() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let mut variables = deterministic();
    variables.extend(postgres(&database));
    let server = start(directory.path(), &variables);
    let conversation = new_conversation_id(&server).await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "before"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    database.go_offline().await;
    let slowest = assert_outage(&server, &conversation).await;
    // The seed history keeps its contract: 500 with its fixed JSON body, quickly.
    let (status, _, body, elapsed) = timed(client.get(server.url("/chat/history"))).await;
    assert_eq!(status, 500);
    assert_eq!(body, json!({"message": "Failed to fetch chat history."}));
    assert!(elapsed < QUICK, "history took {elapsed:?}");
    eprintln!("PostgreSQL outage: slowest answer {slowest:?}, history {elapsed:?}");

    database.go_online().await;
    let recovered = assert_recovers(&server, &conversation, Duration::from_secs(10)).await;
    eprintln!("PostgreSQL outage: recovered in {recovered:?}");
}

/// Makes files immutable (`chattr +i`), which stops writes even through descriptors the server
/// already has open; plain permissions would not (they are checked at open, and root ignores
/// them). Undone on drop, so the temporary directory can be removed even if the test fails.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: &[PathBuf]) -> Option<Self> {
        let status = Command::new("chattr")
            .arg("+i")
            .args(files)
            .stderr(Stdio::piped())
            .output();
        match status {
            Ok(output) if output.status.success() => Some(Self(files.to_vec())),
            Ok(output) => {
                let _ = Command::new("chattr").arg("-i").args(files).status();
                skip(&String::from_utf8_lossy(&output.stderr));
                None
            }
            Err(error) => {
                skip(&error.to_string());
                None
            }
        }
    }
}

fn skip(reason: &str) {
    testkit::cannot_run_without(
        "chattr",
        format_args!(
            "cannot make the SQLite files immutable (chattr +i needs CAP_LINUX_IMMUTABLE and \
             ext4, xfs or btrfs): {}",
            reason.trim()
        ),
    );
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

#[tokio::test]
async fn an_unwritable_sqlite_file_gets_quick_503s_and_recovers_without_restart() {
    let directory = tempfile::tempdir().unwrap();
    let server = start(directory.path(), &deterministic());
    let conversation = new_conversation_id(&server).await;
    let files: Vec<PathBuf> = ["chat.db", "chat.db-wal"]
        .iter()
        .map(|name| directory.path().join(name))
        .collect();
    assert!(files.iter().all(|file| file.exists()), "WAL mode files");
    let Some(immutable) = Immutable::set(&files) else {
        return;
    };
    let slowest = assert_outage(&server, &conversation).await;
    eprintln!("SQLite unwritable: slowest answer {slowest:?}");
    // Reads still work: only writing is broken.
    let response = reqwest::get(server.url("/chat/history")).await.unwrap();
    assert_eq!(response.status(), 200);

    drop(immutable);
    let recovered = assert_recovers(&server, &conversation, Duration::from_secs(20)).await;
    eprintln!("SQLite unwritable: recovered in {recovered:?}");
}

/// The binary with stdout and stderr captured to files, at the given log level.
pub(crate) struct Logged {
    child: Child,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Logged {
    pub(crate) fn start(directory: &Path, variables: &[(&str, String)]) -> Self {
        let (stdout, stderr) = (directory.join("stdout.log"), directory.join("stderr.log"));
        let child = Command::new(BINARY)
            .current_dir(directory)
            .env_clear()
            .env("CHAT__SERVER__PORT", "0")
            .env("CHAT__LOG__FORMAT", "json")
            .envs(variables.iter().map(|(key, value)| (key, value)))
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("chat-server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let log = std::fs::read_to_string(&stdout).unwrap_or_default();
            let port = log
                .lines()
                .filter(|line| line.contains("chat-server listening"))
                .find_map(|line| serde_json::from_str::<Value>(line).ok()?["port"].as_u64());
            if let Some(port) = port {
                break port as u16;
            }
            assert!(
                Instant::now() < deadline,
                "chat-server did not report its port: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            port,
            stdout,
            stderr,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything written so far, after stopping the process.
    pub(crate) fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.stdout).unwrap()
            + &std::fs::read_to_string(&self.stderr).unwrap()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const API_KEY: &str = "sk-test-SECRET123";
const PASSWORD: &str = "hunter2secret";

fn assert_no_secret(output: &str, what: &str) {
    assert!(
        !output.contains(API_KEY),
        "{what}: the API key leaked:\n{output}"
    );
    assert!(
        !output.contains(PASSWORD),
        "{what}: the password leaked:\n{output}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_errors() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    // Trust authentication accepts any password, so the URL works and still carries a secret.
    let url = database.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    );
    assert!(url.contains(PASSWORD), "test database URL {url}");
    let variables = vec![
        ("CHAT__LOG__LEVEL", "debug".to_owned()),
        ("CHAT__STORAGE__BACKEND", "postgres".to_owned()),
        ("CHAT__STORAGE__URL", url.clone()),
        ("CHAT__ASSISTANT__KIND", "openai".to_owned()),
        ("CHAT__ASSISTANT__API_KEY", API_KEY.to_owned()),
        // Nothing listens there: the key is used for a request that fails, and the failure logged.
        (
            "CHAT__ASSISTANT__BASE_URL",
            "http://127.0.0.1:9/v1".to_owned(),
        ),
        ("CHAT__ASSISTANT__MAX_RETRIES", "0".to_owned()),
    ];
    let server = Logged::start(directory.path(), &variables);
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let body = response.text().await.unwrap();
    assert_no_secret(&body, "error body");
    for path in ["/readyz", "/api/v1/conversations", "/metrics", "/nope"] {
        let body = client
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_no_secret(&body, path);
    }
    database.go_offline().await;
    let response = client
        .get(server.url("/api/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_no_secret(&response.text().await.unwrap(), "outage body");
    database.go_online().await;
    let output = server.stop();
    assert!(
        output.contains("request finished"),
        "debug logs were written: {output}"
    );
    assert_no_secret(&output, "running server");

    // Failing starts: a bad key elsewhere, and a database that refuses connections.
    let mut bad_key = variables.clone();
    bad_key.push(("CHAT__LOG__FORMAT", "xml".to_owned()));
    let mut refused = variables.clone();
    refused.retain(|(key, _)| *key != "CHAT__STORAGE__URL");
    refused.push((
        "CHAT__STORAGE__URL",
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:9/nowhere"),
    ));
    for (what, variables) in [("bad key", bad_key), ("refused", refused)] {
        let output = Command::new(BINARY)
            .current_dir(directory.path())
            .env_clear()
            .envs(variables.iter().map(|(key, value)| (key, value)))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{what} starts");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains("chat-server:"),
            "{what} explains itself: {text}"
        );
        assert_no_secret(&text, what);
    }
}

#[tokio::test]
async fn message_contents_are_not_logged_at_info() {
    let directory = tempfile::tempdir().unwrap();
    let mut variables = deterministic();
    variables.push(("CHAT__LOG__LEVEL", "info".to_owned()));
    // The four API requests below fill the bucket; the fifth is refused with 429.
    variables.push(("CHAT__RATE_LIMIT__PER_SECOND", "0.001".to_owned()));
    variables.push(("CHAT__RATE_LIMIT__BURST", "4".to_owned()));
    let server = Logged::start(directory.path(), &variables);
    let text = "a private note about zebra-7431";
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/chat/message"))
        .json(&json!({"message": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let conversation: Value = client
        .post(server.url("/api/v1/conversations"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = client
        .post(server.url(&format!(
            "/api/v1/conversations/{}/messages",
            conversation["id"].as_str().unwrap()
        )))
        .header("accept", "text/event-stream")
        .json(&json!({"content": text}))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().contains("event: done"));
    let refused = client
        .post(server.url("/chat/message"))
        .header("x-request-id", "bug-report-42")
        .json(&json!({"message": "   "}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let limited = client
        .post(server.url("/chat/message"))
        .header("x-request-id", "flood-17")
        .json(&json!({"message": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let output = server.stop();
    assert!(output.contains("chat-server listening"), "{output}");
    assert!(
        !output.contains("zebra-7431"),
        "message text in info logs:\n{output}"
    );
    let finished: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("request finished"))
        .collect();
    assert_eq!(
        finished.len(),
        1,
        "only the refused request, not the rate-limited one: {finished:?}"
    );
    assert!(
        finished[0].contains("bug-report-42") && finished[0].contains("400"),
        "the refusal is found by its request id: {}",
        finished[0]
    );
}
