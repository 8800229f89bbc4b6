//! [`OpenAiAssistant`]: the [`Assistant`] port over an OpenAI-compatible chat-completions API.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use domain::{Assistant, AssistantError, DeltaStream, ReplyContext};
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, Url};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{field, Instrument, Span};

use crate::metrics::{CallRecorder, Outcome};
use crate::retry::{delay_before_retry, parse_retry_after};
use crate::settings::{without_credentials, OpenAiConfigError, OpenAiSettings};
use crate::sse::SseParser;
use crate::wire::{error_message_from_body, ChatRequest, Chunk, Completion};

/// Provider messages quoted in errors are cut to this many characters.
const MAX_QUOTED_CHARS: usize = 300;
/// At most this much of an error body is read to find the provider's message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The longest reply accepted, in bytes of text. A model's `max_tokens` keeps real replies far
/// below it; past it the provider is misbehaving and the reply would only fill memory and storage.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// The longest JSON document read: a non-streamed answer, or one event (one line) of a stream.
/// Room for a whole reply in one document even with JSON escaping (`\u00e9`, 6 bytes for `é`'s 2).
const MAX_JSON_BYTES: usize = 4 * MAX_REPLY_BYTES;

/// An [`Assistant`] backed by any OpenAI-compatible `POST {base_url}/chat/completions` endpoint
/// (OpenAI, vLLM, Ollama, llama.cpp server, TGI, gateways).
///
/// Retries rate limits, server errors, timeouts and connection failures with jittered exponential
/// backoff; bounds the requests in flight and the callers waiting for one. Cheap to clone.
#[derive(Clone)]
pub struct OpenAiAssistant {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    endpoint: Url,
    /// `Bearer <key>`, marked sensitive so that reqwest and hyper never print it.
    authorization: Option<HeaderValue>,
    /// Kept only to scrub the key from provider messages that might echo it.
    api_key: Option<SecretString>,
    settings: OpenAiSettings,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl fmt::Debug for OpenAiAssistant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("OpenAiAssistant")
            .field("endpoint", &without_credentials(&inner.endpoint))
            .field("model", &inner.settings.model)
            .field("api_key", &inner.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("max_concurrency", &inner.settings.max_concurrency)
            .field("max_queue", &inner.settings.max_queue)
            .finish_non_exhaustive()
    }
}

impl OpenAiAssistant {
    /// Checks the settings and builds the HTTP client. Makes no request.
    pub fn new(settings: OpenAiSettings) -> Result<Self, OpenAiConfigError> {
        let endpoint = endpoint(&settings.base_url)?;
        if settings.model.trim().is_empty() {
            return Err(OpenAiConfigError::EmptyModel);
        }
        if settings.max_concurrency == 0 {
            return Err(OpenAiConfigError::MaxConcurrency);
        }
        if settings.timeout.is_zero() {
            return Err(OpenAiConfigError::Timeout);
        }
        let authorization = match &settings.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| OpenAiConfigError::ApiKey)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("chat-server/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|error| OpenAiConfigError::HttpClient(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                endpoint,
                authorization,
                api_key: settings.api_key.clone(),
                permits: Arc::new(Semaphore::new(settings.max_concurrency)),
                waiting: AtomicUsize::new(0),
                settings,
            }),
        })
    }

    /// The whole reply in one non-streamed request.
    #[tracing::instrument(name = "assistant.reply", skip_all, fields(model = %self.inner.settings.model))]
    async fn complete(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        let inner = &self.inner;
        let mut call = CallRecorder::start(&inner.settings.model);
        let result = async {
            let _permit = inner.admit().await?;
            let body = inner.request_body(context, false)?;
            inner
                .with_retries(|| {
                    let body = body.clone();
                    async move {
                        let attempt = async {
                            let response =
                                inner.check_status(inner.send(body, false).await?).await?;
                            read_completion(response).await
                        };
                        tokio::time::timeout(inner.settings.timeout, attempt)
                            .await
                            .unwrap_or_else(|_| Err(Failure::timed_out()))
                    }
                })
                .await
        }
        .await;
        call.finish(Outcome::of(&result));
        if let Ok(text) = &result {
            tracing::debug!(chars = text.chars().count(), "reply received");
        }
        result
    }

    /// Opens the stream and waits for its first piece; the rest arrives through the stream.
    #[tracing::instrument(name = "assistant.reply_stream", skip_all, fields(model = %self.inner.settings.model))]
    async fn open_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        let inner = Arc::clone(&self.inner);
        let mut call = CallRecorder::start(&inner.settings.model);
        let opened = async {
            let permit = inner.admit().await?;
            let body = inner.request_body(context, true)?;
            let stream = inner
                .with_retries(|| {
                    let body = body.clone();
                    let inner = &inner;
                    async move {
                        let timeout = inner.settings.timeout;
                        let deadline = Instant::now() + timeout;
                        let response = timeout_at(deadline, async {
                            inner.check_status(inner.send(body, true).await?).await
                        })
                        .await
                        .unwrap_or_else(|_| Err(Failure::timed_out()))?;
                        let media_type = media_type(&response);
                        let mut stream = if media_type.eq_ignore_ascii_case("text/event-stream") {
                            PieceStream::new(response.bytes_stream().boxed(), deadline, timeout)
                        } else if media_type.eq_ignore_ascii_case("application/json") {
                            // Some servers ignore `stream: true` and send the whole completion.
                            let text = timeout_at(deadline, read_completion(response))
                                .await
                                .unwrap_or_else(|_| Err(Failure::timed_out()))?;
                            PieceStream::whole(text, timeout)
                        } else {
                            return Err(Failure::Fatal(AssistantError::Provider(format!(
                                "the provider answered with content type {:?} instead of text/event-stream",
                                inner.quote(media_type)
                            ))));
                        };
                        // Until a piece exists nothing was shown to anyone: failures may retry.
                        match stream.next_piece().await {
                            Ok(Some(first)) => {
                                stream.pending.push_front(first);
                                Ok(stream)
                            }
                            Ok(None) => Err(Failure::Fatal(empty_reply())),
                            Err(StreamFailure::Idle) => Err(Failure::timed_out()),
                            Err(StreamFailure::Cut(detail)) => {
                                Err(Failure::retry(RetryReason::Connection, detail))
                            }
                            // A request the provider refuses fails before it streams (a 4xx);
                            // an error event is the model failing while it ran, like a 5xx.
                            Err(StreamFailure::Provider(message)) => Err(Failure::retry(
                                RetryReason::ServerError,
                                inner.quote(&message),
                            )),
                            Err(other) => Err(Failure::Fatal(other.into_error(inner))),
                        }
                    }
                })
                .await?;
            Ok((permit, stream))
        }
        .await;
        let (permit, pieces) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                call.finish(Outcome::of_error(&error));
                return Err(error);
            }
        };
        call.first_piece();
        let live = LiveStream {
            pieces,
            inner,
            call,
            _permit: permit,
            span: Span::current(),
            ended: false,
        };
        Ok(stream::unfold(live, LiveStream::next).boxed())
    }
}

#[async_trait]
impl Assistant for OpenAiAssistant {
    fn context_messages(&self) -> usize {
        self.inner.settings.context_messages
    }

    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        self.complete(context).await
    }

    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        self.open_stream(context).await
    }
}

/// `{base_url}/chat/completions`, joined on the path: a gateway's query string (Azure's
/// `?api-version=...`) stays the query instead of swallowing the path appended after it.
fn endpoint(base_url: &str) -> Result<Url, OpenAiConfigError> {
    let mut url = Url::parse(base_url.trim()).map_err(|_| OpenAiConfigError::BaseUrl)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(OpenAiConfigError::BaseUrl);
    }
    let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    Ok(url)
}

fn empty_reply() -> AssistantError {
    AssistantError::Provider("the provider returned an empty reply".to_owned())
}

fn reply_too_long() -> AssistantError {
    AssistantError::Provider(format!(
        "the reply is longer than {} MiB",
        MAX_REPLY_BYTES >> 20
    ))
}

/// The media type of a response without its parameters (`; charset=utf-8`); empty if none.
fn media_type(response: &Response) -> &str {
    let value = response.headers().get(CONTENT_TYPE);
    let value = value.and_then(|value| value.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim()
}

/// The text of a non-streamed answer, its size bounded.
async fn read_completion(response: Response) -> Result<String, Failure> {
    let body = read_body(response, MAX_JSON_BYTES).await?;
    let completion: Completion = serde_json::from_slice(&body).map_err(|error| {
        Failure::Fatal(AssistantError::Provider(format!(
            "the provider sent a malformed response: {error}"
        )))
    })?;
    match completion.into_text() {
        Some(text) if text.len() > MAX_REPLY_BYTES => Err(Failure::Fatal(reply_too_long())),
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(Failure::Fatal(empty_reply())),
    }
}

/// The whole body, refused as soon as it passes `limit` bytes.
async fn read_body(mut response: Response, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| Failure::retry(RetryReason::Connection, describe(error)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(Failure::Fatal(AssistantError::Provider(format!(
                "the provider's answer is longer than {} MiB",
                limit >> 20
            ))));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why an attempt failed, and whether another one may help.
enum Failure {
    Retry {
        reason: RetryReason,
        retry_after: Option<Duration>,
        detail: String,
    },
    Fatal(AssistantError),
}

impl Failure {
    fn retry(reason: RetryReason, detail: String) -> Self {
        Failure::Retry {
            reason,
            retry_after: None,
            detail,
        }
    }

    fn timed_out() -> Self {
        Failure::retry(RetryReason::Timeout, "the attempt timed out".to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryReason {
    RateLimited,
    RequestTimeout,
    ServerError,
    Timeout,
    Connection,
}

impl RetryReason {
    fn label(self) -> &'static str {
        match self {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::RequestTimeout => "request_timeout",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
        }
    }
}

/// The error chain of a reqwest error, without the URL (it may carry credentials).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Takes a waiting caller off the count when it stops waiting, however it stops.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    /// A slot toward the provider, held until the request (or stream) is over.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, AssistantError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        let already_waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if already_waiting >= self.settings.max_queue {
            tracing::warn!(
                waiting = already_waiting,
                "too many callers waiting for the assistant"
            );
            return Err(AssistantError::Overloaded);
        }
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AssistantError::Provider("the assistant is shutting down".to_owned()))
    }

    fn request_body(&self, context: &ReplyContext, stream: bool) -> Result<Bytes, AssistantError> {
        let request = ChatRequest::new(
            &self.settings.model,
            self.settings.system_prompt.as_deref(),
            context,
            stream,
        );
        tracing::debug!(messages = request.messages.len(), "asking the provider");
        serde_json::to_vec(&request)
            .map(Bytes::from)
            .map_err(|error| AssistantError::Unknown(error.into()))
    }

    async fn send(&self, body: Bytes, stream: bool) -> Result<Response, Failure> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        request.send().await.map_err(|error| {
            let reason = if error.is_timeout() {
                RetryReason::Timeout
            } else {
                RetryReason::Connection
            };
            Failure::retry(
                reason,
                format!("could not reach the provider: {}", describe(error)),
            )
        })
    }

    /// Passes a 2xx response on; turns anything else into a retryable or a final failure.
    async fn check_status(&self, response: Response) -> Result<Response, Failure> {
        let status = response.status();
        Span::current().record("status", status.as_u16());
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let detail = match self.error_message(response).await {
            Some(message) => format!("HTTP {status}: {message}"),
            None => format!("HTTP {status}"),
        };
        let reason = match status.as_u16() {
            429 => RetryReason::RateLimited,
            408 => RetryReason::RequestTimeout,
            500..=599 => RetryReason::ServerError,
            _ => {
                return Err(Failure::Fatal(AssistantError::Provider(format!(
                    "the provider refused the request: {detail}"
                ))))
            }
        };
        Err(Failure::Retry {
            reason,
            retry_after,
            detail,
        })
    }

    /// The provider's own explanation from an error body, shortened and with the key scrubbed.
    async fn error_message(&self, mut response: Response) -> Option<String> {
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let message = error_message_from_body(&body)?;
        Some(self.quote(&message))
    }

    fn quote(&self, message: &str) -> String {
        let mut message = message.trim().to_owned();
        if let Some(key) = &self.api_key {
            let key = key.expose_secret();
            if !key.is_empty() {
                message = message.replace(key, "[REDACTED]");
            }
        }
        if message.chars().count() > MAX_QUOTED_CHARS {
            message = message.chars().take(MAX_QUOTED_CHARS).collect::<String>() + "…";
        }
        message
    }

    /// Runs attempts until one succeeds, one fails for good, or `max_retries` retries are spent.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, AssistantError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let settings = &self.settings;
        let attempts = settings.max_retries.saturating_add(1);
        for number in 1..=attempts {
            let span = tracing::info_span!(
                "provider_call",
                model = %settings.model,
                attempt = number,
                status = field::Empty,
                latency_ms = field::Empty,
            );
            let started = Instant::now();
            let result = attempt().instrument(span.clone()).await;
            span.record("latency_ms", started.elapsed().as_millis() as u64);
            let (reason, retry_after, detail) = match result {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => {
                    span.in_scope(|| tracing::warn!(%error, "the provider call failed"));
                    return Err(error);
                }
                Err(Failure::Retry {
                    reason,
                    retry_after,
                    detail,
                }) => (reason, retry_after, detail),
            };
            if number == attempts {
                span.in_scope(|| {
                    tracing::warn!(reason = reason.label(), %detail, "giving up on the provider")
                });
                return Err(match reason {
                    RetryReason::Timeout => AssistantError::Timeout,
                    _ => AssistantError::Provider(format!(
                        "gave up after {attempts} attempts; last error: {detail}"
                    )),
                });
            }
            let delay = delay_before_retry(
                number - 1,
                settings.initial_backoff,
                settings.max_backoff,
                retry_after,
            );
            span.in_scope(|| {
                tracing::info!(
                    reason = reason.label(),
                    %detail,
                    delay_ms = delay.as_millis() as u64,
                    "retrying the provider call"
                )
            });
            crate::metrics::retried(&settings.model, reason.label());
            tokio::time::sleep(delay).await;
        }
        unreachable!("the last attempt returns")
    }
}

/// How a stream went wrong.
enum StreamFailure {
    /// No text arrived for a whole timeout.
    Idle,
    /// The connection broke or the body ended before `[DONE]`.
    Cut(String),
    Malformed(String),
    /// The provider reported an error inside the stream.
    Provider(String),
    /// The text passed [`MAX_REPLY_BYTES`].
    TooLong,
}

impl StreamFailure {
    /// The error to report; a provider's own message is quoted like one from an error body: key
    /// scrubbed, length bounded.
    fn into_error(self, inner: &Inner) -> AssistantError {
        match self {
            StreamFailure::Idle => AssistantError::Timeout,
            StreamFailure::Cut(detail) => {
                AssistantError::Provider(format!("the reply stream broke off: {detail}"))
            }
            StreamFailure::Malformed(detail) => {
                AssistantError::Provider(format!("the provider sent a malformed stream: {detail}"))
            }
            StreamFailure::Provider(message) => AssistantError::Provider(format!(
                "the provider failed mid-stream: {}",
                inner.quote(&message)
            )),
            StreamFailure::TooLong => reply_too_long(),
        }
    }
}

/// How long `[DONE]` is waited for after the chunk giving the finish reason.
const AFTER_FINISH_PATIENCE: Duration = Duration::from_secs(1);

/// Text pieces read from an SSE body.
struct PieceStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    pending: VecDeque<String>,
    done: bool,
    /// A chunk said why the reply finished: what follows can only be `[DONE]`.
    finished: bool,
    /// When the next piece of text is due: `timeout` after the attempt started, then after each
    /// piece or chunk of a reasoning model's thinking. Keep-alive comments and empty chunks do not
    /// move it: they are no sign of progress.
    deadline: Instant,
    timeout: Duration,
    text_bytes: usize,
}

impl PieceStream {
    fn new(
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Self {
        Self {
            body,
            parser: SseParser::new(MAX_JSON_BYTES),
            pending: VecDeque::new(),
            done: false,
            finished: false,
            deadline,
            timeout,
            text_bytes: 0,
        }
    }

    /// A reply that came whole, as a stream of that one piece.
    fn whole(text: String, timeout: Duration) -> Self {
        let mut pieces = Self::new(stream::empty().boxed(), Instant::now() + timeout, timeout);
        pieces.pending.push_back(text);
        pieces.done = true;
        pieces
    }

    /// How long the next part of the body may take: the timeout, or, once the reply finished and
    /// only `[DONE]` may follow, a moment, so that a server holding the body open does not hold
    /// the finished reply (and the call's concurrency slot) for a whole timeout.
    fn patience(&self) -> Duration {
        if self.finished {
            self.timeout.min(AFTER_FINISH_PATIENCE)
        } else {
            self.timeout
        }
    }

    /// The next non-empty piece; `None` after `[DONE]`.
    async fn next_piece(&mut self) -> Result<Option<String>, StreamFailure> {
        loop {
            if let Some(piece) = self.pending.pop_front() {
                self.deadline = Instant::now() + self.patience();
                return Ok(Some(piece));
            }
            if self.done {
                return Ok(None);
            }
            let events = match timeout_at(self.deadline, self.body.next()).await {
                // The chunk giving the finish reason came: the reply is whole, however the body
                // then ends (a proxy cutting it, a server holding it open without `[DONE]`).
                Err(_) | Ok(Some(Err(_))) if self.finished => {
                    self.done = true;
                    continue;
                }
                Err(_) => return Err(StreamFailure::Idle),
                Ok(Some(Ok(bytes))) => self.parser.feed(&bytes),
                Ok(Some(Err(error))) => return Err(StreamFailure::Cut(describe(error))),
                Ok(None) => {
                    let events = self
                        .parser
                        .finish()
                        .map_err(|error| StreamFailure::Malformed(error.to_string()))?;
                    self.handle(events)?;
                    // Some servers end the body after the chunk that says why the reply finished,
                    // without `[DONE]`; a body that ends before either was cut off.
                    if !self.done && !self.finished {
                        return Err(StreamFailure::Cut(
                            "the stream ended without [DONE]".to_owned(),
                        ));
                    }
                    self.done = true;
                    continue;
                }
            };
            let events = events.map_err(|error| StreamFailure::Malformed(error.to_string()))?;
            self.handle(events)?;
        }
    }

    fn handle(&mut self, events: Vec<String>) -> Result<(), StreamFailure> {
        for data in events {
            if self.done {
                break;
            }
            if data.trim() == "[DONE]" {
                self.done = true;
                break;
            }
            let chunk: Chunk = serde_json::from_str(&data)
                .map_err(|error| StreamFailure::Malformed(error.to_string()))?;
            if let Some(message) = chunk.error_message() {
                return Err(StreamFailure::Provider(message));
            }
            if chunk.is_last() && !self.finished {
                self.finished = true;
                self.deadline = self.deadline.min(Instant::now() + self.patience());
            }
            if chunk.is_reasoning() {
                // A reasoning model may think for longer than the timeout before its first text.
                self.deadline = Instant::now() + self.patience();
            }
            if let Some(content) = chunk.into_content().filter(|c| !c.is_empty()) {
                self.text_bytes += content.len();
                if self.text_bytes > MAX_REPLY_BYTES {
                    return Err(StreamFailure::TooLong);
                }
                self.pending.push_back(content);
            }
        }
        Ok(())
    }
}

/// A stream handed to the caller: holds the concurrency slot until it ends or is dropped.
struct LiveStream {
    pieces: PieceStream,
    inner: Arc<Inner>,
    call: CallRecorder,
    _permit: OwnedSemaphorePermit,
    span: Span,
    ended: bool,
}

impl LiveStream {
    async fn next(mut self) -> Option<(Result<String, AssistantError>, Self)> {
        if self.ended {
            return None;
        }
        match self.pieces.next_piece().await {
            Ok(Some(piece)) => {
                self.call.add_chars(piece.chars().count());
                Some((Ok(piece), self))
            }
            Ok(None) => {
                self.span
                    .in_scope(|| tracing::debug!(chars = self.call.chars(), "reply stream ended"));
                self.call.finish(Outcome::Success);
                None
            }
            Err(failure) => {
                let error = failure.into_error(&self.inner);
                self.span
                    .in_scope(|| tracing::warn!(%error, "the reply stream failed"));
                self.call.finish(Outcome::of_error(&error));
                self.ended = true;
                Some((Err(error), self))
            }
        }
    }
}
