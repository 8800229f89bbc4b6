//! Starts the real application in-process on port 0 with a fresh database, as `main` would.

use std::collections::HashMap;
use std::time::Duration;

use config::Environment;
use futures::StreamExt;
use server::{Application, Settings};
use tempfile::TempDir;

/// Settings read from the defaults and `variables` alone, as the server would read them.
pub fn load_settings(
    variables: &[(&str, &str)],
) -> Result<Settings, server::settings::SettingsError> {
    let directory = tempfile::tempdir().unwrap();
    let variables: HashMap<String, String> = variables
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    Settings::load_from(
        directory.path(),
        None,
        Environment::default().source(Some(variables)),
    )
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    _directory: TempDir,
}

/// Settings overrides, as the environment variables an operator would set.
pub struct TestAppBuilder {
    variables: HashMap<String, String>,
}

impl TestAppBuilder {
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.variables.insert(key.to_owned(), value.to_string());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mut variables = self.variables;
        variables
            .entry("CHAT__STORAGE__URL".to_owned())
            .or_insert_with(|| directory.path().join("chat.db").display().to_string());
        let settings = Settings::load_from(
            directory.path(),
            None,
            Environment::default().source(Some(variables)),
        )
        .expect("valid test settings");
        if std::env::var_os("TEST_LOG").is_some() {
            server::telemetry::init_tracing(&settings.log, &settings.telemetry)
                .expect("logging starts");
        }
        let application = Application::build(settings)
            .await
            .expect("the application starts");
        let address = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_stopped());
        TestApp {
            address,
            client: reqwest::Client::new(),
            _directory: directory,
        }
    }
}

impl TestApp {
    /// Deterministic dummy replies (they echo the text), streamed with a short pause per word.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            variables: HashMap::from([
                ("CHAT__SERVER__PORT".to_owned(), "0".to_owned()),
                ("CHAT__SERVER__WORKERS".to_owned(), "2".to_owned()),
                (
                    "CHAT__ASSISTANT__DUMMY__MODE".to_owned(),
                    "deterministic".to_owned(),
                ),
                (
                    "CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS".to_owned(),
                    "2".to_owned(),
                ),
                ("CHAT__WEB__DIST_DIR".to_owned(), "/nonexistent".to_owned()),
            ]),
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts a raw body with the given content type to the seed route.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("request sent")
    }

    pub async fn history(&self) -> Vec<serde_json::Value> {
        let response = self.get("/chat/history").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("a JSON array")
    }

    /// The user messages of `GET /chat/history`, oldest first.
    pub async fn history_users(&self) -> Vec<String> {
        self.history()
            .await
            .iter()
            .map(|entry| entry["user"].as_str().expect("a user message").to_owned())
            .collect()
    }

    pub async fn create_conversation(&self, title: Option<&str>) -> serde_json::Value {
        let body = match title {
            Some(title) => serde_json::json!({ "title": title }),
            None => serde_json::json!({}),
        };
        let response = self.post_json("/api/v1/conversations", &body).await;
        assert_eq!(response.status(), 201);
        response.json().await.expect("a conversation")
    }

    /// Creates an untitled conversation and returns its id.
    pub async fn new_conversation(&self) -> String {
        self.create_conversation(None).await["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    }

    pub async fn send(&self, conversation_id: &str, content: &str) -> serde_json::Value {
        let response = self
            .post_json(
                &format!("/api/v1/conversations/{conversation_id}/messages"),
                &serde_json::json!({ "content": content }),
            )
            .await;
        assert_eq!(response.status(), 201, "sending {content:?}");
        response.json().await.expect("an exchange")
    }

    /// Sends `body` (`content`, and perhaps a chosen `generation_id`) asking for the reply's
    /// event stream; the answer is whatever the server says.
    pub async fn post_streamed(
        &self,
        conversation_id: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/conversations/{conversation_id}/messages")))
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Asks the server to stop the conversation's reply `generation`.
    pub async fn stop_reply(&self, conversation_id: &str, generation: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!(
                "/api/v1/conversations/{conversation_id}/generations/{generation}/stop"
            )))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete_conversation(&self, conversation_id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/v1/conversations/{conversation_id}")))
            .send()
            .await
            .expect("request sent")
    }

    /// Every message of a conversation, oldest first, walking the pages with `before`.
    pub async fn all_messages(&self, conversation_id: &str, limit: u32) -> Vec<serde_json::Value> {
        let mut pages = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut path =
                format!("/api/v1/conversations/{conversation_id}/messages?limit={limit}");
            if let Some(cursor) = &before {
                path.push_str(&format!("&before={cursor}"));
            }
            let response = self.get(&path).await;
            assert_eq!(response.status(), 200);
            let page: serde_json::Value = response.json().await.expect("a page");
            pages.push(page["items"].as_array().expect("items").clone());
            match page["next_cursor"].as_str() {
                Some(cursor) => before = Some(cursor.to_owned()),
                None => break,
            }
        }
        pages.into_iter().rev().flatten().collect()
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

/// Reads SSE events from a response body one at a time, as a browser would.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// The `start` event that opens every reply, once read; `None` in raw mode.
    pub start: Option<SseEvent>,
    raw: bool,
}

impl SseReader {
    /// Reads a reply's events; the opening `start` event is kept in `start`, not returned.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
            start: None,
            raw: false,
        }
    }

    /// Returns every event, `start` included.
    pub fn raw(response: reqwest::Response) -> Self {
        Self {
            raw: true,
            ..Self::new(response)
        }
    }

    /// The next event, or `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let event = self.next_frame().await?;
            if self.raw || event.event != "start" {
                return Some(event);
            }
            assert!(self.start.is_none(), "one start event per reply");
            self.start = Some(event);
        }
    }

    async fn next_frame(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                let mut id = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_owned());
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("the stream keeps moving")?
                .expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

/// Waits until `check` holds, polling; fails the test after a few seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}
