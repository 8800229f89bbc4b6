//! Every domain failure, from mocked ports, as the client sees it: status, headers and the exact
//! JSON body, and never the internal cause.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use adapters_generation_log::MemoryGenerationLog;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use anyhow::anyhow;
use api_actix::{ApiSettings, AppState, ClientLimits, Generations};
use async_trait::async_trait;
use domain::ports::{MockAssistant, MockChatRepository};
use domain::{
    AssistantError, ChatRepository, ChatService, ChatServiceConfig, Conversation,
    ConversationCursor, ConversationId, ConversationTitle, Exchange, GenerationEvents,
    GenerationId, GenerationLog, GenerationLogError, GenerationState, Message, MessageCursor,
    MessageWindow, NewExchange, NewMessage, Page, PageLimit, RepositoryError, Role, Timestamp,
};
use futures::{stream, StreamExt};
use serde_json::{json, Value};

const SECRET: &str = "secret detail";

struct Reply {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON body: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn assert_no_leak(&self) {
        assert!(
            !self.body.contains(SECRET),
            "internal cause leaked: {}",
            self.body
        );
        assert!(
            !self.body.contains("secret"),
            "internal cause leaked: {}",
            self.body
        );
    }

    /// A product API error with this status and code, and nothing else in the body.
    fn assert_api_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert!(self
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let body = self.json();
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        self.assert_no_leak();
    }

    /// A seed API error: `{"status": "error", "message"}` only.
    fn assert_seed_error(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        let body = self.json();
        assert_eq!(body["status"], "error", "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        self.assert_no_leak();
    }

    /// The reply's events after the `start` event that opens every stream.
    fn events(&self) -> Vec<(String, Value)> {
        let mut events = self.all_events();
        assert_eq!(
            events.first().map(|(name, _)| name.as_str()),
            Some("start"),
            "{}",
            self.body
        );
        events.remove(0);
        events
    }

    /// The text of each `delta` event, in order.
    fn delta_texts(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(name, _)| name == "delta")
            .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
            .collect()
    }

    fn all_events(&self) -> Vec<(String, Value)> {
        self.body
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                (name, serde_json::from_str(&data).expect("JSON event data"))
            })
            .collect()
    }
}

async fn call(
    repository: MockChatRepository,
    assistant: MockAssistant,
    request: TestRequest,
) -> Reply {
    let log = Arc::new(MemoryGenerationLog::new(Duration::from_secs(60), 1 << 20));
    call_with_log(repository, assistant, log, request).await
}

async fn call_with_log(
    repository: MockChatRepository,
    assistant: MockAssistant,
    generation_log: Arc<dyn GenerationLog>,
    request: TestRequest,
) -> Reply {
    let app =
        test::init_service(api_actix::app(state(repository, assistant, generation_log))).await;
    let response = test::call_service(&app, request.to_request()).await;
    read(response).await
}

async fn read(response: ServiceResponse<impl MessageBody>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await;
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    }
}

fn state(
    repository: MockChatRepository,
    assistant: MockAssistant,
    generation_log: Arc<dyn GenerationLog>,
) -> AppState {
    state_with(Arc::new(repository), assistant, generation_log)
}

fn state_with(
    repository: Arc<dyn ChatRepository>,
    assistant: MockAssistant,
    generation_log: Arc<dyn GenerationLog>,
) -> AppState {
    let settings = ApiSettings {
        max_body_bytes: 4096,
        body_timeout: Duration::from_secs(10),
        cors_allowed_origins: vec![],
        web_dist_dir: None,
        hsts: false,
        allowed_hosts: vec!["*".to_owned()],
        metrics_through_proxies: false,
        rate_limit: None,
        trusted_proxies: Vec::new(),
        max_streams_per_client: 0,
        max_header_bytes: 16 * 1024,
        readiness_deadline: Duration::from_secs(3),
        stream_keep_alive: None,
    };
    AppState {
        service: Arc::new(ChatService::new(
            repository,
            Arc::new(assistant),
            ChatServiceConfig {
                max_message_chars: 100,
            },
        )),
        generations: Generations::new(tokio::runtime::Handle::current()),
        generation_log,
        metrics: None,
        limits: ClientLimits::from(&settings),
        settings: Arc::new(settings),
    }
}

fn seed_send(text: &str) -> TestRequest {
    TestRequest::post()
        .uri("/chat/message")
        .set_json(json!({ "message": text }))
}

fn v1_send(id: ConversationId, text: &str) -> TestRequest {
    TestRequest::post()
        .uri(&format!("/api/v1/conversations/{id}/messages"))
        .set_json(json!({ "content": text }))
}

fn v1_stream(id: ConversationId, text: &str) -> TestRequest {
    v1_send(id, text).insert_header(("accept", "text/event-stream"))
}

/// An assistant without history that answers `reply` to everything.
fn assistant_replying(reply: &'static str) -> MockAssistant {
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant
        .expect_reply()
        .returning(move |_| Ok(reply.to_owned()));
    assistant
}

fn assistant_failing(error: fn() -> AssistantError) -> MockAssistant {
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant
        .expect_reply()
        .times(1)
        .returning(move |_| Err(error()));
    assistant
}

fn assistant_streaming(pieces: Vec<Result<String, AssistantError>>) -> MockAssistant {
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    let mut pieces = Some(pieces);
    assistant
        .expect_reply_stream()
        .times(1)
        .returning(move |_| Ok(stream::iter(pieces.take().expect("one stream")).boxed()));
    assistant
}

/// An assistant without history that streams `pieces`.
fn assistant_streaming_text(pieces: &[&str]) -> MockAssistant {
    assistant_streaming(pieces.iter().map(|piece| Ok((*piece).to_owned())).collect())
}

fn repository_never_storing() -> MockChatRepository {
    let mut repository = MockChatRepository::new();
    repository.expect_append_exchange().never();
    repository
}

/// The product API checks a conversation before asking the assistant; here every one exists.
fn existing(mut repository: MockChatRepository) -> MockChatRepository {
    repository
        .expect_get_conversation()
        .returning(|id| Ok(conversation(id)));
    repository
}

fn conversation(id: ConversationId) -> Conversation {
    Conversation::new(
        id,
        ConversationTitle::new("mocked").unwrap(),
        Timestamp::now(),
    )
}

fn stored_message(
    conversation_id: ConversationId,
    message: &NewMessage,
    role: Role,
    position: i64,
) -> Message {
    Message {
        id: message.id,
        conversation_id,
        position,
        role,
        content: message.content.clone(),
        created_at: message.created_at,
    }
}

fn stored(exchange: &NewExchange) -> Exchange {
    let id = exchange.conversation_id;
    Exchange {
        user_message: stored_message(id, &exchange.user, Role::User, 1),
        assistant_message: stored_message(id, &exchange.assistant, Role::Assistant, 2),
    }
}

// ---- the seed API's exact bodies ----

#[actix_web::test]
async fn an_unknown_storage_error_on_the_seed_send_is_the_exact_500() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .times(1)
        .returning(|_| Err(RepositoryError::Unknown(anyhow!(SECRET))));
    let reply = call(repository, assistant_replying("hi"), seed_send("hello")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.json(),
        json!({"status": "error", "message": "Internal Server Error"})
    );
    reply.assert_no_leak();
}

#[actix_web::test]
async fn a_failing_history_read_is_the_exact_500() {
    let errors = [
        (|| RepositoryError::Unknown(anyhow!(SECRET))) as fn() -> RepositoryError,
        || RepositoryError::Unavailable(SECRET.to_owned()),
    ];
    // The conversation is read first, then its first page: either may fail.
    for (error, conversation_read_fails) in errors.into_iter().flat_map(|e| [(e, true), (e, false)])
    {
        let mut repository = MockChatRepository::new();
        if conversation_read_fails {
            repository
                .expect_get_conversation()
                .times(1)
                .returning(move |_| Err(error()));
        } else {
            repository
                .expect_get_conversation()
                .times(1)
                .returning(|id| {
                    let title = ConversationTitle::new("Chat").unwrap();
                    Ok(Conversation::new(id, title, Timestamp::now()))
                });
            repository
                .expect_list_messages()
                .times(1)
                .returning(move |_, _, _| Err(error()));
        }
        let reply = call(
            repository,
            MockAssistant::new(),
            TestRequest::get().uri("/chat/history"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.body, r#"{"message":"Failed to fetch chat history."}"#);
    }
}

#[actix_web::test]
async fn seed_send_failures_keep_the_seed_shape_with_the_right_status() {
    let cases: [(fn() -> AssistantError, u16); 3] = [
        (|| AssistantError::Provider(SECRET.to_owned()), 502),
        (|| AssistantError::Timeout, 504),
        (|| AssistantError::Overloaded, 503),
    ];
    for (error, status) in cases {
        let reply = call(
            repository_never_storing(),
            assistant_failing(error),
            seed_send("hello"),
        )
        .await;
        reply.assert_seed_error(status);
    }
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .returning(|_| Err(RepositoryError::Unavailable(SECRET.to_owned())));
    let reply = call(repository, assistant_replying("hi"), seed_send("hello")).await;
    reply.assert_seed_error(503);
    assert_eq!(reply.header("retry-after"), Some("1"));
}

// ---- storage failures on the product API ----

#[actix_web::test]
async fn an_unknown_storage_error_is_500_internal_error() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .times(1)
        .returning(|_| Err(RepositoryError::Unknown(anyhow!(SECRET))));
    let reply = call(
        existing(repository),
        assistant_replying("hi"),
        v1_send(ConversationId::DEFAULT, "hello"),
    )
    .await;
    reply.assert_api_error(500, "internal_error");
    assert_eq!(
        reply.json(),
        json!({"status": "error", "message": "Internal Server Error", "code": "internal_error"})
    );

    let mut repository = MockChatRepository::new();
    repository
        .expect_list_conversations()
        .returning(|_, _| Err(RepositoryError::Unknown(anyhow!(SECRET))));
    let reply = call(
        repository,
        MockAssistant::new(),
        TestRequest::get().uri("/api/v1/conversations"),
    )
    .await;
    reply.assert_api_error(500, "internal_error");
}

#[actix_web::test]
async fn unavailable_storage_is_503_with_retry_after() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_list_conversations()
        .times(1)
        .returning(|_, _| Err(RepositoryError::Unavailable(SECRET.to_owned())));
    let reply = call(
        repository,
        MockAssistant::new(),
        TestRequest::get().uri("/api/v1/conversations"),
    )
    .await;
    reply.assert_api_error(503, "storage_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));

    let id = ConversationId::generate();
    let mut repository = MockChatRepository::new();
    repository
        .expect_get_conversation()
        .times(1)
        .returning(|_| Err(RepositoryError::Unavailable(SECRET.to_owned())));
    let reply = call(
        repository,
        MockAssistant::new(),
        TestRequest::get().uri(&format!("/api/v1/conversations/{id}")),
    )
    .await;
    reply.assert_api_error(503, "storage_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));

    // A send to a conversation that cannot be checked never reaches the assistant.
    let mut repository = MockChatRepository::new();
    repository
        .expect_get_conversation()
        .times(1)
        .returning(|_| Err(RepositoryError::Unavailable(SECRET.to_owned())));
    repository.expect_append_exchange().never();
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant.expect_reply().never();
    let reply = call(repository, assistant, v1_send(id, "hello")).await;
    reply.assert_api_error(503, "storage_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[actix_web::test]
async fn overloaded_storage_is_503_overloaded_with_retry_after() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .times(1)
        .returning(|_| Err(RepositoryError::Overloaded));
    let reply = call(
        existing(repository),
        assistant_replying("hi"),
        v1_send(ConversationId::DEFAULT, "hello"),
    )
    .await;
    reply.assert_api_error(503, "overloaded");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[actix_web::test]
async fn an_unknown_conversation_is_404_before_the_assistant_is_asked() {
    let id = ConversationId::generate();
    let mut repository = MockChatRepository::new();
    repository
        .expect_get_conversation()
        .withf(move |asked| *asked == id)
        .times(1)
        .returning(|_| Err(RepositoryError::NotFound));
    repository.expect_append_exchange().never();
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant.expect_reply().never();
    let reply = call(repository, assistant, v1_send(id, "hello")).await;
    reply.assert_api_error(404, "conversation_not_found");
}

#[actix_web::test]
async fn a_conflict_is_409() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_create_conversation()
        .times(1)
        .returning(|_| Err(RepositoryError::Conflict));
    let reply = call(
        repository,
        MockAssistant::new(),
        TestRequest::post()
            .uri("/api/v1/conversations")
            .set_json(json!({"title": "dup"})),
    )
    .await;
    reply.assert_api_error(409, "conflict");
}

/// `/readyz` as answered when storage's health check gives `health`.
async fn readiness(health: fn() -> Result<(), RepositoryError>) -> Reply {
    let mut repository = MockChatRepository::new();
    repository.expect_health_check().times(1).returning(health);
    call(
        repository,
        MockAssistant::new(),
        TestRequest::get().uri("/readyz"),
    )
    .await
}

#[actix_web::test]
async fn readiness_is_503_when_storage_is_unavailable() {
    readiness(|| Err(RepositoryError::Unavailable(SECRET.to_owned())))
        .await
        .assert_api_error(503, "storage_unavailable");
    assert_eq!(readiness(|| Ok(())).await.status, StatusCode::OK);
    // Busy is not unready: its queue full, storage still serves.
    assert_eq!(
        readiness(|| Err(RepositoryError::Overloaded)).await.status,
        StatusCode::OK
    );

    // Liveness never touches storage.
    let mut repository = MockChatRepository::new();
    repository.expect_health_check().never();
    let reply = call(
        repository,
        MockAssistant::new(),
        TestRequest::get().uri("/healthz"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "ok"}));
}

/// Storage that never answers a health check: a hung database behind a live connection.
struct StalledStorage;

#[async_trait]
impl ChatRepository for StalledStorage {
    async fn create_conversation(&self, _: &Conversation) -> Result<(), RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn get_conversation(&self, _: ConversationId) -> Result<Conversation, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn list_conversations(
        &self,
        _: Option<ConversationCursor>,
        _: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn rename_conversation(
        &self,
        _: ConversationId,
        _: &ConversationTitle,
        _: Timestamp,
    ) -> Result<Conversation, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn delete_conversation(&self, _: ConversationId) -> Result<(), RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn list_messages(
        &self,
        _: ConversationId,
        _: MessageWindow,
        _: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn append_exchange(&self, _: &NewExchange) -> Result<Exchange, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn append_exchange_waiting_for_room(
        &self,
        _: &NewExchange,
    ) -> Result<Exchange, RepositoryError> {
        unreachable!("readiness only checks health")
    }
    async fn health_check(&self) -> Result<(), RepositoryError> {
        std::future::pending().await
    }
}

#[actix_web::test]
async fn readiness_is_503_when_storage_does_not_answer_in_time() {
    tokio::time::pause();
    let log = Arc::new(MemoryGenerationLog::new(Duration::from_secs(60), 1 << 20));
    let state = state_with(Arc::new(StalledStorage), MockAssistant::new(), log);
    let app = test::init_service(api_actix::app(state)).await;
    // Time is paused: waiting costs nothing, and a readiness that never answers fails here.
    let response = tokio::time::timeout(
        Duration::from_secs(60),
        test::call_service(&app, TestRequest::get().uri("/readyz").to_request()),
    )
    .await
    .expect("readiness answers within its deadline");
    read(response)
        .await
        .assert_api_error(503, "storage_unavailable");
}

#[actix_web::test]
async fn metrics_without_a_renderer_are_a_json_404() {
    let reply = call(
        MockChatRepository::new(),
        MockAssistant::new(),
        TestRequest::get().uri("/metrics"),
    )
    .await;
    reply.assert_api_error(404, "not_found");
}

// ---- assistant failures ----

/// A failure, the status and code it must produce, and the Retry-After it must carry.
type FailureCase = (
    fn() -> AssistantError,
    u16,
    &'static str,
    Option<&'static str>,
);

#[actix_web::test]
async fn assistant_failures_map_to_gateway_statuses_and_store_nothing() {
    let cases: [FailureCase; 4] = [
        (
            || AssistantError::Provider(SECRET.to_owned()),
            502,
            "assistant_failed",
            None,
        ),
        (|| AssistantError::Timeout, 504, "assistant_timeout", None),
        (
            || AssistantError::Overloaded,
            503,
            "assistant_overloaded",
            Some("1"),
        ),
        (
            || AssistantError::Unknown(anyhow!(SECRET)),
            500,
            "internal_error",
            None,
        ),
    ];
    for (error, status, code, retry_after) in cases {
        // The seed route: its conversation is created on demand, so no check before the
        // assistant.
        let mut repository = repository_never_storing();
        repository.expect_get_conversation().never();
        let reply = call(repository, assistant_failing(error), seed_send("hello")).await;
        reply.assert_seed_error(status);
        assert_eq!(reply.header("retry-after"), retry_after, "{code}");

        // Another conversation: checked first, then the assistant fails.
        let id = ConversationId::generate();
        let mut repository = repository_never_storing();
        repository
            .expect_get_conversation()
            .times(1)
            .returning(move |_| Ok(conversation(id)));
        let reply = call(repository, assistant_failing(error), v1_send(id, "hello")).await;
        reply.assert_api_error(status, code);
        assert_eq!(reply.header("retry-after"), retry_after, "{code}");
    }
}

#[actix_web::test]
async fn an_empty_reply_is_an_assistant_failure() {
    let reply = call(
        existing(repository_never_storing()),
        assistant_replying(""),
        v1_send(ConversationId::DEFAULT, "hello"),
    )
    .await;
    reply.assert_api_error(502, "assistant_failed");
}

#[actix_web::test]
async fn a_successful_send_returns_the_stored_exchange() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .withf(|exchange| {
            exchange.conversation_id == ConversationId::DEFAULT
                && exchange.user.content == "hello"
                && exchange.assistant.content == "Hi there!"
        })
        .times(1)
        .returning(|exchange| Ok(stored(exchange)));
    let reply = call(
        existing(repository),
        assistant_replying("Hi there!"),
        v1_send(ConversationId::DEFAULT, "hello"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["user_message"]["content"], "hello");
    assert_eq!(body["user_message"]["role"], "user");
    assert_eq!(body["assistant_message"]["content"], "Hi there!");
    assert_eq!(body["assistant_message"]["role"], "assistant");
    assert_eq!(
        body["assistant_message"]["conversation_id"],
        ConversationId::DEFAULT.to_string()
    );

    // The seed route answers with the same reply in its own shape.
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange()
        .times(1)
        .returning(|exchange| Ok(stored(exchange)));
    let reply = call(
        repository,
        assistant_replying("Hi there!"),
        seed_send("hello"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, r#"{"status":"Success","response":"Hi there!"}"#);
}

// ---- streamed replies ----

#[actix_web::test]
async fn a_stream_that_fails_midway_sends_an_error_event_and_stores_nothing() {
    let assistant = assistant_streaming(vec![
        Ok("partial ".to_owned()),
        Err(AssistantError::Provider(SECRET.to_owned())),
    ]);
    let reply = call(
        existing(repository_never_storing()),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hello"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    assert_eq!(reply.header("x-accel-buffering"), Some("no"));
    let events = reply.events();
    assert_eq!(events.len(), 2, "{}", reply.body);
    assert_eq!(events[0].0, "delta");
    assert_eq!(events[0].1, json!({"text": "partial "}));
    assert_eq!(events[1].0, "error");
    assert_eq!(events[1].1["code"], "assistant_failed");
    assert!(!events[1].1["message"].as_str().unwrap().is_empty());
    assert_eq!(events[1].1.as_object().unwrap().len(), 2, "{}", reply.body);
    reply.assert_no_leak();
}

#[actix_web::test]
async fn every_streamed_event_carries_a_resumable_id_and_the_first_is_start() {
    let assistant = assistant_streaming(vec![Ok("one ".to_owned()), Err(AssistantError::Timeout)]);
    let reply = call(
        existing(repository_never_storing()),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hello"),
    )
    .await;
    let start = &reply.all_events()[0];
    assert_eq!(start.1["content"], "hello");
    assert_eq!(
        start.1["conversation_id"],
        ConversationId::DEFAULT.to_string()
    );
    let generation = start.1["generation_id"].as_str().unwrap().to_owned();
    let ids: Vec<String> = reply
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("id: ").map(str::to_owned))
        .collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|sequence| format!("{generation}:{sequence}"))
            .collect::<Vec<_>>()
    );
}

#[actix_web::test]
async fn a_stream_that_times_out_midway_reports_the_timeout() {
    let assistant = assistant_streaming(vec![
        Ok("one ".to_owned()),
        Ok("two ".to_owned()),
        Err(AssistantError::Timeout),
    ]);
    let reply = call(
        existing(repository_never_storing()),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hello"),
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "error"], "{}", reply.body);
    assert_eq!(events[2].1["code"], "assistant_timeout");
}

#[actix_web::test]
async fn a_stream_whose_storage_fails_reports_it_in_an_error_event() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange_waiting_for_room()
        .times(1)
        .returning(|_| Err(RepositoryError::Unavailable(SECRET.to_owned())));
    let assistant = assistant_streaming(vec![Ok("whole ".to_owned()), Ok("reply".to_owned())]);
    let reply = call(
        existing(repository),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hello"),
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "error"], "{}", reply.body);
    assert_eq!(events[2].1["code"], "storage_unavailable");
    reply.assert_no_leak();
}

#[actix_web::test]
async fn a_successful_stream_ends_with_done_carrying_the_stored_exchange() {
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange_waiting_for_room()
        .withf(|exchange| exchange.assistant.content == "Hello there, friend")
        .times(1)
        .returning(|exchange| Ok(stored(exchange)));
    let assistant = assistant_streaming(vec![
        Ok("Hello ".to_owned()),
        Ok("there, ".to_owned()),
        Ok("friend".to_owned()),
    ]);
    let reply = call(
        existing(repository),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "delta", "done"], "{}", reply.body);
    let done = &events[3].1;
    assert_eq!(done["user_message"]["content"], "hi");
    assert_eq!(done["assistant_message"]["content"], "Hello there, friend");
}

/// A log in memory whose appends of events other than `start` fail, as Redis's do through a
/// fail-over.
struct FailingLog {
    inner: MemoryGenerationLog,
    appends: AtomicUsize,
    final_attempts: AtomicUsize,
    /// The names of the final events that got into the log.
    finals: std::sync::Mutex<Vec<String>>,
    failing: Failing,
}

enum Failing {
    /// Every other attempt, so each event gets in on its second try.
    EveryOtherAttempt,
    /// The attempts in this range (counting from 0, `start` being 0).
    Between(std::ops::Range<usize>),
    /// No append fails, but following does: a reader's own connection cannot be opened.
    Follow,
    /// No append fails, but each delta takes this long to be logged.
    SlowDeltas(Duration),
    /// Only the final event fails, this many times: a fail-over that lasts longer than a delta's
    /// retries.
    FinalEvent(usize),
}

impl FailingLog {
    fn new(failing: Failing) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryGenerationLog::new(Duration::from_secs(60), 1 << 20),
            appends: AtomicUsize::new(0),
            final_attempts: AtomicUsize::new(0),
            finals: std::sync::Mutex::default(),
            failing,
        })
    }
}

#[async_trait::async_trait]
impl GenerationLog for FailingLog {
    async fn begin(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError> {
        self.inner.begin(conversation_id, generation_id).await
    }

    async fn append(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError> {
        let attempt = self.appends.fetch_add(1, Ordering::SeqCst);
        let fails = match &self.failing {
            Failing::EveryOtherAttempt => attempt % 2 == 1 && !last,
            Failing::Between(attempts) => attempts.contains(&attempt) && !last,
            Failing::Follow => false,
            Failing::SlowDeltas(delay) => {
                if name == "delta" {
                    tokio::time::sleep(*delay).await;
                }
                false
            }
            Failing::FinalEvent(failures) => {
                last && self.final_attempts.fetch_add(1, Ordering::SeqCst) < *failures
            }
        };
        if fails && name != "start" {
            return Err(GenerationLogError::Unavailable("fail-over".to_owned()));
        }
        let appended = self.inner.append(generation_id, name, data, last).await;
        if last && appended.is_ok() {
            self.finals.lock().unwrap().push(name.to_owned());
        }
        appended
    }

    async fn in_progress(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Option<GenerationId>, GenerationLogError> {
        self.inner.in_progress(conversation_id).await
    }

    async fn state(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<GenerationState>, GenerationLogError> {
        self.inner.state(generation_id).await
    }

    async fn follow(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError> {
        if matches!(self.failing, Failing::Follow) {
            return Err(GenerationLogError::Unavailable(
                "too many clients".to_owned(),
            ));
        }
        self.inner.follow(generation_id, after).await
    }
}

fn storing_once(reply: impl Into<String>) -> MockChatRepository {
    let reply = reply.into();
    let mut repository = MockChatRepository::new();
    repository
        .expect_append_exchange_waiting_for_room()
        .withf(move |exchange| exchange.assistant.content == reply)
        .times(1)
        .returning(|exchange| Ok(stored(exchange)));
    existing(repository)
}

#[actix_web::test]
async fn events_the_log_failed_to_take_are_logged_on_a_second_try() {
    let reply = call_with_log(
        storing_once("Hello there, friend"),
        assistant_streaming_text(&["Hello ", "there, ", "friend"]),
        FailingLog::new(Failing::EveryOtherAttempt),
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    assert_eq!(
        reply.delta_texts().concat(),
        "Hello there, friend",
        "{}",
        reply.body
    );
    assert_eq!(reply.events().last().unwrap().0, "done");
}

#[actix_web::test]
async fn a_log_failing_for_a_while_leaves_no_hole_in_the_deltas_then_done() {
    // `start` and the first delta are logged; the second fails all three tries, and the log
    // would take the third again: logging it would leave the second out. The rest of the reply
    // comes before the refused delta is tried again, so `done` carries it.
    let assistant = assistant_streaming_text(&["Hello ", "there, ", "my ", "dear ", "friend"]);
    let reply = call_with_log(
        storing_once("Hello there, my dear friend"),
        assistant,
        FailingLog::new(Failing::Between(2..5)),
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta", "done"], "{}", reply.body);
    assert_eq!(events[0].1["text"], "Hello ");
    assert_eq!(
        events[1].1["assistant_message"]["content"],
        "Hello there, my dear friend"
    );
}

#[actix_web::test]
async fn deltas_a_failing_log_refused_are_logged_whole_once_it_answers_again() {
    // Virtual time, one piece a second: the second piece fails all three tries, and the log
    // answers again before the reply ends.
    tokio::time::pause();
    let pieces = [
        "Hello ", "there, ", "my ", "dear ", "old ", "friend, ", "how ", "are ", "you?",
    ];
    let whole = pieces.concat();
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant
        .expect_reply_stream()
        .times(1)
        .returning(move |_| {
            Ok(stream::iter(pieces)
                .then(|piece| async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(piece.to_owned())
                })
                .boxed())
        });
    let reply = call_with_log(
        storing_once(whole.clone()),
        assistant,
        FailingLog::new(Failing::Between(2..5)),
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    let deltas = reply.delta_texts();
    assert_eq!(deltas.concat(), whole, "{}", reply.body);
    assert!(
        deltas.len() < pieces.len(),
        "the waiting pieces were logged together: {deltas:?}"
    );
    assert_eq!(reply.events().last().unwrap().0, "done");
}

#[actix_web::test]
async fn the_end_of_a_reply_outlasts_a_log_failing_for_many_seconds() {
    // Virtual time: the retries' waits pass as soon as nothing else can run. Ten failures take
    // about 14 s of retrying; a delta's three tries would give up after half a second.
    tokio::time::pause();
    let reply = tokio::time::timeout(
        Duration::from_secs(600),
        call_with_log(
            storing_once("Hello there, friend"),
            assistant_streaming_text(&["Hello ", "there, ", "friend"]),
            FailingLog::new(Failing::FinalEvent(10)),
            v1_stream(ConversationId::DEFAULT, "hi"),
        ),
    )
    .await
    .expect("the stream ends once its final event is logged");
    let events = reply.events();
    assert_eq!(events.last().unwrap().0, "done", "{}", reply.body);
    assert_eq!(
        events.last().unwrap().1["assistant_message"]["content"],
        "Hello there, friend"
    );
}

#[actix_web::test]
async fn once_replies_are_cut_short_the_end_of_a_reply_is_tried_only_briefly() {
    // The server stops while a reply runs and the log refuses everything: the generation must
    // end within the other events' half second of tries, not hold the stop for a minute.
    tokio::time::pause();
    let state = state(
        existing(repository_never_storing()),
        assistant_streaming_text(&["Hello"]),
        FailingLog::new(Failing::FinalEvent(usize::MAX)),
    );
    let generations = state.generations.clone();
    let app = test::init_service(api_actix::app(state)).await;
    let response =
        test::call_service(&app, v1_stream(ConversationId::DEFAULT, "hi").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    generations.cut_short();
    assert!(
        generations.wait_idle(Duration::from_secs(5)).await,
        "the generation still tries its final event"
    );
}

#[actix_web::test]
async fn a_reply_the_log_cannot_follow_streams_without_it_and_never_shows_as_in_progress() {
    let log = FailingLog::new(Failing::Follow);
    let reply = call_with_log(
        storing_once("Hello there, friend"),
        assistant_streaming_text(&["Hello ", "there, ", "friend"]),
        log.clone(),
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    assert!(!reply.body.contains("id: "), "{}", reply.body);
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "delta", "done"], "{}", reply.body);
    assert_eq!(
        log.in_progress(ConversationId::DEFAULT).await.unwrap(),
        None,
        "no other client is offered a reply the log will never see finish"
    );
    // Begun in the log, the generation is ended there too, not left open for its log's life.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while log.finals.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*log.finals.lock().unwrap(), ["error"]);
}

/// A reply of `count` pieces, one numbered word each, and its whole text.
fn numbered_words(count: usize) -> (Vec<String>, String) {
    let pieces: Vec<String> = (0..count).map(|index| format!("word{index} ")).collect();
    let whole = pieces.concat();
    (pieces, whole)
}

#[actix_web::test]
async fn without_a_log_a_client_that_reads_nothing_does_not_hold_its_reply() {
    // Virtual time: the wait for the client passes as soon as nothing else can run.
    tokio::time::pause();
    let (pieces, whole) = numbered_words(200);
    let first_pieces = pieces.clone();
    let (stored_sender, stored_signal) = futures::channel::oneshot::channel();
    let mut stored_sender = Some(stored_sender);
    let mut repository = MockChatRepository::new();
    let expected = whole.clone();
    repository
        .expect_append_exchange_waiting_for_room()
        .withf(move |exchange| exchange.assistant.content == expected)
        .times(1)
        .returning(move |exchange| {
            if let Some(sender) = stored_sender.take() {
                let _ = sender.send(());
            }
            Ok(stored(exchange))
        });
    let state = state(
        existing(repository),
        assistant_streaming(pieces.into_iter().map(Ok).collect()),
        FailingLog::new(Failing::Follow),
    );
    let app = test::init_service(api_actix::app(state)).await;
    let unread =
        test::call_service(&app, v1_stream(ConversationId::DEFAULT, "hi").to_request()).await;

    tokio::time::timeout(Duration::from_secs(600), stored_signal)
        .await
        .expect("the reply is stored while its client reads nothing")
        .unwrap();

    let reply = read(unread).await;
    assert!(!reply.body.contains("id: "), "streamed without the log");
    let events = reply.events();
    let (last, deltas) = events.split_last().unwrap();
    assert!(
        deltas.iter().all(|(name, _)| name == "delta"),
        "{}",
        reply.body
    );
    let texts: Vec<&str> = deltas
        .iter()
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert!(
        !texts.is_empty() && texts.len() < 200,
        "the buffered deltas, not the ones after the client stopped reading: {}",
        texts.len()
    );
    assert_eq!(
        texts,
        first_pieces[..texts.len()],
        "what was buffered arrives whole and in order"
    );
    assert_eq!(last.0, "done");
    assert_eq!(last.1["assistant_message"]["content"], whole.as_str());
}

#[actix_web::test]
async fn a_log_slower_than_a_client_may_be_still_gets_every_delta() {
    // Virtual time: each slow append passes as soon as nothing else can run.
    tokio::time::pause();
    let (pieces, whole) = numbered_words(100);
    let reply = call_with_log(
        storing_once(whole.clone()),
        assistant_streaming(pieces.into_iter().map(Ok).collect()),
        FailingLog::new(Failing::SlowDeltas(Duration::from_secs(11))),
        v1_stream(ConversationId::DEFAULT, "hi"),
    )
    .await;
    let events = reply.events();
    let (last, deltas) = events.split_last().unwrap();
    let texts: Vec<&str> = deltas
        .iter()
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts.concat(),
        whole,
        "the log, not a client, reads the deltas"
    );
    assert_eq!(last.0, "done");
}

#[actix_web::test]
async fn a_stream_that_cannot_start_is_a_plain_json_error() {
    let mut assistant = MockAssistant::new();
    assistant.expect_context_messages().return_const(0usize);
    assistant
        .expect_reply_stream()
        .times(1)
        .returning(|_| Err(AssistantError::Overloaded));
    let reply = call(
        existing(repository_never_storing()),
        assistant,
        v1_stream(ConversationId::DEFAULT, "hello"),
    )
    .await;
    reply.assert_api_error(503, "assistant_overloaded");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

// ---- request validation never reaches the ports ----

#[actix_web::test]
async fn invalid_requests_never_reach_storage_or_the_assistant() {
    let too_long = "x".repeat(101);
    let cases: Vec<(TestRequest, u16, &str)> = vec![
        (v1_send(ConversationId::DEFAULT, "  "), 400, "invalid_text"),
        (
            v1_send(ConversationId::DEFAULT, &too_long),
            413,
            "text_too_long",
        ),
        (
            TestRequest::post()
                .uri("/api/v1/conversations/not-a-uuid/messages")
                .set_json(json!({"content": "hi"})),
            400,
            "invalid_id",
        ),
        (
            TestRequest::post()
                .uri(&format!(
                    "/api/v1/conversations/{}/messages",
                    ConversationId::DEFAULT
                ))
                .insert_header(("content-type", "application/json"))
                .set_payload(format!(r#"{{"content": "{}"}}"#, "x".repeat(5000))),
            413,
            "body_too_large",
        ),
        (
            TestRequest::post()
                .uri(&format!(
                    "/api/v1/conversations/{}/messages",
                    ConversationId::DEFAULT
                ))
                .insert_header(("content-type", "text/plain"))
                .set_payload("hi"),
            415,
            "unsupported_media_type",
        ),
        (
            TestRequest::get().uri("/api/v1/conversations?limit=0"),
            400,
            "invalid_limit",
        ),
        (
            TestRequest::get().uri("/api/v1/conversations?cursor=garbage"),
            400,
            "invalid_cursor",
        ),
        (
            TestRequest::get().uri(&format!(
                "/api/v1/conversations/{}/messages?before=garbage",
                ConversationId::DEFAULT
            )),
            400,
            "invalid_cursor",
        ),
        (
            TestRequest::get().uri(&format!(
                "/api/v1/conversations/{}/messages?limit=201",
                ConversationId::DEFAULT
            )),
            400,
            "invalid_limit",
        ),
        (
            TestRequest::put().uri("/api/v1/conversations"),
            405,
            "method_not_allowed",
        ),
        (TestRequest::get().uri("/api/v1/nothing"), 404, "not_found"),
    ];
    for (request, status, code) in cases {
        // Mocks with no expectations panic on any call.
        let reply = call(MockChatRepository::new(), MockAssistant::new(), request).await;
        reply.assert_api_error(status, code);
    }
}
