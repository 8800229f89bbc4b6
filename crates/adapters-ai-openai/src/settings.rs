//! The adapter's configuration: plain Rust, so the server can map its own settings onto it.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

/// How to reach an OpenAI-compatible chat-completions endpoint and how hard to try.
///
/// `Debug` shows neither the key nor credentials in the base URL, so neither reaches a log.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`;
    /// requests go to `{base_url}/chat/completions`. A gateway's credentials may be in it
    /// (`https://user:token@host/v1`).
    pub base_url: String,
    /// The model name sent with every request.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set. Local servers usually need none.
    pub api_key: Option<SecretString>,
    /// Sent first, as a `system` message, when set and not blank.
    pub system_prompt: Option<String>,
    /// The limit of one attempt: for `reply` the whole request and body; for `reply_stream` the
    /// wait for the first piece of text, then the longest silence allowed between two pieces of
    /// text (keep-alive comments and content-less chunks do not count).
    pub timeout: Duration,
    /// Retries after the first attempt, so at most `max_retries + 1` attempts.
    pub max_retries: u32,
    /// How many earlier messages of the conversation are sent as context.
    pub context_messages: usize,
    /// Requests in flight toward the provider at once (at least 1).
    pub max_concurrency: usize,
    /// Callers allowed to wait for a free slot; one more is refused with `Overloaded`.
    pub max_queue: usize,
    /// The first retry waits a random time up to this; each further retry doubles the bound.
    pub initial_backoff: Duration,
    /// The largest bound the doubling reaches.
    pub max_backoff: Duration,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base_url = Url::parse(&self.base_url).map_or_else(
            |_| "[not a URL]".to_owned(),
            |url| without_credentials(&url),
        );
        f.debug_struct("OpenAiSettings")
            .field("base_url", &base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("system_prompt", &self.system_prompt)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("context_messages", &self.context_messages)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_queue", &self.max_queue)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// `url` as it may be shown: without the user name and password it may carry.
pub(crate) fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.into()
}

impl OpenAiSettings {
    /// Settings with the documented defaults (60 s timeout, 2 retries, 20 context messages,
    /// 16 concurrent requests, 64 waiting callers, backoff from 200 ms up to 10 s).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            system_prompt: None,
            timeout: Duration::from_secs(60),
            max_retries: 2,
            context_messages: 20,
            max_concurrency: 16,
            max_queue: 64,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why [`crate::OpenAiAssistant::new`] refused its settings. Messages name the config key and
/// never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenAiConfigError {
    #[error(
        "assistant.base_url must be an http:// or https:// URL such as https://api.openai.com/v1"
    )]
    BaseUrl,
    #[error("assistant.model must not be empty")]
    EmptyModel,
    #[error("assistant.max_concurrency must be at least 1")]
    MaxConcurrency,
    #[error("assistant.timeout_secs must be greater than 0")]
    Timeout,
    #[error("assistant.api_key must be printable ASCII without line breaks")]
    ApiKey,
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}
