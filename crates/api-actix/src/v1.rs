//! The product API: conversations, cursor-paginated messages, streamed replies.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use domain::{
    ChatError, ChosenId, ConversationId, ConversationTitle, Creation, GenerationId, GenerationLog,
    GenerationLogError, Interruption, MessageText, PendingReply, ReplyRequest,
};
use futures::future::{self, Either};
use futures::{FutureExt, StreamExt};
use uuid::Uuid;

use crate::body::{read_json, read_optional_json};
use crate::dto::{
    ConversationDto, ConversationPage, CreateConversationRequest, ErrorResponse, ExchangeDto,
    LimitsResponse, ListConversationsQuery, ListMessagesQuery, MessagePage,
    RenameConversationRequest, ResumeQuery, SendMessageRequest, StopResponse,
};
use crate::errors::ApiError;
use crate::generations::RunningReply;
use crate::sse;
use crate::state::AppState;
use crate::stream_limit::HeldStreamSlot;

fn conversation_id(raw: &str) -> Result<ConversationId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_id())
}

/// An id a client chose for what it creates: a UUID, and not the nil one, which nothing the
/// server makes has (its ids are v7 UUIDs) and every client that chose it would share.
fn chosen_uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    let id: Uuid = raw
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("The {what} must be a UUID.")))?;
    if id.is_nil() {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!("The {what} must be a random UUID, not the nil one."),
        ));
    }
    Ok(id)
}

fn generation_id(raw: &str) -> Result<GenerationId, ApiError> {
    chosen_uuid(raw, "generation id").map(GenerationId::from_uuid)
}

fn generation_id_in_use() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::CONFLICT,
        "generation_id_in_use",
        "This generation id was used already; choose a new id for every message.",
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body(content = Option<CreateConversationRequest>, description = "Optional; so are `title` and `id` in it", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = ConversationDto),
        (status = 200, description = "A conversation with the chosen `id` exists already (an earlier try of this create made it, say): it is returned as stored, whatever `title` this request gave", body = ConversationDto),
        (status = 400, description = "Malformed body, blank title or title over 200 characters, or an `id` that is not a UUID or is the nil one (`invalid_id`)", body = ErrorResponse),
        (status = 409, description = "The chosen `id` was a conversation's that is deleted: ids are not used again (`conversation_deleted`); nothing was created", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = ErrorResponse),
        (status = 408, description = "The body did not arrive in time", body = ErrorResponse),
        (status = 415, description = "Body is not JSON, or is encoded (a Content-Encoding other than identity)", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn create_conversation(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: CreateConversationRequest =
        read_optional_json(&request, payload, &state.settings).await?;
    let chosen_id = body
        .id
        .as_deref()
        .map(|raw| chosen_uuid(raw, "conversation id").map(ConversationId::from_uuid))
        .transpose()?;
    let title = body.title.as_deref();
    let creation = match chosen_id {
        Some(id) => state.service.create_conversation_with_id(id, title).await,
        None => state
            .service
            .create_conversation(title)
            .await
            .map(Creation::Created),
    };
    let (mut response, conversation) = match creation.map_err(ApiError::for_title)? {
        Creation::Created(conversation) => (HttpResponse::Created(), conversation),
        Creation::Existing(conversation) => (HttpResponse::Ok(), conversation),
    };
    Ok(response
        .insert_header((
            header::LOCATION,
            format!("/api/v1/conversations/{}", conversation.id),
        ))
        .json(ConversationDto::from(conversation)))
}

/// The other list's page parameter. Ignored, it would give the first page again, and a client
/// paging with it would loop over that page for ever.
fn misplaced_page_parameter(sent: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("This list is paged with `{expected}`, not `{sent}`."),
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(ListConversationsQuery),
    responses(
        (status = 200, description = "Most recently updated first", body = ConversationPage),
        (status = 400, description = "Bad limit or cursor", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn list_conversations(
    state: web::Data<AppState>,
    query: web::Query<ListConversationsQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.misplaced_before.is_some() {
        return Err(misplaced_page_parameter("before", "cursor"));
    }
    let page = state
        .service
        .list_conversations(query.cursor.as_deref(), query.limit)
        .await?;
    Ok(HttpResponse::Ok().json(ConversationPage::from(page)))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = uuid::Uuid, Path, description = "Conversation id")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDto),
        (status = 400, description = "Malformed id", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn get_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let conversation = state
        .service
        .get_conversation(conversation_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(ConversationDto::from(conversation)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = uuid::Uuid, Path, description = "Conversation id")),
    request_body = RenameConversationRequest,
    responses(
        (status = 200, description = "Renamed", body = ConversationDto),
        (status = 400, description = "Malformed id or body, blank title or title over 200 characters", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = ErrorResponse),
        (status = 408, description = "The body did not arrive in time", body = ErrorResponse),
        (status = 415, description = "Body is not JSON, or is encoded (a Content-Encoding other than identity)", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn rename_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let body: RenameConversationRequest = read_json(&request, payload, &state.settings).await?;
    let conversation = state
        .service
        .rename_conversation(id, &body.title)
        .await
        .map_err(ApiError::for_title)?;
    Ok(HttpResponse::Ok().json(ConversationDto::from(conversation)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = uuid::Uuid, Path, description = "Conversation id")),
    responses(
        (status = 204, description = "Deleted with all its messages; its streamed replies running on this replica stop (waiting for their model too), store nothing, and end with `conversation_not_found`"),
        (status = 400, description = "Malformed id", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn delete_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let deleted = state.service.delete_conversation(id).await;
    // Its replies running here would only be refused by storage once their model was done; also
    // when another replica deleted it first, or this delete is a retry of one whose answer was lost.
    if matches!(deleted, Ok(()) | Err(ChatError::ConversationNotFound)) {
        state.generations.stop_conversation(id);
    }
    deleted?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "Conversation id"), ListMessagesQuery),
    responses(
        (status = 200, description = "A page of messages, oldest first", body = MessagePage),
        (status = 400, description = "Malformed id, bad limit or cursor", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn list_messages(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ListMessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.misplaced_cursor.is_some() {
        return Err(misplaced_page_parameter("cursor", "before"));
    }
    let page = state
        .service
        .list_messages(conversation_id(&id)?, query.before.as_deref(), query.limit)
        .await?;
    Ok(HttpResponse::Ok().json(MessagePage::from(page)))
}

/// Sends a message and returns the stored exchange, or with `Accept: text/event-stream` streams
/// the reply as Server-Sent Events: a `start` event (`{"generation_id", "conversation_id",
/// "content"}`), `delta` events (`{"text": ...}`), then one `done` event (the stored exchange) or
/// one `error` event (`{"message", "code"}`); each carries `id: <generation_id>:<sequence>` for
/// resuming with `GET .../stream`. A client that chose the `generation_id` may stop the reply
/// from the moment it sent the message: stopped before it began, the answer is `409 stopped`
/// and nothing is stored.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "Conversation id")),
    request_body = SendMessageRequest,
    responses(
        (status = 201, description = "The stored exchange", body = ExchangeDto),
        (status = 200, description = "With Accept: text/event-stream: `event: start` (`{\"generation_id\", \"conversation_id\", \"content\"}`), `event: delta` / `data: {\"text\"}` events, then `event: done` with the stored exchange or `event: error` with `{\"message\", \"code\"}`; every event carries `id: <generation_id>:<sequence>`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed id or body, blank content, or a `generation_id` (`invalid_id`: not a UUID, or the nil UUID; `invalid_body`: without `Accept: text/event-stream`)", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 409, description = "The reply was stopped before its model answered, by its chosen `generation_id` or the id a follower's `start` event named, and nothing was stored (`stopped`); or, with a `generation_id`, a reply with that id exists already (`generation_id_in_use`)", body = ErrorResponse),
        (status = 413, description = "Body or content too large", body = ErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = ErrorResponse),
        (status = 408, description = "The body did not arrive in time", body = ErrorResponse),
        (status = 415, description = "Body is not JSON, or is encoded (a Content-Encoding other than identity)", body = ErrorResponse),
        (status = 429, description = "With Accept: text/event-stream, this client already has `limits.max_streams_per_client` streams open (`too_many_streams`); nothing was stored; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
        (status = 502, description = "The assistant failed", body = ErrorResponse),
        (status = 503, description = "Storage or assistant overloaded or unavailable; see Retry-After", body = ErrorResponse),
        (status = 504, description = "The assistant timed out", body = ErrorResponse),
    )
)]
pub(crate) async fn send_message(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let body: SendMessageRequest = read_json(&request, payload, &state.settings).await?;
    let text = state.service.message_text(body.content)?;
    let chosen_id = body
        .generation_id
        .as_deref()
        .map(generation_id)
        .transpose()?;
    if sse::accepts_event_stream(request.headers()) {
        return send_streamed(&state, &request, id, text, chosen_id).await;
    }
    if chosen_id.is_some() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "A generation_id names a streamed reply: send it with Accept: text/event-stream.",
        ));
    }
    let exchange = state.service.send_message(id, text).await?;
    Ok(HttpResponse::Created().json(ExchangeDto::from(exchange)))
}

/// A streamed send: its reply enters [`crate::generations::Generations`] before the model is
/// asked, so that a stop reaches it from the start (a client that chose the id knows it already,
/// others learn it from the log's `start`).
async fn send_streamed(
    state: &AppState,
    request: &HttpRequest,
    id: ConversationId,
    text: MessageText,
    chosen_id: Option<GenerationId>,
) -> Result<HttpResponse, ApiError> {
    if state.generations.is_cut() {
        // It would be cut before its first word, after the provider was asked (and paid).
        return Err(ChatError::CutShort.into());
    }
    let generation_id = chosen_id.unwrap_or_else(GenerationId::generate);
    let running = state
        .generations
        .running_reply(id, generation_id)
        .ok_or_else(generation_id_in_use)?;
    let log = &state.generation_log;
    // Held until the send has ended: it keeps the id this send's between the claim and the
    // log's `start`, and for the whole send when the log could not take the `start`.
    let claim = match chosen_id {
        Some(_) => claim_chosen_id(log, id, generation_id).await?,
        None => None,
    };
    let answer = log_and_stream_reply(state, request, running, text, chosen_id.is_some()).await;
    if let Some(claim) = claim {
        claim.give_up().await;
    }
    answer
}

/// The rest of a streamed send, once its id is its own: its reply is logged before its model is
/// asked, so that others can follow and stop it while it waits, then streamed once the model
/// answers.
async fn log_and_stream_reply(
    state: &AppState,
    request: &HttpRequest,
    running: RunningReply,
    text: MessageText,
    id_chosen_by_client: bool,
) -> Result<HttpResponse, ApiError> {
    let start = sse::start_event(&running, text.as_str().to_owned());
    let reply = state
        .service
        .prepare_reply(running.conversation_id(), text)
        .await?;
    let log = &state.generation_log;
    // Stopped before its message came, it logs nothing: sent again, the message is answered
    // `stopped` again, not taken for a reply that has the id.
    let logged = if running.stop_asked() {
        None
    } else {
        sse::log_start(log, &running, &start).await
    };
    // Another client can stop it once it knows the id: from the log, or having chosen it.
    let stop_log = (logged.is_some() || id_chosen_by_client).then(|| Arc::clone(log));
    match wait_for_model(state, &running, stop_log, reply).await {
        Ok(pending) => {
            let slot = HeldStreamSlot::of(request);
            Ok(sse::stream_reply(
                state, &start, logged, pending, running, slot,
            ))
        }
        Err(error) => {
            match error {
                ChatError::ConversationNotFound => tracing::info!(
                    "streamed reply's conversation deleted before its assistant answered"
                ),
                ChatError::Stopped => {
                    tracing::info!("streamed reply stopped before its assistant answered");
                    // Not in the log, the stop must be there for the same message sent again to
                    // another replica (a logged reply's own end says it was stopped).
                    if logged.is_none() && id_chosen_by_client {
                        let told =
                            log.request_stop(running.conversation_id(), running.generation_id());
                        if !matches!(tokio::time::timeout(CLAIM_PATIENCE, told).await, Ok(Ok(()))) {
                            tracing::debug!(
                                "cannot tell other replicas of a stop before the reply"
                            );
                        }
                    }
                }
                _ => {}
            }
            let error = ApiError::from(error);
            if let Some(logged) = logged {
                logged.fail(&error, &state.generations, running);
            }
            Err(error)
        }
    }
}

/// Asks the model for the reply, which may take long to send its first words. A cut, or a stop
/// by a client that knows the id (here or, through `log`, on another replica), ends the wait as
/// it ends a reply with no text yet; polled first, so that a stop that came before the message
/// ends it before the model is asked.
async fn wait_for_model(
    state: &AppState,
    running: &RunningReply,
    log: Option<Arc<dyn GenerationLog>>,
    reply: ReplyRequest,
) -> Result<PendingReply, ChatError> {
    let interrupted = Box::pin(sse::interruption(&state.generations, running, log));
    let started = Box::pin(reply.start());
    match future::select(interrupted, started).await {
        Either::Right((started, _)) => started,
        Either::Left((Interruption::CutShort, _)) => Err(ChatError::CutShort),
        Either::Left((Interruption::Stopped, _)) => Err(ChatError::Stopped),
        Either::Left((Interruption::ConversationDeleted, _)) => {
            Err(ChatError::ConversationNotFound)
        }
    }
}

/// How long a send waits for the log to claim its chosen id: a log slow to answer must not hold
/// the reply up for long (it goes on without the claim, as a reply goes on without its log).
const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// A generation id chosen by the client must be new (another reply's log would take this one's
/// events as its own), and may have been stopped through another replica before its message came
/// here; claimed, the returned claim holds it until dropped. A log out of reach (or slow) answers
/// neither: the reply goes on without it, as when `begin` fails.
async fn claim_chosen_id(
    log: &Arc<dyn GenerationLog>,
    conversation_id: ConversationId,
    generation_id: GenerationId,
) -> Result<Option<HeldClaim>, ApiError> {
    match tokio::time::timeout(CLAIM_PATIENCE, log.claim(conversation_id, generation_id)).await {
        Ok(Ok(ChosenId::Claimed)) => Ok(Some(HeldClaim {
            log: Some(Arc::clone(log)),
            generation_id,
        })),
        Ok(Ok(ChosenId::Stopped)) => {
            tracing::info!("streamed reply stopped before its message came");
            Err(ChatError::Stopped.into())
        }
        Ok(Ok(ChosenId::Taken)) => {
            let ended_stopped = ended_stopped(log.as_ref(), generation_id);
            match tokio::time::timeout(CLAIM_PATIENCE, ended_stopped).await {
                Ok(true) => Err(ChatError::Stopped.into()),
                Ok(false) | Err(_) => Err(generation_id_in_use()),
            }
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "cannot ask the log about a chosen generation id");
            Ok(None)
        }
        Err(_) => {
            tracing::debug!("the log did not answer in time about a chosen generation id");
            Ok(None)
        }
    }
}

/// Whether the reply logged under this id was stopped before it had any text: the same message
/// sent again (its client lost the answer) is answered `stopped`, as the first send was.
async fn ended_stopped(log: &dyn GenerationLog, generation_id: GenerationId) -> bool {
    let Ok(Some(progress)) = log.state(generation_id).await else {
        return false;
    };
    if !progress.finished || progress.last_sequence == 0 {
        return false;
    }
    let Ok(mut events) = log.follow(generation_id, progress.last_sequence - 1).await else {
        return false;
    };
    let stopped = ApiError::from(ChatError::Stopped);
    matches!(events.next().await, Some(Ok(event))
        if event.name == "error" && sse::error_code(&event.data).as_deref() == Some(stopped.code()))
}

/// A chosen generation id claimed in the log, given up once its send has its answer (a reply
/// logged by then holds the id in the log itself), or, if the send is dropped, when it is.
struct HeldClaim {
    /// Taken when the claim is given up.
    log: Option<Arc<dyn GenerationLog>>,
    generation_id: GenerationId,
}

impl HeldClaim {
    async fn give_up(mut self) {
        if let Some(log) = self.log.take() {
            let released = release_claim(log, self.generation_id);
            if tokio::time::timeout(CLAIM_PATIENCE, released)
                .await
                .is_err()
            {
                tracing::debug!("the log did not answer in time to give a claim up");
            }
        }
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(log) = self.log.take() {
            runtime.spawn(release_claim(log, self.generation_id));
        }
    }
}

async fn release_claim(log: Arc<dyn GenerationLog>, generation_id: GenerationId) {
    if let Err(error) = log.release(generation_id).await {
        tracing::debug!(%error, "giving up the claim of a generation id failed");
    }
}

/// `<generation_id>:<sequence>`, as carried by every event's `id:` line.
fn event_id(raw: &str) -> Result<(GenerationId, u64), ApiError> {
    let invalid = || ApiError::bad_request("invalid_cursor", "The event id is not valid.");
    let (generation, sequence) = raw.trim().split_once(':').ok_or_else(invalid)?;
    Ok((
        generation.parse().map_err(|_| invalid())?,
        sequence.parse().map_err(|_| invalid())?,
    ))
}

fn log_unavailable(error: GenerationLogError) -> ApiError {
    tracing::warn!(%error, "generation log unavailable");
    ApiError::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "stream_log_unavailable",
        "Replies in progress cannot be resumed right now.",
    )
}

/// Resumes a streamed reply: replays the events after the given id (header `Last-Event-ID` or
/// `after`), or the whole reply in progress when no id is given, then follows it live to its end.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/stream",
    tag = "messages",
    params(
        ("id" = uuid::Uuid, Path, description = "Conversation id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received: `<generation_id>:<sequence>`"),
        ResumeQuery,
    ),
    responses(
        (status = 200, description = "The rest of the reply as Server-Sent Events (`start`, `delta`, then `done` or `error`), each with `id: <generation_id>:<sequence>`", content_type = "text/event-stream", body = String),
        (status = 204, description = "No reply in progress, or nothing left to deliver"),
        (status = 400, description = "Malformed conversation id or event id, or an event id past the reply's last event", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 429, description = "This client already has `limits.max_streams_per_client` streams open (`too_many_streams`), counting this one whatever its Accept; see Retry-After", body = ErrorResponse),
        (status = 503, description = "Storage or the generation log unavailable", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn resume_stream(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ResumeQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request("invalid_cursor", "The event id is not valid."))
        })
        .transpose()?
        // An empty id is no id (the SSE specification's clients send none then).
        .filter(|raw| !raw.trim().is_empty())
        .or_else(|| query.after.clone())
        .filter(|raw| !raw.trim().is_empty());
    state.service.get_conversation(id).await?;
    let log = &state.generation_log;
    let (generation_id, after) = match last_event_id {
        Some(raw) => event_id(&raw)?,
        None => match log.in_progress(id).await.map_err(log_unavailable)? {
            Some(generation_id) => (generation_id, 0),
            None => return Ok(HttpResponse::NoContent().finish()),
        },
    };
    match log.state(generation_id).await.map_err(log_unavailable)? {
        // Unknown, expired, or another conversation's reply: nothing of this one to resume.
        None => return Ok(HttpResponse::NoContent().finish()),
        Some(progress) if progress.conversation_id != id => {
            return Ok(HttpResponse::NoContent().finish())
        }
        // Every event is logged before it is sent, so no client can hold a later id; following
        // from one would skip the final event and end the stream without `done` or `error`.
        Some(progress) if after > progress.last_sequence => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "The event id is past the last event of this reply.",
            ))
        }
        Some(progress) if progress.finished && after >= progress.last_sequence => {
            return Ok(HttpResponse::NoContent().finish())
        }
        Some(_) => {}
    }
    match log.follow(generation_id, after).await {
        Ok(events) => Ok(sse::follow_response(
            generation_id,
            events,
            state.settings.stream_keep_alive,
        )),
        Err(GenerationLogError::NotFound) => Ok(HttpResponse::NoContent().finish()),
        Err(error) => Err(log_unavailable(error)),
    }
}

/// How long a stop request waits for its reply to end before it answers `202`.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

fn generation_not_found() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "generation_not_found",
        "No reply of this conversation with this generation id is known.",
    )
}

/// Stops a streamed reply in progress where it got to, as its user asks: the assistant is asked
/// for no more, and the text so far is stored as the reply (with no text yet, nothing is stored).
/// Its stream ends as any reply's does, with `done` (the stored exchange) or `error` (`stopped`).
/// The answer comes once the reply has ended, so a message sent after it is stored after it.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/generations/{generation_id}/stop",
    tag = "messages",
    params(
        ("id" = uuid::Uuid, Path, description = "Conversation id"),
        ("generation_id" = uuid::Uuid, Path, description = "The reply's `generation_id`, from its `start` event"),
    ),
    responses(
        (status = 200, description = "`stopped`: the reply has ended (stopped, or it ended meanwhile); `finished`: it had ended before", body = StopResponse),
        (status = 202, description = "`stopping`: asked to stop, not ended within 5 s (it may be waiting for room to be stored), or the log of a reply running on another replica could not show its end, or another replica's send of this id, not in the log, waits for its model (it is answered `409 stopped`)", body = StopResponse),
        (status = 400, description = "Malformed conversation or generation id", body = ErrorResponse),
        (status = 404, description = "No such conversation (`conversation_not_found`), or no reply of it with this id (`generation_not_found`: unknown, expired, or run without the log and ended). A stop is remembered for a minute: a reply of this conversation that starts with that id meanwhile (its client chose the id, and its message had not arrived) is stopped before it begins", body = ErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = ErrorResponse),
        (status = 503, description = "Storage or the generation log unavailable", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn stop_reply(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, generation) = path.into_inner();
    let id = conversation_id(&id)?;
    let generation_id = generation_id(&generation)?;
    // A reply running here is stopped before anything else is asked: storage that is too busy
    // to answer is when a user most wants a long reply to stop. Not running here, the stop is
    // remembered for one that starts here with this id.
    let ended: futures::future::BoxFuture<'static, bool> =
        match state.generations.stop(id, generation_id) {
            Some(ended) => Box::pin(ended.map(|()| true)),
            None => {
                state.service.get_conversation(id).await?;
                let log = &state.generation_log;
                match log.state(generation_id).await.map_err(log_unavailable)? {
                    Some(progress) if progress.conversation_id == id => {
                        if progress.finished {
                            return Ok(HttpResponse::Ok().json(StopResponse::FINISHED));
                        }
                        // Another replica runs it: the log tells it, and shows its end.
                        log.request_stop(id, generation_id)
                            .await
                            .map_err(log_unavailable)?;
                        match log.follow(generation_id, progress.last_sequence).await {
                            Ok(events) => Box::pin(logs_its_end(events)),
                            Err(GenerationLogError::NotFound) => {
                                return Ok(HttpResponse::Ok().json(StopResponse::FINISHED))
                            }
                            Err(error) => return Err(log_unavailable(error)),
                        }
                    }
                    Some(_) => return Err(generation_not_found()),
                    // Begun nowhere yet: its client may have chosen the id, and its message be
                    // waiting for its model on another replica, or on its way there.
                    None => {
                        log.request_stop(id, generation_id)
                            .await
                            .map_err(log_unavailable)?;
                        return match log.claimant(generation_id).await {
                            Ok(Some(claimed_in)) if claimed_in == id => {
                                Ok(HttpResponse::Accepted().json(StopResponse::STOPPING))
                            }
                            Ok(_) => Err(generation_not_found()),
                            Err(error) => Err(log_unavailable(error)),
                        };
                    }
                }
            }
        };
    Ok(match tokio::time::timeout(STOP_PATIENCE, ended).await {
        Ok(true) => HttpResponse::Ok().json(StopResponse::STOPPED),
        // The log could not show the end (it failed, or the writer stopped keeping the reply
        // alive): the reply may still be on its way to storage.
        Ok(false) | Err(_) => HttpResponse::Accepted().json(StopResponse::STOPPING),
    })
}

/// Whether `events` end with the reply's final event (`done` or `error`); a stream that ends
/// otherwise failed to follow the reply.
async fn logs_its_end(mut events: domain::GenerationEvents) -> bool {
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    matches!(last, Some(Ok(event)) if event.name == "done" || event.name == "error")
}

/// The limits on what a client sends, so that it can hold a message back before the server
/// refuses it (and show how close a text is to the limit).
#[utoipa::path(
    get,
    path = "/api/v1/limits",
    tag = "messages",
    responses((status = 200, description = "The server's limits on texts", body = LimitsResponse))
)]
pub(crate) async fn limits(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(LimitsResponse {
        max_message_chars: state.service.config().max_message_chars,
        max_title_chars: ConversationTitle::MAX_CHARS,
    })
}

#[cfg(test)]
mod tests {
    use domain::{GenerationEvent, GenerationLogError};
    use futures::stream;

    use super::*;

    fn events(names: &[&str]) -> Vec<Result<GenerationEvent, GenerationLogError>> {
        (1..)
            .zip(names)
            .map(|(sequence, name)| {
                Ok(GenerationEvent {
                    sequence,
                    name: (*name).to_owned(),
                    data: "{}".to_owned(),
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn a_followed_reply_has_ended_only_when_its_final_event_came() {
        for (followed, ended) in [
            (events(&["delta", "done"]), true),
            (events(&["delta", "error"]), true),
            (events(&["delta"]), false),
            (Vec::new(), false),
            (
                events(&["delta"])
                    .into_iter()
                    .chain([Err(GenerationLogError::Unavailable("lost".to_owned()))])
                    .collect(),
                false,
            ),
        ] {
            let described = format!("{followed:?}");
            let followed = stream::iter(followed).boxed();
            assert_eq!(logs_its_end(followed).await, ended, "{described}");
        }
    }
}
